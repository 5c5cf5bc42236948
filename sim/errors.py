"""The simulator's errors, rooted at :class:`fleet.errors.FleetError`.

::

    FleetError
     └── SimError              the simulator cannot go on
          ├── ReportError      the report cannot be written (directory named)
          └── WorldError       a part of the simulated world broke a rule (van, time named)

Scenario mistakes are :class:`fleet.errors.ConfigError` (file, table, key named).
"""

from __future__ import annotations

from fleet.errors import FleetError


class SimError(FleetError):
    """The simulation cannot go on."""


class ReportError(SimError):
    """The report cannot be written."""


class WorldError(SimError):
    """A part of the simulated world (a van, the controller, a link) broke a rule."""
