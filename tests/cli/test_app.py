"""The `fleet` entry point: usage errors and FleetErrors are one clear message, never a traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def _fleet(*args: str) -> subprocess.CompletedProcess[str]:
    code = "from fleet.cli.app import main; main()"
    return subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=60
    )


def test_unknown_option_is_a_usage_error_not_a_traceback() -> None:
    done = _fleet("--bogus")
    assert done.returncode == 2
    assert "No such option: --bogus" in done.stderr
    assert "Traceback" not in done.stderr


def test_fleet_error_is_one_line_with_exit_code_1(tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"
    done = _fleet("site", "show", str(missing))
    assert done.returncode == 1
    assert f"{missing}: file not found" in done.stderr
    assert "Traceback" not in done.stderr


def test_every_command_group_is_listed_in_help() -> None:
    done = _fleet("--help")
    assert done.returncode == 0
    for command in ("site", "plan", "verify", "orders", "dispatch", "status", "broker"):
        assert command in done.stdout
