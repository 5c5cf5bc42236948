#!/usr/bin/env python3
"""Disrupted days: whole-fleet re-planning against per-depot re-planning (issue 18).

    python benchmarks/disruption.py                       # the default set (small, ~10 min)
    python benchmarks/disruption.py --scenarios demo normal --seeds 1 2 --full-days 2

Every day is run in the fast mode twice in this process, from the same parcels: once with
``sharing = "fleet"`` (any van in service may serve a station's doors, in the morning plan
and in every re-plan) and once with ``sharing = "depot"`` (each station's own vans only: the
planner before issue 18). The days are the shipped scenarios named by ``--scenarios`` and
days generated on the small Porto Alegre site, one per kind of disruption and seed:

* ``breakdown``: the busiest van breaks down at 10:00;
* ``closure``: the roads within 600 m of a station close 09:30–13:00;
* ``urgent``: a surge of urgent orders 08:00–11:00 (2 h windows);
* ``double``: one station's demand doubled (every parcel nearest to it ordered twice);
* ``mixed``: a breakdown and a closure on the same day.

Then ``--full-days`` of those days (the first ones generated) run in the full stack too
(whole-fleet sharing), and their KPIs are compared with the fast run's (the tolerance of
``sim.kpi.Tolerance``, docs/simulator.md).

Figures (docs/simulator.md, "Disruption benchmark", defines each precisely):

* ``failed_with_idle_vans``: parcels failed ``not_enough_vans`` although a van that never
  broke down could, after its last drive of the day, have left its depot, fetched the parcel
  at the warehouse, delivered it in its window and been back by the end of the day within
  the charge it last reported;
* ``urgent_on_time_pct``: urgent orders delivered in their window, of those a van leaving
  the warehouse when the order arrived could have met;
* ``breakdown_recovered_pct``: parcels of broken-down vans that got aboard another van or
  were delivered by one; ``recovery_p95_s``: 95th percentile of the time from a breakdown
  until its last parcel is aboard another van (a breakdown not fully recovered counts as
  never: the figure is then null if it falls in the top 5 %); ``breakdowns``,
  ``breakdowns_by_rescue_trip`` (some of its parcels taken over where the van stood, by a
  rescue trip) and ``breakdowns_via_depot`` (recovered, none by a rescue trip);
* ``on_time_pct``: parcels delivered on time, of all parcels of all days;
* ``modes_agree``: every full-stack day agrees with its fast run; ``integrity_faults``:
  parcels delivered twice, delivered by a van that never loaded them, loaded where they were
  not, and lost, summed over every run (both sharings, both modes).

The last line is one JSON object with those keys, the same keys under ``per_depot``,
``on_time_pct_disrupted`` (days with a disruption only) and ``morning_plan_km`` /
``morning_plan_served`` (the morning plans) for both, and ``morning_km_vs_per_depot_pct``
(the whole-fleet morning plans' km against the per-depot ones; they may deliver more).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import argparse
import dataclasses
import json
import math
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from rich.console import Console
from rich.table import Table

from fleet.errors import RoadError
from fleet.model import NodeId, Parcel, ParcelId
from fleet.planning.borrow import Sharing
from fleet.roads import RoadNetwork, load_network
from sim.day import PreparedDay, prepare_day
from sim.demand import DayDemand, day_demand
from sim.fast import FastRun
from sim.full import FullRun
from sim.kpi import Kpis, compare_kpis, compute_kpis
from sim.scenario import Scenario, load_scenario, resolve_scenario
from sim.trace import ParcelInfo, Trace

REPO = Path(__file__).resolve().parent.parent
KINDS = ("breakdown", "closure", "urgent", "double", "mixed")


@dataclass(frozen=True)
class DaySpec:
    name: str
    scenario: Scenario
    disrupted: bool
    double_station: str | None = None  # the station whose demand is doubled


@dataclass
class Figures:
    """One run's contribution to the totals."""

    kpis: Kpis
    failed_with_idle_vans: int
    urgent_meetable: int
    urgent_meetable_on_time: int


