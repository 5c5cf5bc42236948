"""The VCU conformance kit: our simulated VCU passes every case (the real commands, over
socket://, as a vendor runs them), and VCUs that break a rule fail the case that checks it."""

from __future__ import annotations

import asyncio
import json
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from firmware_bridge import wire
from firmware_bridge.conformance import CASE_NAMES, Status, run_vcu_conformance
from firmware_bridge.link import LinkConfig, url_opener
from fleet.model import load_van_spec
from fleet.protocol.clock import WallClock
from sim.vcu import SimulatedVcu, VcuConfig, VcuMemory, make_vehicle, vcu_port

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_the_simulated_vcu_passes_every_case_of_the_kit_run_as_a_vendor_runs_it(
    tmp_path: Path,
) -> None:
    port = _free_port()
    url = f"socket://127.0.0.1:{port}"
    log = tmp_path / "vcu.log"
    with open(log, "w") as out:
        vcu = subprocess.Popen(
            [str(BIN / "fleet-sim"), "vcu", "--serial", url, "--baud", "0"],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 30
        while "listening on" not in log.read_text():  # the VCU listens: a bridge may connect
            assert vcu.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)
        kit = subprocess.run(
            [
                str(BIN / "firmware-bridge"),
                "conformance",
                "vcu",
                "--serial",
                url,
                "--reset-command",
                f"kill -USR1 {vcu.pid}",
            ],
            capture_output=True,
            text=True,
            timeout=150,
            env={**os.environ, "COLUMNS": "160"},
        )
    finally:
        vcu.terminate()
        vcu.wait(timeout=10)
    last = kit.stdout.strip().splitlines()[-1]
    summary = json.loads(last)
    assert summary == {
        "cases": len(CASE_NAMES),
        "passed": len(CASE_NAMES),
        "failed": 0,
        "skipped": 0,
        "failed_cases": [],
        "skipped_cases": [],
    }, kit.stdout
    assert kit.returncode == 0
    assert re.search(r"heartbeat_loss\s+│ PASS", kit.stdout)


@asynccontextmanager
async def in_process_vcu(
    vcu_type: type[SimulatedVcu] = SimulatedVcu, **config: float
) -> AsyncIterator[SimulatedVcu]:
    spec = load_van_spec(REPO / "configs" / "van.toml")
    port = vcu_port("pty")
    vcu = vcu_type(
        port,
        make_vehicle(spec, -8.6110, 41.1496),
        clock=WallClock(),
        config=VcuConfig(baud=0, link=LinkConfig(wire.Role.VCU, line_baud=0), **config),
    )
    task = asyncio.create_task(vcu.run())
    try:
        yield vcu
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        port.close()


def test_without_a_reset_command_the_latch_case_is_skipped_with_its_reason() -> None:
    async def body() -> None:
        async with asyncio.timeout(60), in_process_vcu() as vcu:
            assert vcu.port.path is not None
            report = await run_vcu_conformance(
                url_opener(vcu.port.path), only=["estop_latch_reset"]
            )
        assert [(r.name, r.status) for r in report.results] == [
            ("handshake", Status.PASS),
            ("estop_latch_reset", Status.SKIP),
        ]
        assert "--reset-command" in report.results[1].detail
        assert report.summary()["skipped_cases"] == ["estop_latch_reset"]
        assert report.failed == []

    asyncio.run(body())


class ForgetfulVcu(SimulatedVcu):
    """Not conforming: its e-stop latch is in RAM, lost at every reboot."""

    async def _boot(self) -> bool:
        self.memory = VcuMemory()
        return await super()._boot()


def test_a_vcu_that_loses_its_latch_on_reset_fails_the_latch_case() -> None:
    async def body() -> None:
        async with asyncio.timeout(60), in_process_vcu(ForgetfulVcu) as vcu:
            assert vcu.port.path is not None

            async def reset() -> None:
                vcu.request_reboot()

            report = await run_vcu_conformance(
                url_opener(vcu.port.path), reset=reset, only=["estop_latch_reset"]
            )
        assert report.failed == ["estop_latch_reset"]
        assert "after the reset" in report.results[-1].detail

    asyncio.run(body())


def test_a_vcu_that_drives_on_without_its_bridge_fails_the_heartbeat_loss_case() -> None:
    async def body() -> None:
        async with asyncio.timeout(90), in_process_vcu(link_loss_drive_s=60.0) as vcu:
            assert vcu.port.path is not None
            report = await run_vcu_conformance(url_opener(vcu.port.path), only=["heartbeat_loss"])
        assert report.failed == ["heartbeat_loss"]
        assert "HOLDING with LINK_LOST" in report.results[-1].detail

    asyncio.run(body())


def test_an_unknown_case_name_is_refused_before_anything_runs() -> None:
    async def body() -> None:
        with pytest.raises(ValueError, match=r"unknown case.*no_such_case"):
            await run_vcu_conformance(url_opener("loop://"), only=["no_such_case"])

    asyncio.run(body())
