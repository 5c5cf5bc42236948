"""Signed commands: HMAC-SHA256 over canonical bytes, with a per-van key.

Why HMAC-SHA256 rather than Ed25519: the controller must hold every van's key anyway (it signs
every command), both ends are ours, the standard library has it (a van installs nothing more),
and it costs microseconds on the smallest van computer. What a stolen key can do is bounded by
giving each van its own key, derived from the controller's master secret
(:func:`derive_van_key`): a key taken from one van forges commands for that van only.

What is signed (``canonical_bytes``)::

    b"fleet/v1/" + kind + b"\\n" + canonical JSON of the message without its "signature"

where kind is ``order`` or ``instant`` (a signed order cannot be replayed as another kind),
and canonical JSON is RFC 8785, the JSON Canonicalization Scheme (JCS): keys sorted by their
UTF-16 code units at every level, no whitespace, UTF-8, strings escaped only where JSON must,
numbers written as ECMAScript writes an IEEE double (``25.0`` → ``25``, ``1e-7`` → ``1e-7``).
Any language can reproduce it from the parsed message: in JavaScript it is
``JSON.stringify`` of the object with its keys sorted (our keys are ASCII). The header inside
it carries the anti-replay counter (``header.message_id``, strictly increasing per van and
topic) and the timestamp.

A van checks every command with a :class:`CommandVerifier`; each failure is a
:class:`SignatureError` whose ``reason`` is a :class:`Rejection`, reported in the van's state.
A command that only makes the van safer (every action in :data:`SAFER_ACTIONS`: emergency
stop, pause, cancel order) is refused only for ``unsigned``, ``wrong_van`` or
``bad_signature``: its age and its counter never stop it (``docs/protocol.md`` section 9).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import TypeVar

import rfc8785

from fleet.protocol.errors import SignatureError
from fleet.protocol.messages import InstantActions, InstantActionType, Order, Signature
from fleet.protocol.timestamps import parse_timestamp
from fleet.protocol.topics import check_van_id

CommandT = TypeVar("CommandT", Order, InstantActions)
Command = Order | InstantActions

MIN_KEY_BYTES = 32
DEFAULT_MAX_AGE_S = 60.0  # a command older than this is stale
DEFAULT_MAX_AHEAD_S = 10.0  # a command stamped this far in the future is refused too


class Rejection(StrEnum):
    """Why a command was refused."""

    UNSIGNED = "unsigned"
    BAD_SIGNATURE = "bad_signature"  # tampered, or signed with a key this van does not hold
    REPLAYED = "replayed"  # message_id not above the last accepted one on this topic
    STALE = "stale"  # timestamp too old or too far ahead
    WRONG_VAN = "wrong_van"  # addressed to another van


@dataclass(frozen=True, slots=True)
class SigningKey:
    key_id: str
    secret: bytes

    def __post_init__(self) -> None:
        if len(self.secret) < MIN_KEY_BYTES:
            raise ValueError(
                f"signing key {self.key_id!r} has {len(self.secret)} bytes; "
                f"at least {MIN_KEY_BYTES} are needed"
            )

    def __repr__(self) -> str:  # never print a secret
        return f"SigningKey(key_id={self.key_id!r}, secret=<{len(self.secret)} bytes>)"


def derive_van_key(master_secret: bytes, van_id: str, *, generation: int = 1) -> SigningKey:
    """The van's own key: HMAC-SHA256(master, "fleet/v1 van key" NUL van_id NUL generation).

    Raising ``generation`` rotates one van's key without touching the others.
    """
    check_van_id(van_id)
    if len(master_secret) < MIN_KEY_BYTES:
        raise ValueError(f"the master secret must have at least {MIN_KEY_BYTES} bytes")
    info = b"fleet/v1 van key\x00" + van_id.encode("ascii") + b"\x00" + str(generation).encode()
    return SigningKey(
        key_id=f"{van_id}.k{generation}",
        secret=hmac.new(master_secret, info, hashlib.sha256).digest(),
    )


MAX_SAFE_INTEGER = 2**53 - 1
_POSITIONAL_FROM = 1e-4  # below this Python's repr turns to exponents, ECMAScript only below 1e-6


class _NeedsFullJcs(Exception):
    """A value whose RFC 8785 text Python's json module does not write (rare: see below)."""


