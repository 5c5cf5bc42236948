"""The MQTT adapter's errors, rooted at :class:`fleet.errors.FleetError`::

    FleetError
     ├── ConfigError             a broker URL or login file is wrong (file, table, key named)
     └── BrokerError             the broker cannot be reached, refused us or dropped us
          └── SubscriptionRefused   the broker's ACL does not let this login read a topic

paho's errors (``OSError``, ``ssl.SSLError``, refusal reason codes) become these at the
boundary, raised ``from`` the cause.
"""

from __future__ import annotations

from fleet.errors import FleetError


class BrokerError(FleetError):
    """The broker cannot be reached, refused us, did not answer in time, or dropped us."""


class SubscriptionRefused(BrokerError):
    """The broker's ACL does not let this login read a topic."""
