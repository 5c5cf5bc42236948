"""Errors of the wire protocol, rooted at :class:`fleet.errors.FleetError`.

::

    FleetError
     └── ProtocolError            a message cannot be used (``reason`` says why, ``topic`` where)
          ├── TopicError          a topic is not one of ours, or names a bad van id
          ├── DecodeError         oversized, not JSON, wrong version, or breaks the schema
          └── SignatureError      a command is unsigned, tampered, replayed, stale or misaddressed

Every error carries a short machine-readable ``reason`` (counted by the controller and the
bridge, reported in a van's state) and a message that names the topic and what was expected.
"""

from __future__ import annotations

from fleet.errors import FleetError


class ProtocolError(FleetError):
    """A message or topic breaks the protocol."""

    def __init__(self, reason: str, detail: str, *, topic: str = "") -> None:
        self.reason = reason
        self.detail = detail
        self.topic = topic
        where = f"{topic}: " if topic else ""
        super().__init__(f"{where}{reason}: {detail}")


class TopicError(ProtocolError):
    """A topic is not ``fleet/v1/...`` as documented, or its van id is malformed."""


class DecodeError(ProtocolError):
    """A payload is too large, not JSON, of another protocol version, or schema-invalid."""


class SignatureError(ProtocolError):
    """A command failed verification; ``reason`` is a :class:`~fleet.protocol.signing.Rejection`.

    ``message_id`` is the refused command's ``header.message_id``: a van reports it as a
    ``message_id`` reference so that two refusals of one reason can be told apart.
    """

    def __init__(
        self, reason: str, detail: str, *, topic: str = "", message_id: int | None = None
    ) -> None:
        super().__init__(reason, detail, topic=topic)
        self.message_id = message_id
