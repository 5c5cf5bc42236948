"""The firmware bridge's own small error tree, rooted at :class:`fleet.errors.FleetError`.

::

    FleetError
     └── BridgeError            anything the bridge raises on purpose
          ├── WireError         a frame or payload cannot be encoded or decoded
          ├── LinkError         the serial link cannot deliver (port gone, retries spent)
          │    └── PortError    a serial URL cannot be opened or read
          ├── CommandError      an MQTT command is refused (signature, addressing, content)
          └── SpoolError        the store-and-forward spool cannot read or write

Library errors (pyserial, OSError) are translated at the boundary with ``raise ... from
exc``; every message names the port, topic, field or file concerned. The broker's side
raises :class:`fleet.mqtt.BrokerError` (the shared MQTT adapter), and a bad login file or
broker URL :class:`fleet.errors.ConfigError`.
"""

from __future__ import annotations

from fleet.errors import FleetError


class BridgeError(FleetError):
    """Root of every error the firmware bridge raises on purpose."""


class WireError(BridgeError):
    """A frame or a payload cannot be encoded or decoded."""


class LinkError(BridgeError):
    """The serial link cannot deliver a frame."""


class PortError(LinkError):
    """A serial port (pyserial URL, pseudo-terminal, socket) cannot be opened, read or written."""


class CommandError(BridgeError):
    """An MQTT command was refused: unsigned, tampered, replayed, stale, misaddressed or bad."""


class SpoolError(BridgeError):
    """The on-disk store-and-forward spool cannot be read or written."""
