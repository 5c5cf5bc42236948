"""Bytes ⇄ messages, with a size limit per message type and one clear error per failure.

``decode`` never lets a library exception out: an oversized payload, bytes that are not JSON,
another protocol version, or a schema violation each become a :class:`DecodeError` whose
``reason`` is one of ``oversized``, ``malformed_json``, ``unsupported_version``, ``schema``
and whose message names the topic and the offending fields.
"""

from __future__ import annotations

from typing import TypeVar

from pydantic import ValidationError

from fleet.identifiers import MAX_REQUEST_BYTES
from fleet.protocol.control_api import Event, Reply, Request
from fleet.protocol.errors import DecodeError
from fleet.protocol.messages import (
    PROTOCOL_MAJOR,
    Connection,
    ControllerConnection,
    Factsheet,
    InstantActions,
    Order,
    State,
    Strict,
)
from fleet.protocol.topics import VanTopic

M = TypeVar("M", bound=Strict)

KIB = 1024
# Largest payload accepted per message type (docs/protocol.md, "Limits").
MAX_PAYLOAD_BYTES: dict[type[Strict], int] = {
    Order: 1024 * KIB,
    InstantActions: 8 * KIB,
    State: 256 * KIB,
    Connection: 1 * KIB,
    ControllerConnection: 1 * KIB,
    Factsheet: 16 * KIB,
    Request: MAX_REQUEST_BYTES,  # a dispatch carries a whole plan and its orders file
    Reply: 32 * 1024 * KIB,
    Event: 16 * KIB,
}
DEFAULT_MAX_PAYLOAD_BYTES = 64 * KIB

VAN_MODELS: dict[VanTopic, type[Strict]] = {
    VanTopic.ORDER: Order,
    VanTopic.INSTANT: InstantActions,
    VanTopic.STATE: State,
    VanTopic.CONNECTION: Connection,
    VanTopic.FACTSHEET: Factsheet,
}

_MAX_LISTED_ERRORS = 3


def encode(message: Strict) -> bytes:
    """A message → its JSON bytes (UTF-8, no whitespace)."""
    return message.model_dump_json().encode("utf-8")


def max_payload_bytes(model: type[Strict]) -> int:
    return MAX_PAYLOAD_BYTES.get(model, DEFAULT_MAX_PAYLOAD_BYTES)


def decode(
    model: type[M], payload: bytes | bytearray | str, *, topic: str = "", max_bytes: int = 0
) -> M:
    """Parse and validate ``payload`` as ``model``; any failure is a :class:`DecodeError`.

    ``max_bytes`` overrides the type's limit from :data:`MAX_PAYLOAD_BYTES`.
    """
    limit = max_bytes or max_payload_bytes(model)
    size = len(payload.encode("utf-8")) if isinstance(payload, str) else len(payload)
    if size > limit:
        raise DecodeError(
            "oversized",
            f"{model.__name__} payload of {size} bytes exceeds the limit of {limit} bytes",
            topic=topic,
        )
    try:
        return model.model_validate_json(payload)
    except ValidationError as exc:
        raise _decode_error(model, exc, topic) from exc


def _decode_error(model: type[Strict], exc: ValidationError, topic: str) -> DecodeError:
    errors = exc.errors(include_url=False, include_input=False)
    if any(e["type"] == "json_invalid" for e in errors):
        detail = next(e["msg"] for e in errors if e["type"] == "json_invalid")
        return DecodeError("malformed_json", f"not a JSON document ({detail})", topic=topic)
    if any(tuple(e["loc"]) == ("header", "version") for e in errors):
        return DecodeError(
            "unsupported_version",
            f"header.version must be {PROTOCOL_MAJOR}.x (this end speaks protocol "
            f"{PROTOCOL_MAJOR}); see docs/protocol.md",
            topic=topic,
        )
    listed = [
        f"{'.'.join(str(p) for p in e['loc']) or '(message)'}: {e['msg']}"
        for e in errors[:_MAX_LISTED_ERRORS]
    ]
    more = len(errors) - len(listed)
    return DecodeError(
        "schema",
        f"not a valid {model.__name__}: "
        + "; ".join(listed)
        + (f" (and {more} more)" if more > 0 else ""),
        topic=topic,
    )