@dataclass
class Totals:
    days: int = 0
    parcels: int = 0
    on_time: int = 0
    parcels_disrupted: int = 0
    on_time_disrupted: int = 0
    failed_with_idle_vans: int = 0
    urgent_meetable: int = 0
    urgent_on_time: int = 0
    breakdown_parcels: int = 0
    breakdown_recovered: int = 0
    recoveries_s: list[float] = field(default_factory=list)
    by_rescue_trip: int = 0  # breakdowns whose parcels went (some or all) by a rescue trip
    via_depot: int = 0  # breakdowns recovered only via the depot
    integrity: int = 0
    morning_km: float = 0.0  # the morning plans' km (all vans)
    morning_served: int = 0  # and the parcels they deliver

    def add(self, f: Figures, disrupted: bool, day: PreparedDay) -> None:
        k = f.kpis
        self.morning_km += day.plan.summary.dist_m / 1000.0
        self.morning_served += day.plan.summary.served
        self.days += 1
        self.parcels += k.parcels
        self.on_time += k.on_time
        if disrupted:
            self.parcels_disrupted += k.parcels
            self.on_time_disrupted += k.on_time
        self.failed_with_idle_vans += f.failed_with_idle_vans
        self.urgent_meetable += f.urgent_meetable
        self.urgent_on_time += f.urgent_meetable_on_time
        for b in k.breakdowns:
            self.breakdown_parcels += b.parcels
            self.breakdown_recovered += b.recovered
            self.recoveries_s.append(b.recovery_s if b.recovery_s is not None else math.inf)
            if b.transferred:
                self.by_rescue_trip += 1
            elif b.recovered:
                self.via_depot += 1
        self.integrity += integrity_faults(k)

    def figures(self) -> dict[str, object]:
        p95: float | None = None
        if self.recoveries_s:
            v = float(np.percentile(np.asarray(self.recoveries_s), 95, method="higher"))
            p95 = None if math.isinf(v) else round(v, 1)
        return {
            "days": self.days,
            "failed_with_idle_vans": self.failed_with_idle_vans,
            "urgent_on_time_pct": _pct(self.urgent_on_time, self.urgent_meetable),
            "breakdown_recovered_pct": _pct(self.breakdown_recovered, self.breakdown_parcels),
            "recovery_p95_s": p95,
            "breakdowns": len(self.recoveries_s),
            "breakdowns_by_rescue_trip": self.by_rescue_trip,
            "breakdowns_via_depot": self.via_depot,
            "on_time_pct": _pct(self.on_time, self.parcels),
            "on_time_pct_disrupted": _pct(self.on_time_disrupted, self.parcels_disrupted),
            "morning_plan_km": round(self.morning_km, 1),
            "morning_plan_served": self.morning_served,
        }


def _pct(part: int, whole: int) -> float | None:
    return round(100.0 * part / whole, 2) if whole else None


def integrity_faults(k: Kpis) -> int:
    return k.delivered_twice + k.delivered_unloaded + k.loaded_unavailable + k.lost


# -- the days ---------------------------------------------------------------------------------


GENERATED = """\
[scenario]
name = "{name}"
description = "{description}"
site = "{site}"
van = "{van}"
day = "2026-11-24"
seed = {seed}

[run]
start = "06:00"
end = "18:00"
plan_time_limit_s = {plan_s}
replan_time_limit_s = {replan_s}
speedup = 600.0
state_period_s = 30.0
order_batch_s = 900

[fleet]
warehouse_vans = 1
station_vans = 2

[demand]
parcels = {parcels}
weight_kg = {{ kind = "lognormal", median = 3.0, sigma = 0.8, min = 0.2, max = 25.0 }}
volume_m3 = {{ kind = "lognormal", median = 0.015, sigma = 0.7, min = 0.001, max = 0.2 }}
window_share = 0.25
window_slots = ["09:00-12:00", "10:00-13:00"]
late_share = {late_share}
late_from = "08:00"
late_until = "11:00"
urgent_share = {urgent_share}
urgent_within_s = 7200
road_classes = ["residential", "living_street", "unclassified", "tertiary"]
address_offset_m = 5.0
{events}"""

