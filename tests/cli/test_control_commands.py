"""The dispatcher commands as a user runs them: real processes against a running controller."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fleet.cli.app import app
from tests.control.service_support import ControllerThread, day_book
from tests.support.brokers import BrokerEndpoint

FLEET = [str(Path(sys.executable).with_name("fleet"))]  # the installed entry point


def _fleet(
    broker: BrokerEndpoint, *args: str, timeout_s: float = 60
) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "FLEET_BROKER": broker.url,
        "FLEET_TOPIC_PREFIX": broker.prefix,
        "COLUMNS": "200",
    }
    return subprocess.run(
        [*FLEET, *args], capture_output=True, text=True, env=env, timeout=timeout_s, check=False
    )


@pytest.mark.slow
def test_dispatch_status_estop_events_and_errors(mosquitto: BrokerEndpoint, tmp_path: Path) -> None:
    plan_file = tmp_path / "plan.json"
    plan_file.write_text(json.dumps({"name": "day"}))
    orders = tmp_path / "orders.csv"
    orders.write_text("parcel_id,lon,lat,weight_kg,volume_m3\n")
    with ControllerThread(mosquitto, tmp_path / "fleet.db", day_book()):
        early = _fleet(mosquitto, "replan")
        assert early.returncode == 1 and "no plan has been dispatched" in early.stderr

        done = _fleet(mosquitto, "dispatch", str(plan_file), "--orders", str(orders))
        assert done.returncode == 0, done.stderr
        assert "2 orders, 4 parcels" in done.stdout

        replan = _fleet(mosquitto, "replan", "--reason", "Rua Escura closed")
        assert replan.returncode == 0, replan.stderr
        assert "re-plan started (Rua Escura closed)" in replan.stdout
        log = _fleet(mosquitto, "events")
        assert "replan_requested" in log.stdout and "requested: Rua Escura closed" in log.stdout

        again = _fleet(mosquitto, "dispatch", str(plan_file), "--orders", str(orders))
        assert again.returncode == 0 and "already dispatched" in again.stdout

        status = _fleet(mosquitto, "status")
        assert status.returncode == 0, status.stderr
        for van in ("WH-PORTO-01", "WH-PORTO-02", "ST-A-01", "ST-A-02"):
            assert van in status.stdout
        assert "parcels: planned 4" in status.stdout

        stop = _fleet(mosquitto, "estop", "--all")
        assert stop.returncode == 0 and "emergency_stop sent to 4 van(s)" in stop.stdout

        events = _fleet(mosquitto, "events", "--van", "WH-PORTO-01")
        assert events.returncode == 0
        assert "order_sent" in events.stdout and "instant_sent" in events.stdout

        wrong = _fleet(mosquitto, "cancel", "NOPE")
        assert wrong.returncode == 1
        assert (
            wrong.stderr.strip().startswith("error:") and "unknown parcel(s): NOPE" in wrong.stderr
        )

        both = _fleet(mosquitto, "cancel", "P1", "--van", "ST-A-01")
        assert both.returncode != 0 and "not both" in both.stderr


def test_a_missing_plan_file_is_one_clear_line(mosquitto: BrokerEndpoint, tmp_path: Path) -> None:
    done = _fleet(
        mosquitto, "dispatch", str(tmp_path / "nope.json"), "--orders", str(tmp_path / "o.csv")
    )
    assert done.returncode == 1
    assert done.stderr.count("\n") == 1 and "nope.json: file not found" in done.stderr


def test_without_a_controller_the_cli_says_so(mosquitto: BrokerEndpoint) -> None:
    done = _fleet(mosquitto, "status")
    assert done.returncode == 1
    assert "no controller has ever run" in done.stderr


@pytest.mark.parametrize(
    "command",
    ["dispatch", "add", "status", "cancel", "replan", "pause", "resume", "estop", "events"],
)
def test_every_command_has_help(command: str) -> None:
    result = CliRunner().invoke(app, [command, "--help"])
    assert result.exit_code == 0 and "--broker" in result.output


def test_the_broker_group_has_run() -> None:
    result = CliRunner().invoke(app, ["broker", "run", "--help"])
    assert result.exit_code == 0 and "--port" in result.output
