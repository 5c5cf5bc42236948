"""Store-and-forward: messages made while the broker is unreachable wait on disk, in order.

One file per message in a directory (``{seq:016d}.msg``: the topic, a newline, the payload),
written to a temporary name and renamed, so a crash never leaves half a message. The spool
holds at most ``max_messages``; beyond that the oldest is dropped and counted
(:attr:`Spool.dropped`), and the bridge reports the count as a warning in its state.
After reconnecting the bridge publishes :meth:`Spool.peek` in order and :meth:`Spool.pop`
each one once the broker has acknowledged it.
"""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path

from firmware_bridge.errors import SpoolError

log = logging.getLogger(__name__)

SUFFIX = ".msg"


class Spool:
    def __init__(self, directory: Path, *, max_messages: int = 10_000) -> None:
        if max_messages < 1:
            raise ValueError("max_messages must be ≥ 1")
        self.directory = directory
        self.max_messages = max_messages
        self.dropped = 0
        try:
            directory.mkdir(parents=True, exist_ok=True)
            for stale in directory.glob("*.tmp"):
                stale.unlink()
            names = sorted(p.name for p in directory.glob(f"*{SUFFIX}"))
        except OSError as exc:
            raise SpoolError(f"spool directory {directory}: {exc}") from exc
        self._seqs: list[int] = []
        for name in names:
            try:
                self._seqs.append(int(name.removesuffix(SUFFIX)))
            except ValueError:
                log.warning("spool %s: ignoring foreign file %s", directory, name)
        self._next = (self._seqs[-1] + 1) if self._seqs else 1

    def __len__(self) -> int:
        return len(self._seqs)

    def _path(self, seq: int) -> Path:
        return self.directory / f"{seq:016d}{SUFFIX}"

    def append(self, topic: str, payload: bytes) -> None:
        if "\n" in topic:
            raise SpoolError(f"spool {self.directory}: a topic may not hold a newline: {topic!r}")
        seq = self._next
        self._next += 1
        path = self._path(seq)
        tmp = path.with_suffix(".tmp")
        try:
            with os.fdopen(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb") as f:
                f.write(topic.encode("utf-8") + b"\n" + payload)
            os.replace(tmp, path)
        except OSError as exc:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise SpoolError(f"spool {self.directory}: cannot write {path.name}: {exc}") from exc
        self._seqs.append(seq)
        while len(self._seqs) > self.max_messages:
            oldest = self._seqs.pop(0)
            with contextlib.suppress(FileNotFoundError):
                self._path(oldest).unlink()
            self.dropped += 1
            log.warning(
                "spool %s full (%d messages): dropped the oldest (%d dropped so far)",
                self.directory,
                self.max_messages,
                self.dropped,
            )

    def peek(self) -> tuple[str, bytes] | None:
        """The oldest message, or None."""
        while self._seqs:
            path = self._path(self._seqs[0])
            try:
                data = path.read_bytes()
            except FileNotFoundError:
                self._seqs.pop(0)
                continue
            except OSError as exc:
                raise SpoolError(f"spool {self.directory}: cannot read {path.name}: {exc}") from exc
            topic, sep, payload = data.partition(b"\n")
            if not sep:
                log.warning("spool %s: %s has no topic line; dropped", self.directory, path.name)
                self.pop()
                continue
            return topic.decode("utf-8", errors="replace"), payload
        return None

    def pop(self) -> None:
        """Forget the oldest message (it was delivered)."""
        if not self._seqs:
            return
        seq = self._seqs.pop(0)
        with contextlib.suppress(FileNotFoundError):
            self._path(seq).unlink()