BREAKDOWN = """
[[events]]
at = "10:00"
kind = "breakdown"
van = "busiest"
recovery_s = 1800
"""

CLOSURE = """
[[events]]
at = "09:30"
kind = "road_closure"
center = [{lon}, {lat}]
radius_m = 600
until = "13:00"
"""


def generated_days(
    kind: str, seed: int, parcels: int, plan_s: float, replan_s: float, work: Path
) -> DaySpec:
    site_file = REPO / "configs" / "sites" / "poa.toml"
    # a closure near (not on) a station: Moinhos de Vento, 600 m east of it
    events = {
        "breakdown": BREAKDOWN,
        "closure": CLOSURE.format(lon=-51.1950, lat=-30.0261),
        "urgent": "",
        "double": "",
        "mixed": BREAKDOWN + CLOSURE.format(lon=-51.1950, lat=-30.0261),
    }[kind]
    urgent = kind == "urgent"
    text = GENERATED.format(
        name=f"gen_{kind}_s{seed}",
        description=f"generated: {kind}",
        site=site_file,
        van=REPO / "configs" / "van.toml",
        seed=seed,
        plan_s=plan_s,
        replan_s=replan_s,
        parcels=parcels,
        late_share=0.3 if urgent else 0.05,
        urgent_share=0.8 if urgent else 0.5,
        events=events,
    )
    path = work / f"gen_{kind}_s{seed}.toml"
    path.write_text(text, encoding="utf-8")
    sc = load_scenario(path)
    return DaySpec(
        sc.name, sc, disrupted=True, double_station="ST-MOINHOS" if kind == "double" else None
    )


def doubled(demand: DayDemand, scenario: Scenario, station: str) -> DayDemand:
    """Every parcel whose nearest station (straight line) is ``station`` ordered twice."""
    st = {s.id: (s.lon, s.lat) for s in scenario.site.stations}

    def nearest(p: Parcel) -> str:
        return min(st, key=lambda s: (st[s][0] - p.lon) ** 2 + (st[s][1] - p.lat) ** 2)

    parcels, info = list(demand.parcels), list(demand.info)
    for p, i in zip(demand.parcels, demand.info, strict=True):
        if nearest(p) == station:
            pid = ParcelId(f"{p.id}-2")
            parcels.append(dataclasses.replace(p, id=pid))
            info.append(dataclasses.replace(i, id=pid))
    return DayDemand(tuple(parcels), tuple(info))


def prepare(
    spec: DaySpec, sharing: Sharing, net: RoadNetwork, iterations: int | None
) -> PreparedDay:
    sc = dataclasses.replace(
        spec.scenario, run=dataclasses.replace(spec.scenario.run, sharing=sharing)
    )
    demand = day_demand(sc, net)
    if spec.double_station is not None:
        demand = doubled(demand, sc, spec.double_station)
    return prepare_day(sc, net=net, demand=demand, max_iterations=iterations)


# -- the figures the KPIs do not have -----------------------------------------------------------


