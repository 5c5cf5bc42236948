"""The one rule every identifier obeys, and the bounds on what enters (``docs/limits.md``).

An **identifier** — parcel, van, warehouse, station, order, plan, client — is 1 to 64
characters from ``A-Z a-z 0-9 _ - .``, not starting with ``.``::

    ^[A-Za-z0-9_-][A-Za-z0-9_.-]{0,63}$

So an id is safe everywhere it goes: in an MQTT topic level (no ``/``, ``+``, ``#``), in a
broker user name, ACL and password file (no ``:``, no space), as a file or directory name
(no ``/``, never ``.`` or ``..``), in a CSV cell and a terminal (no control character, no
quote). A warehouse or station id is at most :data:`MAX_DEPOT_ID_CHARS` characters so that
the vans named after it (``{depot_id}-NN``) obey the rule too.

This module is the only copy of the rule: the readers (orders CSV, plan.json, site TOML),
the CLI, the control API and the console check ids with :func:`id_problem` or
:func:`check_id`, and the protocol's van-id pattern is :data:`ID_PATTERN`. It imports only
the standard library, so every layer (and the van's bridge) may use it.
"""

from __future__ import annotations

import re

from fleet.errors import InputError

ID_PATTERN = r"^[A-Za-z0-9_-][A-Za-z0-9_.-]{0,63}$"
MAX_ID_CHARS = 64
MAX_DEPOT_ID_CHARS = 58  # + "-NNNNN" (up to 10,000 vans a depot) fits MAX_ID_CHARS
ID_RULE = "1-64 characters of A-Z a-z 0-9 _ - . not starting with '.', docs/limits.md"
_ID_RE = re.compile(ID_PATTERN)
_CHAR_RE = re.compile(r"[A-Za-z0-9_.-]")

# -- bounds on inputs, checked before parsing (docs/limits.md) -------------------------------
MIB = 1024 * 1024
MAX_ORDERS_BYTES = 4 * MIB  # an orders CSV file (or the one a request carries)
MAX_ORDERS_ROWS = 20_000  # parcel rows in one orders CSV (= parcels per day)
MAX_PLAN_BYTES = 48 * MIB  # a plan.json file
MAX_JSON_DEPTH = 32  # nesting of arrays and objects in plan.json and in every request
MAX_REQUEST_BYTES = 16 * MIB  # one control-API request (a dispatch carries plan + orders)
MAX_CONFIG_BYTES = 1 * MIB  # a TOML config, login or key file
MAX_NODE_ID = 2**63 - 1  # an OpenStreetMap node id (a signed 64-bit integer)
MAX_SERVICE_S = 86_400.0  # the time at one door
MAX_WATCH_INTERVAL_S = 86_400.0
MAX_CLOCK_AHEAD_S = 300.0  # a van's state stamped later than this after the controller's now
MAX_CLOCK_BEHIND_S = 86_400.0  # ... or earlier than this before it: refused, clock_skew
MIN_WATCH_INTERVAL_S = 0.1


def id_problem(value: object) -> str | None:
    """What is wrong with ``value`` as an identifier, or ``None`` if it obeys the rule."""
    if not isinstance(value, str):
        return f"expected a string identifier, got {type(value).__name__}"
    if _ID_RE.fullmatch(value):
        return None
    shown = _shown(value)
    if not value:
        return "empty (an identifier is " + ID_RULE + ")"
    if len(value) > MAX_ID_CHARS:
        return f"{shown} has {len(value)} characters (an identifier is {ID_RULE})"
    bad = next((c for c in value if not _CHAR_RE.fullmatch(c)), None)
    if bad is not None:
        return f"{shown} holds {_char(bad)} (an identifier is {ID_RULE})"
    return f"{shown} starts with '.' (an identifier is {ID_RULE})"


def depot_id_problem(value: object) -> str | None:
    """Like :func:`id_problem`, for a warehouse or station id (it names vans)."""
    problem = id_problem(value)
    if problem is None and isinstance(value, str) and len(value) > MAX_DEPOT_ID_CHARS:
        return (
            f"{_shown(value)} has {len(value)} characters (a depot id has at most "
            f"{MAX_DEPOT_ID_CHARS}, so that its vans' ids '<id>-NN' fit {MAX_ID_CHARS})"
        )
    return problem


def is_id(value: object) -> bool:
    return id_problem(value) is None


def check_id(value: str, field: str, where: str = "") -> str:
    """Return ``value`` if it obeys the rule, else raise :class:`InputError` naming the id,
    the field and where it came from (``where``: a file and line, a request, an argument)."""
    problem = id_problem(value)
    if problem is not None:
        raise InputError(f"{where + ': ' if where else ''}{field}: {problem}")
    return value


def _shown(value: str) -> str:
    """The id as it can be printed safely on one line (at most ~70 characters)."""
    text = ascii(value[:60])
    return text + ("…" if len(value) > 60 else "")


def _char(c: str) -> str:
    if c.isprintable() and c != " ":
        return f"{c!r} (U+{ord(c):04X})"
    return f"U+{ord(c):04X}"


_JSON_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)
_JSON_BRACKET = re.compile(rb"[\[\]{}]")


def json_depth(document: bytes | str) -> int:
    """The deepest nesting of arrays and objects in a JSON text, without parsing it.

    Strings are skipped (a bracket inside one does not count); the text need not be valid
    JSON. Linear in the text, with no recursion: safe on 100,000 nested ``[``.
    """
    data = document.encode("utf-8", "surrogatepass") if isinstance(document, str) else document
    depth = deepest = 0
    for m in _JSON_BRACKET.finditer(_JSON_STRING.sub(b"", data)):
        if m.group() in (b"[", b"{"):
            depth += 1
            deepest = max(deepest, depth)
        else:
            depth -= 1
    return deepest


def json_bounds_problem(document: bytes | str, max_bytes: int) -> str | None:
    """Size and nesting of a JSON text against its bounds, checked before parsing."""
    data = document.encode("utf-8", "surrogatepass") if isinstance(document, str) else document
    size = len(data)
    if size > max_bytes:
        return f"{size:,} bytes exceed the limit of {max_bytes:,} bytes (docs/limits.md)"
    depth = json_depth(data)
    if depth > MAX_JSON_DEPTH:
        return f"nested {depth} deep; the limit is {MAX_JSON_DEPTH} (docs/limits.md)"
    return None
