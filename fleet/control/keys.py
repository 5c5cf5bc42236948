"""The controller's signing: master secret on disk, per-van keys, never-reused message ids.

The master secret is the file ``fleet broker credentials`` writes as
``controller/signing-master.key`` (TOML: ``generation`` and ``secret_hex``), readable by its
owner only; ``fleet controller run --create-key`` makes one for a machine without a
credentials set. Each van's key is derived from it (:func:`fleet.protocol.derive_van_key`
with that generation).
"""

from __future__ import annotations

import os
import secrets
import stat
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from fleet.errors import ConfigError
from fleet.model.toml_table import Table
from fleet.protocol import (
    InstantActions,
    Order,
    SigningKey,
    derive_van_key,
    encode,
    make_header,
    sign,
)
from fleet.security.credentials import MASTER_SECRET_BYTES, master_key_text

# Command message ids (docs/controller.md, "Signed message ids"): at least the UTC time in
# microseconds, and above every id used before for the van. The store keeps an upper bound of
# the ids used ("reserved"), raised ahead of need in blocks that cover RESERVE_AHEAD_S of time,
# so that a restarted controller starts above it and signing rarely waits on the store.
ID_UNITS_PER_S = 1_000_000
RESERVE_AHEAD_S = 10.0  # ids reserved per round trip to the store, in seconds of the clock
RESERVE_LEAD_S = 5.0  # prepare() reserves again when less than this is left
MESSAGE_ID_BLOCK = int(RESERVE_AHEAD_S * ID_UNITS_PER_S)


def time_message_id(now_s: float) -> int:
    """The smallest message id a command made at ``now_s`` (epoch s) may carry."""
    return int(now_s * ID_UNITS_PER_S)


@dataclass(frozen=True, slots=True)
class MasterKey:
    secret: bytes
    generation: int = 1

    def __repr__(self) -> str:  # never print a secret
        return f"MasterKey(generation={self.generation}, secret=<{len(self.secret)} bytes>)"


def read_master_key(path: Path) -> MasterKey:
    """The master key in ``path``; a missing, malformed or group/world-readable file is refused."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError as exc:
        raise ConfigError(
            f"{path}: signing key not found (generate a set with `fleet broker credentials`, "
            "or pass --create-key)"
        ) from exc
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigError(f"{path}: the signing key must be readable by its owner only (chmod 600)")
    root = Table.root(path)
    generation = root.integer("generation", "key generation", ge=1)
    secret_hex = root.string("secret_hex")
    root.finish()
    try:
        secret = bytes.fromhex(secret_hex)
    except ValueError as exc:
        raise root.error("secret_hex", "expected hexadecimal digits only") from exc
    if len(secret) < MASTER_SECRET_BYTES:
        raise root.error(
            "secret_hex",
            f"expected at least {2 * MASTER_SECRET_BYTES} hex digits, got {len(secret_hex)}",
        )
    return MasterKey(secret, generation)


def create_master_key(path: Path) -> MasterKey:
    """Write a fresh random master key to ``path`` (mode 600); never overwrites one."""
    key = MasterKey(secrets.token_bytes(MASTER_SECRET_BYTES), 1)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError as exc:
        raise ConfigError(f"{path}: a signing key exists already; not overwriting it") from exc
    with os.fdopen(fd, "w", encoding="ascii") as fh:
        fh.write(master_key_text(key.secret, key.generation))
    return key


class Signer:
    """Stamps and signs commands: a fresh header with the van's next message id, then HMAC.

    A van's message ids are ``max(previous + 1, UTC time in microseconds)``: they rise with
    the clock, so a controller with a new, lost or restored store still sends ids above every
    one a van has accepted (a van refuses a lower one as a replay). The store keeps an upper
    bound of the ids used per van: ``reserve(van_id, count, floor) -> first`` raises it to
    ``first + count - 1`` where ``first = max(bound + 1, floor)`` and a restarted controller
    starts above it, so ids keep rising even if the clock stepped back.
    """

    def __init__(
        self, name: str, master: MasterKey, reserve: Callable[[str, int, int], int]
    ) -> None:
        self.name = name
        self._master = master
        self._reserve = reserve
        self._keys: dict[str, SigningKey] = {}
        self._next: dict[str, int] = {}
        self._limit: dict[str, int] = {}
        self._ids = threading.Lock()  # prepare() may run in a worker thread

    def ready(self, van_id: str, now_s: float) -> bool:
        """The key is derived and ids are reserved for at least ``RESERVE_LEAD_S`` from
        ``now_s``: signing for ``van_id`` needs no store."""
        if van_id not in self._keys or van_id not in self._limit:
            return False
        wanted = max(self._next.get(van_id, 0), time_message_id(now_s + RESERVE_LEAD_S))
        return self._limit[van_id] >= wanted

    def prepare(self, van_ids: Iterable[str], now_s: float) -> None:
        """Reserve ids and derive keys now for vans about to be sent a command, so that
        signing them is CPU only: the caller runs this in a worker thread, beside the store
        write, and the event loop seldom waits on a store round trip to sign."""
        for van_id in van_ids:
            self.key(van_id)
            with self._ids:
                if not self.ready(van_id, now_s):
                    floor = max(self._next.get(van_id, 0), time_message_id(now_s))
                    first = self._reserve(van_id, MESSAGE_ID_BLOCK, floor)
                    self._limit[van_id] = first + MESSAGE_ID_BLOCK - 1
                    self._next[van_id] = max(self._next.get(van_id, 0), first)

    def key(self, van_id: str) -> SigningKey:
        key = self._keys.get(van_id)
        if key is None:
            key = self._keys[van_id] = derive_van_key(
                self._master.secret, van_id, generation=self._master.generation
            )
        return key

    def next_message_id(self, van_id: str, now_s: float) -> int:
        with self._ids:
            n = max(self._next.get(van_id, 0), time_message_id(now_s))
            if n > self._limit.get(van_id, -1):
                n = self._reserve(van_id, MESSAGE_ID_BLOCK, n)
                self._limit[van_id] = n + MESSAGE_ID_BLOCK - 1
            self._next[van_id] = n + 1
            return n

    def sign(self, message: Order | InstantActions, now_s: float) -> tuple[int, bytes]:
        """The message id used and the signed payload."""
        message_id = self.next_message_id(message.van_id, now_s)
        header = make_header(self.name, message_id, now_s)
        key = self.key(message.van_id)
        if isinstance(message, Order):
            return message_id, encode(sign(message.model_copy(update={"header": header}), key))
        return message_id, encode(sign(message.model_copy(update={"header": header}), key))

    def payload(self, message: Order | InstantActions, now_s: float) -> bytes:
        return self.sign(message, now_s)[1]
