"""Running a ControllerService in a test, against a real broker, with a plan book for a planner."""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

from fleet.control.config import ControllerConfig
from fleet.control.core import CheckedPlan, ReplanRequest, check_plan
from fleet.control.keys import MasterKey
from fleet.control.service import ControllerService
from fleet.errors import InputError
from fleet.model import Parcel, ParcelId, Plan, load_van_spec
from fleet.mqtt import BrokerAddress
from fleet.protocol.clock import WallClock
from fleet.protocol.control_api import AddParcelsBody, DispatchBody
from fleet.store import SqliteStore
from tests.control.harness import VAN_FILE, accept_all
from tests.support import plans
from tests.support.brokers import BrokerEndpoint
from tests.support.protocol_examples import MASTER_SECRET


@dataclass
class PlanBook:
    """A planner stand-in: a dispatch names a plan of the book (``{"name": ...}``)."""

    plans: dict[str, tuple[Plan, Sequence[Parcel]]] = field(default_factory=dict)
    verify: Callable[[Plan, Sequence[Parcel]], list[str]] = accept_all
    replanner: Callable[[ReplanRequest], Plan] | None = None
    requests: list[ReplanRequest] = field(default_factory=list)

    def load_dispatch(self, body: DispatchBody) -> CheckedPlan:
        name = body.plan.get("name")
        if not isinstance(name, str) or name not in self.plans:
            raise InputError(f"plan.json: no plan named {name!r}")
        plan, parcels = self.plans[name]
        return check_plan(plan, parcels, json.dumps(body.plan, sort_keys=True), self.verify)

    def parse_parcels(self, body: AddParcelsBody, day: date) -> list[Parcel]:
        out = []
        for line in body.orders_csv.splitlines()[1:]:
            pid, lon, lat, kg, m3 = line.split(",")
            out.append(Parcel(ParcelId(pid), float(lon), float(lat), float(kg), float(m3)))
        return out

    def replan(self, request: ReplanRequest) -> CheckedPlan:
        self.requests.append(request)
        if self.replanner is None:
            raise InputError("this test has no planner")
        plan = self.replanner(request)
        return check_plan(plan, request.parcels, "{}", self.verify, plan_id=request.replan_id)


def day_book() -> PlanBook:
    return PlanBook({"day": (plans.plan(), plans.parcels())})


@contextlib.asynccontextmanager
async def running_controller(
    broker: BrokerEndpoint,
    db: Path,
    book: PlanBook,
    *,
    config: ControllerConfig | None = None,
) -> AsyncIterator[ControllerService]:
    store = SqliteStore(db)
    service = ControllerService(
        address=BrokerAddress(broker.host, broker.port),
        store=store,
        config=config
        or ControllerConfig(name=f"ctl-{broker.prefix.split('/')[1]}", release_ahead_stops=1),
        van=load_van_spec(VAN_FILE),
        roster=plans.ROSTER,
        clock=WallClock(),
        master_key=MasterKey(MASTER_SECRET),
        planning=book,
        topics=broker.topics,
    )
    task = asyncio.create_task(service.run(), name="controller")
    try:
        async with asyncio.timeout(10):
            await service.ready.wait()
        yield service
    finally:
        service.stop()
        await task
        store.close()


class ControllerThread:
    """A controller on its own event loop in a thread, for tests that run the CLI as a process."""

    def __init__(
        self,
        broker: BrokerEndpoint,
        db: Path,
        book: PlanBook,
        config: ControllerConfig | None = None,
    ) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._context = running_controller(broker, db, book, config=config)
        self.service: ControllerService | None = None

    def __enter__(self) -> ControllerThread:
        self._thread.start()
        future = asyncio.run_coroutine_threadsafe(self._context.__aenter__(), self._loop)
        self.service = future.result(30)
        return self

    def __exit__(self, *exc: object) -> None:
        future = asyncio.run_coroutine_threadsafe(
            self._context.__aexit__(None, None, None), self._loop
        )
        future.result(30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(30)
        self._loop.close()
