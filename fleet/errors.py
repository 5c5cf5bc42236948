"""The exception tree shared by every ``fleet`` package.

::

    FleetError
     ├── ConfigError          a TOML/GeoJSON config is wrong (file, table, key named)
     ├── InputError           a user-supplied data file (orders CSV, plan JSON) is wrong
     ├── RoadError            the road network cannot answer
     │    ├── SnapError       a point is outside the operating area or too far from a road
     │    └── UnreachableError  no path between two road points
     ├── InfeasibleError      the planner cannot build a valid model or plan
     ├── VerificationError    a plan breaks a limit (carries every violation)
     ├── StoreError           persistence failed
     └── ControlError         the controller refused a command

Adapters translate library errors into these with ``raise ... from exc``. Every message names
where the problem is (file and line, table and key, topic, point) and what was expected.
The wire protocol packages (``fleet.protocol``, ``firmware_bridge``) keep their own small
trees rooted at :class:`FleetError` too, so a caller can catch everything with one clause.
"""

from __future__ import annotations

from collections.abc import Sequence


class FleetError(Exception):
    """Root of every error this project raises on purpose."""


class ConfigError(FleetError):
    """A configuration file is missing, malformed, or holds an impossible value."""


class InputError(FleetError):
    """A data file given by the user (orders CSV, plan JSON) cannot be used."""


class RoadError(FleetError):
    """The road network cannot answer a query."""


class SnapError(RoadError):
    """A point cannot be matched to a road the van may drive."""


class UnreachableError(RoadError):
    """There is no drivable path between two road points."""


class InfeasibleError(FleetError):
    """No valid plan can be built from the given inputs."""


class VerificationError(FleetError):
    """A plan breaks one or more limits; ``violations`` holds one line each."""

    def __init__(self, violations: Sequence[str]) -> None:
        self.violations: tuple[str, ...] = tuple(violations)
        head = f"plan breaks {len(self.violations)} rule(s)"
        super().__init__(head + (":\n  " + "\n  ".join(self.violations) if violations else ""))


class StoreError(FleetError):
    """The store cannot read or write."""


class ControlError(FleetError):
    """The controller refused or could not carry out a command."""
