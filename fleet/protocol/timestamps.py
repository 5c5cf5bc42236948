"""UTC timestamps on the wire: RFC 3339, milliseconds, ``Z`` (``2026-11-23T18:13:34.120Z``).

Pure conversion only; the time itself always comes from a :class:`fleet.protocol.clock.Clock`.
"""

from __future__ import annotations

from datetime import UTC, datetime

TIMESTAMP_PATTERN = r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,6})?Z$"


def format_timestamp(epoch_s: float) -> str:
    """Epoch seconds (UTC) → ``YYYY-MM-DDTHH:MM:SS.mmmZ``."""
    moment = datetime.fromtimestamp(round(epoch_s, 3), tz=UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def parse_timestamp(text: str) -> float:
    """A wire timestamp → epoch seconds; :class:`ValueError` names the text if it is not one."""
    if not text.endswith("Z"):
        raise ValueError(f"timestamp {text!r} must be UTC and end with 'Z'")
    try:
        moment = datetime.fromisoformat(text[:-1]).replace(tzinfo=UTC)
    except ValueError as exc:
        raise ValueError(f"timestamp {text!r} is not RFC 3339 (YYYY-MM-DDTHH:MM:SS.mmmZ)") from exc
    return moment.timestamp()
