"""The planner, bound to one site, van and road network: what the controller service needs.

Reading a dispatched plan and its orders file, verifying it with the independent verifier,
reading urgent parcels, and re-planning (``fleet.planning.replan``). Each of these takes
from milliseconds to seconds; the service runs them in worker threads.
"""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

from fleet.control.core import CheckedPlan, ReplanRequest, check_plan
from fleet.control.orders import epoch_to_local
from fleet.errors import InputError
from fleet.model import Parcel, Site, VanSpec
from fleet.planning.borrow import Sharing
from fleet.planning.engine import van_ids
from fleet.planning.orders import parse_orders
from fleet.planning.plan_io import plan_from_json, plan_to_json
from fleet.planning.replan import replan
from fleet.planning.verify import verify_plan
from fleet.protocol import format_timestamp
from fleet.protocol.control_api import AddParcelsBody, DispatchBody
from fleet.roads import RoadNetwork


def _canonical(document: object) -> str:
    return json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


class SitePlanning:
    def __init__(
        self,
        site: Site,
        van: VanSpec,
        net: RoadNetwork,
        *,
        replan_time_limit_s: float = 10.0,
        seed: int = 1,
        sharing: Sharing = Sharing.FLEET,
        workers: int | None = None,
        transfer: bool = False,
    ) -> None:
        """``sharing``: whether a re-plan may lend any van to a station short of vans
        (``fleet``) or keeps each station to its own (``depot``); see
        :mod:`fleet.planning.borrow`. ``workers``: parallel searches per re-plan (default:
        every core, in worker processes; 1: one search in the calling thread). ``transfer``:
        whether a re-plan may send a rescue trip to take a broken-down van's load over where
        it stands (docs/plan.md, "Breakdowns"), else its load goes via its depot. Off by
        default: only the fast simulator moves a load between two vans today (the bridge
        has no way yet to hand a broken-down van's load over; docs/controller.md)."""
        self.site = site
        self.van = van
        self.net = net
        self.replan_time_limit_s = replan_time_limit_s
        self.seed = seed
        self.sharing = sharing
        self.workers = workers
        self.transfer = transfer

    def load_dispatch(self, body: DispatchBody) -> CheckedPlan:
        plan = plan_from_json(body.plan, Path("plan.json"))
        if plan.site != self.site.name:
            raise InputError(
                f"plan.json is for site {plan.site!r}; this controller runs {self.site.name!r}"
            )
        orders = parse_orders(
            body.orders_csv.splitlines(keepends=True),
            Path(body.orders_name),
            self.site,
            day=plan.day,
        )
        return check_plan(
            plan,
            orders.parcels,
            _canonical(body.plan),
            lambda p, parcels: verify_plan(p, parcels, self.site, self.van, self.net),
        )

    def parse_parcels(self, body: AddParcelsBody, day: date) -> list[Parcel]:
        orders = parse_orders(
            body.orders_csv.splitlines(keepends=True), Path(body.orders_name), self.site, day=day
        )
        orders.require_clean()
        return list(orders.parcels)

    def replan(self, request: ReplanRequest) -> CheckedPlan:
        """``fleet.planning.replan`` returns only plans its verifier accepted."""
        to_local = epoch_to_local(request.day, request.timezone)
        plan = replan(
            request.parcels,
            request.vans,
            self.site,
            self.van,
            self.net,
            now_s=to_local(request.now_s),
            parcel_location=request.parcel_location,
            at_station=request.at_station,
            ready_at={pid: to_local(t) for pid, t in request.ready_at.items()},
            recovered_at={pid: to_local(t) for pid, t in request.recovered_at.items()},
            time_limit_s=self.replan_time_limit_s,
            seed=self.seed,
            day=request.day,
            created_utc=format_timestamp(request.now_s),
            sharing=self.sharing,
            workers=self.workers,
            transfer_from=request.transfer_from if self.transfer else (),
        )
        return CheckedPlan(
            plan, request.parcels, request.replan_id, _canonical(plan_to_json(plan)), ()
        )


def site_roster(site: Site) -> dict[str, tuple[float, float]]:
    """Every van of the site (``{depot}-{k:02d}``) and its home depot's lon/lat."""
    return {
        van_id: (depot.lon, depot.lat)
        for depot in site.depots
        for van_id in van_ids(depot.id, depot.vans)
    }