def extra_figures(day: PreparedDay, trace: Trace, kpis: Kpis) -> Figures:
    sc, net, van = day.scenario, day.net, day.scenario.van
    info: dict[ParcelId, ParcelInfo] = dict(trace.parcels)
    wh = sc.site.warehouse
    depot_node = {d.id: net.snap(d.lon, d.lat).node for d in sc.site.depots}
    wh_node = depot_node[wh.id]
    failed = [f.parcel for f in trace.failed if f.reason == "not_enough_vans"]
    urgent = [i for i in info.values() if i.urgent]
    doors: dict[ParcelId, NodeId] = {}
    for pid in {*failed, *(i.id for i in urgent)}:
        i = info[pid]
        try:
            doors[pid] = net.snap(i.lon, i.lat).node
        except RoadError:  # an address no van can reach counts for neither figure
            continue
    nodes = list(dict.fromkeys([*depot_node.values(), *doors.values()]))
    m = net.matrix(nodes, nodes)
    at = {n: k for k, n in enumerate(nodes)}

    def dist(a: NodeId, b: NodeId) -> float:
        return float(m.dist_m[at[a], at[b]])

    def dur(a: NodeId, b: NodeId) -> float:
        return float(m.time_s[at[a], at[b]])

    # urgent orders a van leaving the warehouse when the order arrived could have met
    delivered_at: dict[ParcelId, float] = {}
    for d in trace.delivered:
        delivered_at.setdefault(d.parcel, d.t_s)
    meetable = on_time = 0
    for i in urgent:
        if i.id not in doors or i.latest_s is None:
            continue
        arrive = i.ordered_s + van.depot_load_s + dur(wh_node, doors[i.id])
        if arrive > i.latest_s:
            continue
        meetable += 1
        t = delivered_at.get(i.id)
        if t is not None and t <= i.latest_s and (i.earliest_s is None or t >= i.earliest_s):
            on_time += 1
    # parcels failed for want of a van while a van had time, range and room
    broken = {b.van for b in trace.breakdowns}
    last_end: dict[str, float] = {}
    for dr in trace.drives:
        last_end[dr.van] = max(last_end.get(dr.van, 0.0), dr.t1_s)
    last_soc: dict[str, tuple[float, float]] = {}
    for s in trace.soc:
        if s.t_s >= last_soc.get(s.van, (-1.0, 0.0))[0]:
            last_soc[s.van] = (s.t_s, s.soc_pct)
    per_m = van.energy_per_m_kwh
    idle = 0
    for pid in failed:
        i = info[pid]
        if pid not in doors:
            continue
        door = doors[pid]
        late = i.latest_s if i.latest_s is not None else sc.run.end_s
        service = van.door_stop_s + van.per_parcel_s
        for vid, depot in trace.vans.items():
            if vid in broken:
                continue
            home = depot_node[depot]
            leave = max(last_end.get(vid, sc.run.start_s), i.ordered_s, sc.run.start_s)
            at_door = leave + dur(home, wh_node) + van.depot_load_s + dur(wh_node, door)
            begin = max(at_door, i.earliest_s or 0)
            back = begin + service + dur(door, home)
            km = dist(home, wh_node) + dist(wh_node, door) + dist(door, home)
            soc = last_soc.get(vid, (0.0, 100.0))[1]
            usable = van.battery_kwh * (soc - van.range_reserve_pct) / 100.0
            if at_door <= late and back <= sc.run.end_s and km * per_m <= usable:
                idle += 1
                break
    return Figures(kpis, idle, meetable, on_time)


# -- running ------------------------------------------------------------------------------------


