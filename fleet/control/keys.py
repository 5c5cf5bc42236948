"""The controller's signing: master secret on disk, per-van keys, never-reused message ids.

The master secret is a file of 64 hex characters (32 bytes) or more, readable by its owner
only; ``fleet controller run`` creates one if told to (``--create-key``). Each van's key is
derived from it (:func:`fleet.protocol.signing.derive_van_key`); ``fleet controller van-key``
prints one van's key for its bridge.
"""

from __future__ import annotations

import os
import secrets
import stat
from collections.abc import Callable
from pathlib import Path

from fleet.errors import ConfigError
from fleet.protocol import (
    InstantActions,
    Order,
    SigningKey,
    derive_van_key,
    encode,
    make_header,
    sign,
)

MASTER_SECRET_BYTES = 32
MESSAGE_ID_BLOCK = 1000  # ids reserved in the store per round trip to it


def read_master_secret(path: Path) -> bytes:
    """The master secret in ``path``; a missing, malformed or world-readable file is refused."""
    try:
        text = path.read_text(encoding="ascii").strip()
        mode = path.stat().st_mode
    except FileNotFoundError as exc:
        raise ConfigError(
            f"{path}: signing key not found (create one with fleet controller run --create-key)"
        ) from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read the signing key: {exc}") from exc
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigError(f"{path}: the signing key must be readable by its owner only (chmod 600)")
    try:
        secret = bytes.fromhex(text)
    except ValueError as exc:
        raise ConfigError(f"{path}: expected hexadecimal digits only") from exc
    if len(secret) < MASTER_SECRET_BYTES:
        raise ConfigError(
            f"{path}: expected at least {2 * MASTER_SECRET_BYTES} hex digits "
            f"({MASTER_SECRET_BYTES} bytes), got {len(text)}"
        )
    return secret


def create_master_secret(path: Path) -> bytes:
    """Write a fresh random master secret to ``path`` (mode 600); never overwrites one."""
    secret = secrets.token_bytes(MASTER_SECRET_BYTES)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError as exc:
        raise ConfigError(f"{path}: a signing key exists already; not overwriting it") from exc
    with os.fdopen(fd, "w", encoding="ascii") as fh:
        fh.write(secret.hex() + "\n")
    return secret


class Signer:
    """Stamps and signs commands: a fresh header with the van's next message id, then HMAC.

    Message ids come from ``reserve(van_id, count) -> first id`` (the store), in blocks, so
    they rise across restarts and a van's anti-replay check never trips on a restarted
    controller.
    """

    def __init__(self, name: str, master_secret: bytes, reserve: Callable[[str, int], int]) -> None:
        self.name = name
        self._master = master_secret
        self._reserve = reserve
        self._keys: dict[str, SigningKey] = {}
        self._next: dict[str, int] = {}
        self._limit: dict[str, int] = {}

    def key(self, van_id: str) -> SigningKey:
        key = self._keys.get(van_id)
        if key is None:
            key = self._keys[van_id] = derive_van_key(self._master, van_id)
        return key

    def next_message_id(self, van_id: str) -> int:
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
