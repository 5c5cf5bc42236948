"""Drives a ControllerCore against protocol-level vans, in simulated time (no broker)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime, time
from pathlib import Path
from zoneinfo import ZoneInfo

from fleet.control.config import ControllerConfig
from fleet.control.core import ControllerCore, Output, ReplanRequest, check_plan
from fleet.model import Parcel, Plan, VanSpec, load_van_spec
from fleet.protocol import InstantActions, Order, OrderVerdict
from fleet.store import Changes, EventRecord, Snapshot
from tests.support import plans
from tests.support.protocol_van import ProtocolVan

VAN_FILE = Path(__file__).resolve().parents[2] / "configs" / "van.toml"
START_S = datetime.combine(plans.DAY, time(6, 0), tzinfo=ZoneInfo(plans.TIMEZONE)).timestamp()

Verify = Callable[[Plan, Sequence[Parcel]], list[str]]


def accept_all(plan: Plan, parcels: Sequence[Parcel]) -> list[str]:
    return []


class Harness:
    def __init__(
        self,
        *,
        verify: Verify = accept_all,
        config: ControllerConfig | None = None,
        snapshot: Snapshot | None = None,
        now_s: float = START_S,
        vans: dict[str, ProtocolVan] | None = None,
        roster: dict[str, tuple[float, float]] | None = None,
        van_spec: VanSpec | None = None,
    ) -> None:
        self.now_s = now_s
        self.config = config or ControllerConfig(release_ahead_stops=1)
        self.verify = verify
        self.core = ControllerCore(
            config=self.config,
            van=van_spec or load_van_spec(VAN_FILE),
            roster=roster or plans.ROSTER,
            snapshot=snapshot,
            now_s=now_s,
        )
        self.vans = vans or {
            v: ProtocolVan(v, lon=xy[0], lat=xy[1]) for v, xy in (roster or plans.ROSTER).items()
        }
        self.changes: list[Changes] = []
        self.replans: list[ReplanRequest] = []
        self.orders: list[Order] = []
        self.instants: list[InstantActions] = []
        self.verdicts: list[tuple[str, OrderVerdict]] = []
        self.connected = set(self.vans)
        self.pump()

    @property
    def events(self) -> list[EventRecord]:
        return [e for c in self.changes for e in c.events]

    def kinds(self) -> list[str]:
        return [e.kind for e in self.events]

    def pump(self) -> Output:
        out = self.core.drain()
        self.changes.append(out.changes)
        self.replans.extend(out.replans)
        for send in out.sends:
            if send.van_id not in self.connected:
                continue
            van = self.vans[send.van_id]
            if isinstance(send.message, Order):
                self.orders.append(send.message)
                self.verdicts.append((send.van_id, van.receive_order(send.message)))
            else:
                self.instants.append(send.message)
                van.receive_instant(send.message)
        return out

    def dispatch(self, plan: Plan, parcels: Sequence[Parcel], plan_id: str = "P-test") -> str:
        try:
            checked = check_plan(plan, parcels, "{}", self.verify, plan_id=plan_id)
            return self.core.dispatch(checked, self.now_s)
        finally:
            self.pump()

    def report(self, *van_ids: str) -> None:
        for van_id in van_ids or tuple(self.vans):
            if van_id in self.connected:
                self.core.on_state(van_id, self.vans[van_id].state(self.now_s), self.now_s)
        self.pump()

    def drive(self, van_id: str, steps: int = 1) -> None:
        """The van moves ``steps`` stops (as far as released) and reports after each."""
        for _ in range(steps):
            self.vans[van_id].step()
            self.report(van_id)

    def advance(self, seconds: float, *, report: bool = False) -> None:
        self.now_s += seconds
        if report:
            self.report()
        self.core.tick(self.now_s)
        self.pump()

    def replan_done(self, request: ReplanRequest, plan: Plan) -> None:
        parcels = list(request.parcels)
        checked = check_plan(plan, parcels, "{}", self.verify, plan_id=request.replan_id)
        self.core.replan_done(checked, self.now_s)
        self.pump()

    def orders_for(self, van_id: str) -> list[Order]:
        return [o for o in self.orders if o.van_id == van_id]
