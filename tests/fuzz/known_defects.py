"""Crashes the fuzzing found in code this suite does not own, reported to its owners.

Each entry names the module at fault, what breaks, and how it is recognised. The fuzz
targets count an input that hits a known defect as ``known:<id>`` (the benchmark reports
them as crashes, one line each) and keep looking for new ones; ``test_known_defects.py``
reproduces every entry as a strict ``xfail``, so the day a defect is fixed that test passes,
strict xfail turns it red, and the entry is deleted here.
"""

from __future__ import annotations

import errno
import re
from collections.abc import Callable
from dataclasses import dataclass

from pydantic import ValidationError


@dataclass(frozen=True)
class KnownDefect:
    id: str
    owner: str  # the file to fix
    summary: str
    matches: Callable[[BaseException], bool]


def _validation_of(models: set[str], *fields: str) -> Callable[[BaseException], bool]:
    def match(exc: BaseException) -> bool:
        if not isinstance(exc, ValidationError) or exc.title not in models:
            return False
        locs = {".".join(str(p) for p in e["loc"]) for e in exc.errors(include_url=False)}
        return bool(locs) and locs <= set(fields)

    return match


def _message(kind: type[BaseException], pattern: str) -> Callable[[BaseException], bool]:
    regex = re.compile(pattern)
    return lambda exc: isinstance(exc, kind) and regex.search(str(exc)) is not None


def _errno(code: int) -> Callable[[BaseException], bool]:
    return lambda exc: isinstance(exc, OSError) and exc.errno == code


def _any(*matchers: Callable[[BaseException], bool]) -> Callable[[BaseException], bool]:
    return lambda exc: any(m(exc) for m in matchers)


KNOWN_DEFECTS: tuple[KnownDefect, ...] = (
    KnownDefect(
        "config-path-too-long",
        "fleet/model/site.py (load_site: Path.is_file on the configured files)",
        "a site config naming a file whose name is longer than the file system allows "
        '(osm_file = "xxx…" × 300) raises OSError [Errno 36] from Path.is_file(): '
        "`fleet plan`/`fleet site show` die with a traceback instead of naming the key",
        _errno(errno.ENAMETOOLONG),
    ),
    KnownDefect(
        "protocol-plan-nonfinite",
        "fleet/protocol/control_api.py (DispatchBody.plan: dict[str, JsonValue])",
        "the plan inside a dispatch Request accepts NaN and 1e999 (infinity), although every "
        "model is documented to refuse non-finite numbers; re-encoding turns infinity into "
        "null. The controller's plan reader refuses the plan afterwards with a clear error, "
        "so nothing crashes downstream",
        _message(AssertionError, r"^Request does not survive encode"),
    ),
    KnownDefect(
        "bridge-telemetry-out-of-range",
        "firmware_bridge/bridge/core.py (build_state)",
        "a TELEMETRY frame with speed_cmps > 10000 or range_m > 10,000,000 (valid u16/u32 on "
        "the wire) makes State(...) raise pydantic.ValidationError inside the bridge: one odd "
        "reading from the VCU takes the bridge down instead of being reported",
        _validation_of({"State", "Battery"}, "speed_mps", "remaining_range_m"),
    ),
    KnownDefect(
        "bridge-state-smaller-than-order",
        "fleet/protocol/messages.py (State/Load limits) or firmware_bridge/bridge/core.py",
        "an Order may load 16 x 1000 parcels per node and carry 2000 x 16 actions, but a State "
        "holds at most 2000 parcel ids on board and 4000 action states: a valid, signed order "
        "above those makes the bridge's State(...) raise pydantic.ValidationError at its first "
        "stop",
        _validation_of({"State", "Load"}, "parcel_ids", "action_states"),
    ),
    KnownDefect(
        "orders-time-outside-calendar",
        "fleet/planning/orders.py (parse_local_time)",
        "an orders CSV time such as 0001-01-01T00:00+12:00 or 9999-12-31T23:59-12:00 raises "
        "OverflowError from astimezone(), and a file dated 9999-12-31 raises ValueError from "
        "date.fromordinal(day + 1): `fleet plan` dies with a traceback instead of a bad row",
        _any(
            _message(OverflowError, r"date value out of range"),
            _message(ValueError, r"year 10000 is out of range"),
        ),
    ),
    KnownDefect(
        "protocol-impossible-timestamp",
        "fleet/protocol/messages.py (Timestamp type) and fleet/protocol/signing.py (verify)",
        "the Timestamp pattern accepts impossible dates (2026-11-31T10:00:00Z, month 13, hour "
        "99); decode() lets them through, and CommandVerifier.verify() then raises ValueError "
        "instead of SignatureError for a correctly signed command",
        _any(
            _message(ValueError, r"is not RFC 3339"),
            _message(AssertionError, r"accepted a timestamp nobody can read"),
        ),
    ),
)


def known_defect(exc: BaseException) -> KnownDefect | None:
    for defect in KNOWN_DEFECTS:
        if defect.matches(exc):
            return defect
    return None
