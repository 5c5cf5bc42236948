"""The dispatcher commands as a user runs them: real processes against a running controller."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fleet.cli.app import app
from fleet.control.config import ControllerConfig
from fleet.protocol import ErrorLevel, ErrorReference, VanError
from tests.control.service_support import ControllerThread, day_book
from tests.support import plans
from tests.support.brokers import BrokerEndpoint
from tests.support.mqtt_van import MqttVan
from tests.support.protocol_examples import MASTER_SECRET
from tests.support.protocol_van import ProtocolVan

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

        # no van is there to confirm it: said so, and a non-zero exit
        stop = _fleet(mosquitto, "estop", "--all", "--wait", "0.5")
        assert stop.returncode == 1 and "emergency_stop sent to 4 van(s)" in stop.stdout
        assert "not confirmed by 4 of 4 van(s)" in stop.stderr
        assert "ST-A-01: no confirmation within 0.5 s" in stop.stderr
        # shown as an e-stop sent, never as paused
        status = _fleet(mosquitto, "status", "ST-A-01")
        assert "estop sent (sent " in status.stdout and "paused" not in status.stdout

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


def _refusing_van(broker: BrokerEndpoint, van_id: str) -> MqttVan:
    """A van holding another key: it refuses every command, as a bridge would report it."""
    lon, lat = plans.ROSTER[van_id]
    return MqttVan(
        ProtocolVan(van_id, lon=lon, lat=lat), broker.host, broker.port, broker.topics, b"x" * 32
    )


@pytest.mark.slow
def test_estop_says_confirmed_refused_or_unconfirmed_for_each_van(
    mosquitto: BrokerEndpoint, tmp_path: Path
) -> None:
    async def main() -> None:
        lon, lat = plans.ROSTER["ST-A-01"]
        good = MqttVan(
            ProtocolVan("ST-A-01", lon=lon, lat=lat),
            mosquitto.host,
            mosquitto.port,
            mosquitto.topics,
            MASTER_SECRET,
        )
        async with good, _refusing_van(mosquitto, "ST-A-02") as bad:
            await good.report()
            await bad.report()

            async def refuse() -> None:  # the refusing van reports what it refused
                while not bad.rejected:
                    await asyncio.sleep(0.02)  # polls the test van's list of refusals
                bad.van.errors.append(
                    VanError(
                        error_type="signature_error",
                        level=ErrorLevel.WARNING,
                        description=bad.rejected_details[0],
                        references=(ErrorReference(key="reason", value=bad.rejected[0]),),
                    )
                )
                await bad.report()

            async with asyncio.timeout(60):
                watcher = asyncio.create_task(refuse())
                done = await asyncio.to_thread(
                    _fleet, mosquitto, "estop", "ST-A-01", "ST-A-02", "WH-PORTO-01", "--wait", "3"
                )
                await watcher
            log = await asyncio.to_thread(_fleet, mosquitto, "events", "--van", "ST-A-02")
            print(log.stdout, bad.rejected, bad.van.errors)
            assert done.returncode == 1, done.stderr
            assert "ST-A-01: confirmed in" in done.stdout
            assert "not confirmed by 2 of 3 van(s)" in done.stderr
            assert "ST-A-02: emergency_stop" in done.stderr and "bad_signature" in done.stderr
            assert "WH-PORTO-01: no confirmation within 3 s" in done.stderr
            log = await asyncio.to_thread(_fleet, mosquitto, "events", "--van", "ST-A-02")
            print(log.stdout, bad.rejected, bad.van.errors)
            alone = await asyncio.to_thread(_fleet, mosquitto, "estop", "ST-A-01")
            assert alone.returncode == 0 and "ST-A-01: confirmed in" in alone.stdout
            # cancel waits for the van: confirmed by ST-A-01, not by the absent WH-PORTO-01
            cancel = await asyncio.to_thread(_fleet, mosquitto, "cancel", "--van", "ST-A-01")
            assert cancel.returncode == 0, cancel.stderr
            assert "ST-A-01: cancel confirmed by the van" in cancel.stdout
            cancel = await asyncio.to_thread(_fleet, mosquitto, "cancel", "--van", "WH-PORTO-01")
            assert cancel.returncode == 1
            assert "cancel not confirmed by WH-PORTO-01" in cancel.stderr
            assert "not confirmed within 1 s" in cancel.stderr

    config = ControllerConfig(
        name=f"ctl-{mosquitto.prefix.split('/')[1]}", release_ahead_stops=1, cancel_confirm_s=1.0
    )
    with ControllerThread(mosquitto, tmp_path / "fleet.db", day_book(), config):
        asyncio.run(main())