def _prepared(value: object) -> object:
    """``value`` with every float that json would write differently from RFC 8785 replaced by
    the int that writes the same text. Raises :class:`_NeedsFullJcs` for what remains: a
    non-zero float below 1e-4 in magnitude, an integral float beyond 2⁵³, a non-ASCII key."""
    if isinstance(value, dict):
        out: dict[str, object] = {}
        for key, item in value.items():
            if not isinstance(key, str) or not key.isascii():
                raise _NeedsFullJcs
            out[key] = _prepared(item)
        return out
    if isinstance(value, list | tuple):
        return [_prepared(item) for item in value]
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"not canonicalisable as RFC 8785 JSON: {value} is not a JSON number")
        if value.is_integer():
            if abs(value) > MAX_SAFE_INTEGER:
                raise _NeedsFullJcs
            return int(value)  # 25.0 → 25, -0.0 → 0
        if abs(value) < _POSITIONAL_FROM:
            raise _NeedsFullJcs
        return value  # shortest round trip, positional: the same digits in both languages
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) > MAX_SAFE_INTEGER:
        raise ValueError(
            f"not canonicalisable as RFC 8785 JSON: {value} exceeds safe integer domain"
        )
    return value


def canonical_json(value: object) -> bytes:
    """RFC 8785 (JCS) bytes of a JSON value (dicts, lists, str, int, float, bool, None).

    A value JCS cannot represent exactly — NaN, an infinity, an integer beyond ±(2⁵³ − 1), a
    string that is not valid Unicode — is a :class:`ValueError` naming it.

    Python's C json encoder writes RFC 8785 text once floats are prepared (same escaping with
    ``ensure_ascii=False``, same key order for ASCII keys, same shortest round-trip digits);
    it is five times faster than a pure-Python canonicaliser, which matters for an order of
    2000 stops signed on the controller's event loop. The ``rfc8785`` package writes the rare
    values it cannot (and a test holds the two to the same bytes for any value).
    """
    try:
        prepared = _prepared(value)
    except _NeedsFullJcs:
        try:
            return rfc8785.dumps(value)  # type: ignore[arg-type]
        except rfc8785.CanonicalizationError as exc:
            raise ValueError(f"not canonicalisable as RFC 8785 JSON: {exc}") from exc
    try:
        text = json.dumps(
            prepared, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
        )
        return text.encode("utf-8")
    except (TypeError, UnicodeEncodeError) as exc:
        raise ValueError(f"not canonicalisable as RFC 8785 JSON: {exc}") from exc


def canonical_bytes(message: Command) -> bytes:
    """The bytes a command's MAC covers (see the module docstring)."""
    kind = b"order" if isinstance(message, Order) else b"instant"
    body = message.model_dump(mode="json", exclude={"signature"})
    return b"fleet/v1/" + kind + b"\n" + canonical_json(body)


def compute_mac(message: Command, key: SigningKey) -> str:
    return hmac.new(key.secret, canonical_bytes(message), hashlib.sha256).hexdigest()


def sign(message: CommandT, key: SigningKey) -> CommandT:
    """A copy of ``message`` carrying its signature (any old signature is replaced)."""
    signature = Signature(key_id=key.key_id, mac=compute_mac(message, key))
    return message.model_copy(update={"signature": signature})


def command_kind(message: Command) -> str:
    return "order" if isinstance(message, Order) else "instant"


