"""Errors of :mod:`fleet.security`, rooted at :class:`fleet.errors.FleetError`.

::

    FleetError
     └── CredentialsError   credentials cannot be generated or written (the path is named)
"""

from __future__ import annotations

from fleet.errors import FleetError


class CredentialsError(FleetError):
    """Credentials cannot be generated or written; the message names the file or option."""
