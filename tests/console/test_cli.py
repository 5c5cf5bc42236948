"""``fleet console`` as a user runs it: logins, serving, stopping on SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fleet.cli.app import app as fleet_app
from fleet.console.auth import Users
from fleet.control.site_planning import site_roster
from fleet.model.site import load_site
from tests.support.brokers import free_port, wait_for_port

pytestmark = pytest.mark.mosquitto


def test_user_add_prints_the_token_once_and_stores_only_its_hash(tmp_path: Path) -> None:
    users = tmp_path / "users.toml"
    result = CliRunner().invoke(
        fleet_app,
        ["console", "user", "add", "alice", "--role", "dispatcher", "--users", str(users)],
    )
    assert result.exit_code == 0, result.output
    token = result.stdout.strip().splitlines()[-1]
    assert token.startswith("fct_") and token not in users.read_text()
    user = Users.load(users).by_token(token)
    assert user is not None and user.may_act
    bad = CliRunner().invoke(
        fleet_app, ["console", "user", "add", "bob", "--role", "admin", "--users", str(users)]
    )
    assert bad.exit_code != 0


def test_fleet_console_serves_and_stops_cleanly_on_sigterm(
    tmp_path: Path, mosquitto: object, configs_dir: Path
) -> None:
    users = tmp_path / "users.toml"
    token = (
        CliRunner()
        .invoke(fleet_app, ["console", "user", "add", "wall", "--users", str(users)])
        .stdout.strip()
        .splitlines()[-1]
    )
    port = free_port()
    proc = subprocess.Popen(
        [
            str(Path(sys.executable).with_name("fleet")), "console",
            "--broker", mosquitto.url,  # type: ignore[attr-defined]
            "--topic-prefix", mosquitto.prefix,  # type: ignore[attr-defined]
            "--listen", f"127.0.0.1:{port}",
            "--users", str(users),
            "--site", str(configs_dir / "sites" / "poa.toml"),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "NO_COLOR": "1"},
    )  # fmt: skip
    try:
        wait_for_port("127.0.0.1", port, 90)
        req = urllib.request.Request(
            f"http://127.0.0.1:{port}/api/kpis", headers={"authorization": f"Bearer {token}"}
        )
        with urllib.request.urlopen(req, timeout=10) as r:
            kpis = json.loads(r.read())
        roster = site_roster(load_site(configs_dir / "sites" / "poa.toml"))
        assert kpis["vans"] == len(roster) and kpis["controller"] is None  # no controller
        time.sleep(0.2)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=20)
        assert proc.returncode == 0, err.decode()
        assert "console stopped" in err.decode()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
