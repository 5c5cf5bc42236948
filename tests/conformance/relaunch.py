"""Restart a van process the way a vendor's --restart-command would: kill it hard, start it again.

``python -m tests.conformance.relaunch --pidfile F --log L -- COMMAND ...`` sends SIGKILL to
the process whose id is in ``F`` (if any), waits until it is gone, starts ``COMMAND`` in a new
session with its output appended to ``L``, writes its id to ``F`` and returns at once (the van
runs on). SIGKILL, not SIGTERM: the van's MQTT connection dies without a goodbye, so its last
will is published (what the kit's ``last_will`` case looks for).
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import time
from pathlib import Path

GONE_TIMEOUT_S = 10.0


def _gone(pid: int) -> bool:
    """Dead, or a zombie waiting for a parent that is not us (its sockets are closed)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return True
    return stat.rsplit(")", 1)[1].split()[0] in ("Z", "X")


def kill(pidfile: Path) -> None:
    if not pidfile.exists():
        return
    pid = int(pidfile.read_text().strip())
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + GONE_TIMEOUT_S
    while not _gone(pid):
        if time.monotonic() > deadline:
            raise SystemExit(f"process {pid} did not die within {GONE_TIMEOUT_S} s")
        time.sleep(0.02)  # another process's death: there is no event to await


def start(command: list[str], pidfile: Path, log: Path) -> int:
    with log.open("ab") as out:
        proc = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    pidfile.write_text(str(proc.pid))
    return proc.pid


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--pidfile", type=Path, required=True)
    parser.add_argument("--log", type=Path, required=True)
    parser.add_argument("command", nargs="+")
    args = parser.parse_args()
    kill(args.pidfile)
    start(args.command, args.pidfile, args.log)


if __name__ == "__main__":
    main()
