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

MESSAGE_ID_BLOCK = 1000  # ids reserved in the store per round trip to it


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

    Message ids come from ``reserve(van_id, count) -> first id`` (the store), in blocks, so
    they rise across restarts and a van's anti-replay check never trips on a restarted
    controller.
    """

    def __init__(self, name: str, master: MasterKey, reserve: Callable[[str, int], int]) -> None:
        self.name = name
        self._master = master
        self._reserve = reserve
        self._keys: dict[str, SigningKey] = {}
        self._next: dict[str, int] = {}
        self._limit: dict[str, int] = {}
        self._ids = threading.Lock()  # prepare() may run in a worker thread

    def ready(self, van_id: str) -> bool:
        """Ids are reserved and the key derived: signing for ``van_id`` needs no store."""
        return self._next.get(van_id, 0) != 0 and van_id in self._keys

    def prepare(self, van_ids: Iterable[str]) -> None:
        """Reserve ids and derive keys now for vans about to be sent their first command, so
        that signing them is CPU only: the caller runs this in a worker thread, beside the
        store write, and the event loop never waits on a store round trip to sign."""
        for van_id in van_ids:
            self.key(van_id)
            with self._ids:
                if self._next.get(van_id, 0) == 0:
                    first = self._reserve(van_id, MESSAGE_ID_BLOCK)
                    self._limit[van_id] = first + MESSAGE_ID_BLOCK - 1
                    self._next[van_id] = first

    def key(self, van_id: str) -> SigningKey:
        key = self._keys.get(van_id)
        if key is None:
            key = self._keys[van_id] = derive_van_key(
                self._master.secret, van_id, generation=self._master.generation
            )
        return key

    def next_message_id(self, van_id: str) -> int:
        with self._ids:
            n = self._next.get(van_id, 0)
            if n == 0 or n > self._limit[van_id]:
                n = self._reserve(van_id, MESSAGE_ID_BLOCK)
                self._limit[van_id] = n + MESSAGE_ID_BLOCK - 1
            self._next[van_id] = n + 1
            return n

    def payload(self, message: Order | InstantActions, now_s: float) -> bytes:
        header = make_header(self.name, self.next_message_id(message.van_id), now_s)
        key = self.key(message.van_id)
        if isinstance(message, Order):
            return encode(sign(message.model_copy(update={"header": header}), key))
        return encode(sign(message.model_copy(update={"header": header}), key))