def run_fast(day: PreparedDay) -> tuple[Trace, Kpis]:
    trace = FastRun(day).run()
    return trace, compute_kpis(trace, day.scenario.van)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--scenarios", nargs="*", default=["poa_small", "demo"])
    ap.add_argument("--kinds", nargs="*", default=list(KINDS), choices=KINDS)
    ap.add_argument("--seeds", nargs="*", type=int, default=[1])
    ap.add_argument("--parcels", type=int, default=120, help="parcels of a generated day")
    ap.add_argument("--full-days", type=int, default=2, help="days also run in the full stack")
    ap.add_argument("--plan-s", type=float, default=3.0)
    ap.add_argument("--replan-s", type=float, default=1.0)
    ap.add_argument("--iterations", type=int, default=None, help="cap each search (repeatable)")
    args = ap.parse_args(argv)
    console = Console(width=160)
    work = Path(tempfile.mkdtemp(prefix="fleet-disruption-"))
    specs: list[DaySpec] = []
    for seed in args.seeds:
        for kind in args.kinds:
            specs.append(generated_days(kind, seed, args.parcels, args.plan_s, args.replan_s, work))
    for name in args.scenarios:
        for seed in args.seeds:
            sc = load_scenario(resolve_scenario(name))
            sc = dataclasses.replace(sc, seed=seed)
            specs.append(DaySpec(f"{name}_s{seed}", sc, disrupted=bool(sc.events)))
    nets: dict[str, RoadNetwork] = {}
    totals = {s: Totals() for s in Sharing}
    rows: list[list[str]] = []
    fast_fleet: dict[str, tuple[PreparedDay, Kpis]] = {}
    t_all = time.monotonic()
    for spec in specs:
        site = spec.scenario.site
        if site.name not in nets:
            console.print(f"[dim]road network of {site.name} …[/dim]")
            nets[site.name] = load_network(site, spec.scenario.van)
        for sharing in (Sharing.FLEET, Sharing.DEPOT):
            t0 = time.monotonic()
            day = prepare(spec, sharing, nets[site.name], args.iterations)
            trace, kpis = run_fast(day)
            f = extra_figures(day, trace, kpis)
            totals[sharing].add(f, spec.disrupted, day)
            if sharing is Sharing.FLEET:
                fast_fleet[spec.name] = (day, kpis)
            rec = [b for b in kpis.breakdowns]
            rows.append(
                [
                    spec.name,
                    sharing.value,
                    str(kpis.parcels),
                    str(kpis.delivered),
                    f"{kpis.on_time_pct:.1f}",
                    str(kpis.failed_by_reason.get("not_enough_vans", 0)),
                    str(f.failed_with_idle_vans),
                    f"{f.urgent_meetable_on_time}/{f.urgent_meetable}",
                    ", ".join(
                        f"{b.recovered}/{b.parcels} "
                        + (f"{b.recovery_s / 60:.0f} min" if b.recovery_s is not None else "never")
                        + (f" ({b.transferred} by rescue trip)" if b.transferred else " (depot)")
                        for b in rec
                    )
                    or "–",
                    str(kpis.replans),
                    str(integrity_faults(kpis)),
                    f"{time.monotonic() - t0:.0f}",
                ]
            )
            console.print(" | ".join(rows[-1]))  # each run as it ends
    # a sample of the days in the full stack
    agree: list[bool] = []
    full_rows: list[list[str]] = []
    full_integrity = 0
    for spec in specs[: max(0, args.full_days)]:
        day, fast_kpis = fast_fleet[spec.name]
        t0 = time.monotonic()
        trace = FullRun(day).run()
        kpis = compute_kpis(trace, day.scenario.van)
        diffs = compare_kpis(fast_kpis, kpis)
        agree.append(not diffs)
        full_integrity += integrity_faults(kpis)
        full_rows.append(
            [
                spec.name,
                f"{fast_kpis.delivered} / {kpis.delivered}",
                f"{fast_kpis.on_time} / {kpis.on_time}",
                f"{integrity_faults(fast_kpis)} / {integrity_faults(kpis)}",
                str(kpis.messages_lost),
                "yes" if not diffs else "; ".join(diffs)[:120],
                f"{time.monotonic() - t0:.0f}",
            ]
        )
    table = Table(title="Disrupted days, fast mode: whole-fleet against per-depot sharing")
    for col in (
        "day",
        "sharing",
        "parcels",
        "delivered",
        "on time %",
        "no van",
        "no van, idle vans",
        "urgent on time",
        "breakdowns recovered",
        "re-plans",
        "integrity",
        "wall s",
    ):
        table.add_column(col)
    for r in rows:
        table.add_row(*r)
    console.print(table)
    if full_rows:
        ft = Table(title="Full stack against fast mode (whole-fleet sharing)")
        for col in ("day", "delivered", "on time", "integrity", "msgs lost", "agree", "wall s"):
            ft.add_column(col)
        for r in full_rows:
            ft.add_row(*r)
        console.print(ft)
    out: dict[str, object] = dict(totals[Sharing.FLEET].figures())
    out["per_depot"] = totals[Sharing.DEPOT].figures()
    out["modes_agree"] = all(agree) if agree else None
    out["full_stack_days"] = len(agree)
    out["integrity_faults"] = (
        totals[Sharing.FLEET].integrity + totals[Sharing.DEPOT].integrity + full_integrity
    )
    depot_km = totals[Sharing.DEPOT].morning_km
    out["morning_km_vs_per_depot_pct"] = (
        round(100.0 * (totals[Sharing.FLEET].morning_km / depot_km - 1.0), 2) if depot_km else None
    )
    out["wall_s"] = round(time.monotonic() - t_all, 1)
    print(json.dumps(out, sort_keys=True))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