class CommandVerifier:
    """The van's side: accepts only commands signed for this van, fresh, and not seen before.

    ``last_message_ids`` maps ``"order"``/``"instant"`` to the highest ``header.message_id``
    accepted so far on that topic; the bridge persists :attr:`last_message_ids` so that a
    restart does not reopen the door to replays. Pure: the caller passes the time.
    """

    def __init__(
        self,
        van_id: str,
        keys: Iterable[SigningKey],
        *,
        max_age_s: float = DEFAULT_MAX_AGE_S,
        max_ahead_s: float = DEFAULT_MAX_AHEAD_S,
        last_message_ids: Mapping[str, int] | None = None,
    ) -> None:
        self.van_id = check_van_id(van_id)
        self._keys = {k.key_id: k for k in keys}
        if not self._keys:
            raise ValueError(f"van {van_id}: a verifier needs at least one key")
        self.max_age_s = max_age_s
        self.max_ahead_s = max_ahead_s
        self._last: dict[str, int] = dict(last_message_ids or {})

    @property
    def last_message_ids(self) -> dict[str, int]:
        return dict(self._last)

    def verify(self, message: Command, now_s: float, *, topic: str = "") -> tuple[Rejection, ...]:
        """Return if ``message`` may be obeyed, else raise :class:`SignatureError`.

        Checks, in order: signed, addressed to this van, key known and MAC right, fresh,
        not replayed. Only a command that passes advances the counter. A safer-only
        command (:func:`is_safer_only`) is refused only by the first three: a stale or
        replayed one is obeyed all the same, and accepting it never lowers the counter
        (``max(last, message_id)``). Returns the checks that were waived for it
        (``Rejection.STALE``/``Rejection.REPLAYED``, for the van's log); ``()`` otherwise.
        """
        kind = command_kind(message)
        header = message.header

        def refused(reason: Rejection, detail: str) -> SignatureError:
            return SignatureError(reason, detail, topic=topic, message_id=header.message_id)

        if message.signature is None:
            raise refused(Rejection.UNSIGNED, f"{kind} carries no signature")
        if message.van_id != self.van_id:
            raise refused(
                Rejection.WRONG_VAN,
                f"{kind} is addressed to van {message.van_id!r}, this is {self.van_id!r}",
            )
        key = self._keys.get(message.signature.key_id)
        if key is None:
            raise refused(
                Rejection.BAD_SIGNATURE,
                f"{kind} is signed with key {message.signature.key_id!r}, "
                f"which van {self.van_id} does not hold",
            )
        try:
            expected = compute_mac(message, key)
        except ValueError as exc:  # built in code with a value JSON cannot carry
            raise refused(Rejection.BAD_SIGNATURE, f"{kind}: {exc}") from exc
        if not hmac.compare_digest(expected, message.signature.mac):
            raise refused(
                Rejection.BAD_SIGNATURE,
                f"{kind} MAC does not match its content (tampered or wrong key)",
            )
        last = self._last.get(kind, -1)
        stale = self._staleness(kind, header.timestamp, now_s)
        replayed = (
            f"{kind} message_id {header.message_id} is not above the last accepted {last}"
            if header.message_id <= last
            else ""
        )
        if is_safer_only(message):
            self._last[kind] = max(last, header.message_id)
            waived = ((Rejection.STALE, stale), (Rejection.REPLAYED, replayed))
            return tuple(reason for reason, why in waived if why)
        if stale:
            raise refused(Rejection.STALE, stale)
        if replayed:
            raise refused(Rejection.REPLAYED, replayed)
        self._last[kind] = header.message_id
        return ()

    def _staleness(self, kind: str, timestamp: str, now_s: float) -> str:
        """Why ``timestamp`` is not fresh at ``now_s``; "" when it is."""
        try:
            stamped_s = parse_timestamp(timestamp)
        except ValueError as exc:
            return str(exc)
        age_s = now_s - stamped_s
        if age_s > self.max_age_s or -age_s > self.max_ahead_s:
            return (
                f"{kind} stamped {timestamp} is {age_s:+.1f} s old; accepted: "
                f"-{self.max_ahead_s:g} s to +{self.max_age_s:g} s"
            )
        return ""


SAFER_ACTIONS: frozenset[InstantActionType] = frozenset(
    {InstantActionType.EMERGENCY_STOP, InstantActionType.PAUSE, InstantActionType.CANCEL_ORDER}
)
"""Instant actions that only ever make a van safer: never refused for bookkeeping."""


def is_safer_only(message: Command) -> bool:
    """An instant-actions message all of whose actions are in :data:`SAFER_ACTIONS`.

    An order is never safer-only (it makes the van move); a message that mixes a safer
    action with another one (say ``pause`` and ``resume``) is checked in full.
    """
    return isinstance(message, InstantActions) and all(
        a.action_type in SAFER_ACTIONS for a in message.actions
    )
