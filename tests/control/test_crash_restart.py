"""kill -9 the controller at seeded random moments of a day: nothing lost, nothing twice."""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import sys
from pathlib import Path

import pytest

from fleet.control.client import ControllerClient
from fleet.mqtt import BrokerAddress
from fleet.protocol import OrderVerdict
from fleet.protocol.control_api import DispatchBody, StatusBody, StatusResult
from fleet.store import SqliteStore
from tests.support import plans
from tests.support import protocol_examples as ex
from tests.support.brokers import BrokerEndpoint
from tests.support.mqtt_van import MqttVan
from tests.support.protocol_van import ProtocolVan

REPO = Path(__file__).resolve().parents[2]
KILLS = 4


class ControllerProcess:
    def __init__(self, broker: BrokerEndpoint, db: Path) -> None:
        self.args = [
            sys.executable,
            "-m",
            "tests.control.controller_process",
            "--port",
            str(broker.port),
            "--prefix",
            broker.prefix,
            "--db",
            str(db),
        ]
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        self.proc = await asyncio.create_subprocess_exec(
            *self.args, cwd=REPO, stdout=asyncio.subprocess.PIPE, env={**os.environ}
        )
        assert self.proc.stdout is not None
        line = await self.proc.stdout.readline()  # "ready" once it serves
        assert line.strip() == b"ready", line

    async def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        await self.proc.wait()

    async def ensure_dead(self) -> None:
        """Whatever happened in the test, leave no controller behind."""
        if self.proc is not None and self.proc.returncode is None:
            self.proc.kill()
            await self.proc.wait()

    async def stop(self) -> None:
        assert self.proc is not None
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
            assert await self.proc.wait() == 0


async def _drive(van: MqttVan, done: asyncio.Event) -> None:
    while True:
        order = van.van.order
        if order is not None and van.van.reached == len(order.nodes) - 1:
            done.set()
            return
        if not await van.drive(1):
            van.changed.clear()
            with contextlib.suppress(TimeoutError):  # re-check after half a second anyway
                await asyncio.wait_for(van.changed.wait(), 0.5)
        await asyncio.sleep(0.25)  # a van takes time between stops


@pytest.mark.slow
def test_kill_9_at_random_moments_loses_nothing_and_sends_nothing_twice(
    mosquitto: BrokerEndpoint, tmp_path: Path
) -> None:
    db = tmp_path / "fleet.db"
    rng = random.Random(20261123)

    controller = ControllerProcess(mosquitto, db)

    async def run() -> StatusResult:
        try:
            async with asyncio.timeout(90):
                return await scenario()
        finally:
            await controller.ensure_dead()

    async def scenario() -> StatusResult:
        await controller.start()
        vans = {
            v: MqttVan(
                ProtocolVan(v, lon=plans.ROSTER[v][0], lat=plans.ROSTER[v][1]),
                mosquitto.host,
                mosquitto.port,
                mosquitto.topics,
                ex.MASTER_SECRET,
            )
            for v in ("WH-PORTO-01", "ST-A-01")
        }
        address = BrokerAddress(mosquitto.host, mosquitto.port)
        async with vans["WH-PORTO-01"] as lh, vans["ST-A-01"] as lm:
            beats = [asyncio.create_task(v.heartbeat(0.2)) for v in (lh, lm)]
            async with ControllerClient(address, topics=mosquitto.topics) as client:
                await client.request(DispatchBody(plan={"name": "day"}, orders_csv=""))
            finished = {v: asyncio.Event() for v in vans}
            drivers = [asyncio.create_task(_drive(vans[v], finished[v])) for v in vans]
            for _ in range(KILLS):
                await asyncio.sleep(rng.uniform(0.05, 0.6))  # a random moment to crash
                await controller.kill()
                await asyncio.sleep(rng.uniform(0.0, 0.3))
                await controller.start()
            await asyncio.gather(*(e.wait() for e in finished.values()))
            await asyncio.gather(*drivers)
            async with ControllerClient(address, topics=mosquitto.topics) as client:
                while True:
                    status = await client.request(StatusBody())
                    assert isinstance(status, StatusResult)
                    if status.parcels_by_status.get("delivered") == 4:
                        break
                    await asyncio.sleep(0.1)  # the last states are on their way
            for beat in beats:
                beat.cancel()
            await controller.stop()
            for van in vans.values():
                assert OrderVerdict.REJECTED not in van.van.decisions, van.van.errors
                seen: dict[tuple[str, int], object] = {}
                for order in van.orders:
                    key = (order.order_id, order.order_update_id)
                    content = (order.nodes, order.edges)
                    assert seen.setdefault(key, content) == content, f"{key} sent with two contents"
                assert van.rejected == []  # every re-send was freshly signed, none replayed
            return status

    status = asyncio.run(run())
    assert status.parcels_by_status == {"delivered": 4}
    with SqliteStore(db) as store:
        kinds = [e.kind for e in store.events(limit=10_000)]
    assert kinds.count("controller_started") == KILLS + 1
    assert kinds.count("parcel_delivered") == 4
