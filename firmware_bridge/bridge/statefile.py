"""The bridge's small state files, written crash-safely (``docs/bridge.md``, "Restarts").

:func:`write_atomic` writes a whole file or leaves the old one: the bytes go to a temporary
file beside it (mode 0600), which is flushed to disk (``fsync``) and renamed over the old one,
then the directory is flushed too, so the rename itself survives a power cut. A crash at any
point leaves either the old file or the new one, never a mix, never half of one.
:func:`read_json` reads one back; :func:`move_aside` keeps an unreadable one for the engineer
under a new name instead of overwriting it. :class:`StateWriter` does the writing in a
worker thread, in order, so that the bridge's event loop never waits for a disk.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

from firmware_bridge.errors import BridgeError

log = logging.getLogger(__name__)

FILE_MODE = 0o600


class StateFileError(BridgeError):
    """A state file cannot be written, read or parsed (the file and the cause named)."""


def write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)
        try:
            os.fchmod(fd, FILE_MODE)
            view = memoryview(data)
            while view:
                written = os.write(fd, view)
                view = view[written:]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise StateFileError(f"{path}: cannot write: {exc}") from exc


def write_json(path: Path, value: object) -> None:
    write_atomic(path, _json_bytes(value))


def read_json(path: Path) -> object | None:
    """The JSON value in ``path``; None if there is no such file; StateFileError if it cannot
    be read or is not JSON."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise StateFileError(f"{path}: cannot read: {exc}") from exc
    try:
        value: object = json.loads(data)
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError
        raise StateFileError(f"{path}: not valid JSON: {exc}") from exc
    return value


def move_aside(path: Path, stamp: str) -> Path | None:
    """Rename an unreadable ``path`` to ``<name>.unreadable-<stamp>`` beside it (kept for the
    engineer, never read again); the new path, or None if it could not be moved."""
    aside = path.with_name(f"{path.name}.unreadable-{stamp}")
    try:
        os.replace(path, aside)
    except OSError:
        return None
    return aside


class StateWriter:
    """Writes state files in one worker thread, in the order asked, off the event loop (an
    fsync can take milliseconds; an emergency stop must not wait behind one).

    :meth:`put` returns a future done once that content (or a newer one for the same file,
    which replaces it while it waits) is on disk; the service publishes a state only after the
    write it depends on is done. :meth:`close` writes everything asked and stops."""

    def __init__(self) -> None:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="state-writer")
        self._lock = threading.Lock()
        self._latest: dict[Path, bytes] = {}
        self._last: Future[None] | None = None
        self.failures = 0

    def put(self, path: Path, data: bytes) -> Future[None]:
        with self._lock:
            waiting = path in self._latest
            self._latest[path] = data
            if waiting and self._last is not None:
                return self._last  # the queued write of this file takes the newest content
            future = self._executor.submit(self._write, path)
            self._last = future
            return future

    def put_json(self, path: Path, value: object) -> Future[None]:
        return self.put(path, _json_bytes(value))

    @property
    def last(self) -> Future[None] | None:
        """The last write asked for (done: everything asked so far is on disk)."""
        return self._last

    def flush(self) -> None:
        """Block until everything asked so far is written."""
        last = self._last
        if last is not None:
            last.result()

    def close(self) -> None:
        self._executor.shutdown(wait=True)

    def _write(self, path: Path) -> None:
        with self._lock:
            data = self._latest.pop(path)
        try:
            write_atomic(path, data)
        except StateFileError as exc:
            self.failures += 1
            log.error("%s", exc)


def _json_bytes(value: object) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":")).encode("utf-8")
