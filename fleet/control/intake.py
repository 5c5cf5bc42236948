"""Dispatcher requests as they arrive: bounded, decoded off the event loop, never fatal.

The controller's event loop relays emergency stops; a request must not hold it. A payload
over :data:`~fleet.identifiers.MAX_REQUEST_BYTES` is refused before a byte of it is parsed;
one over :data:`INLINE_BYTES` (a dispatch with its plan, an orders file) is decoded in a
worker thread. Whatever goes wrong becomes a :class:`~fleet.protocol.DecodeError` the
service answers with an error reply — it never escapes as another exception.
"""

from __future__ import annotations

import asyncio
import logging
import re

from fleet.identifiers import MAX_REQUEST_BYTES
from fleet.protocol import DecodeError, decode
from fleet.protocol.control_api import Request

log = logging.getLogger(__name__)

INLINE_BYTES = 64 * 1024  # status, pause, e-stop, events: decoded at once
_FIELD = re.compile(rb'"(client_id|request_id)"\s*:\s*"([A-Za-z0-9_.:-]{1,64})"')


async def decode_request(payload: bytes, topic: str) -> Request:
    """``payload`` → a :class:`Request`; any failure is a :class:`DecodeError`."""
    if len(payload) > MAX_REQUEST_BYTES:
        raise DecodeError(
            "oversized",
            f"Request payload of {len(payload):,} bytes exceeds the limit of "
            f"{MAX_REQUEST_BYTES:,} bytes (docs/limits.md)",
            topic=topic,
        )
    try:
        if len(payload) <= INLINE_BYTES:
            return decode(Request, payload, topic=topic)
        return await asyncio.to_thread(decode, Request, payload, topic=topic)
    except DecodeError:
        raise
    except (RecursionError, MemoryError, ValueError, OverflowError) as exc:
        raise DecodeError(
            "schema", f"not a valid Request: {type(exc).__name__}", topic=topic
        ) from exc


def who_asked(payload: bytes) -> tuple[str, str] | None:
    """``(client_id, request_id)`` of a request that cannot be decoded, if it names both:
    found by a bounded search, never by parsing what failed to parse."""
    head = payload[:4096] + payload[-4096:] if len(payload) > 8192 else payload
    found = dict((k.decode(), v.decode()) for k, v in _FIELD.findall(head))
    if "client_id" in found and "request_id" in found:
        return found["client_id"], found["request_id"]
    return None
