"""KPIs of a simulated day, computed from its :class:`sim.trace.Trace` alone.

Definitions (``docs/simulator.md`` repeats them):

* **on time**: delivered (service started at the door) inside the parcel's window, or, for a
  parcel without one, during the simulated day. **late**: after the window closed.
  **early**: before it opened (a planner or van fault; should be 0). **failed**: not delivered
  when the day ends; the reason is the planner's code or ``not_delivered`` /
  ``stranded_on_broken_van``.
* **km loaded / empty**: distance driven with at least one parcel aboard / with none.
* **energy**: kWh drawn from the batteries while driving; **charged**: kWh put back.
* **lowest SoC**: the lowest state of charge any van reported, and which van.
* **utilisation (kg, m³)**: over every departure from a depot, the load carried divided by
  the van's capacity (summed over departures, then divided), in %.
* **vans used**: vans that drove at all. **re-plans**: how many, by cause.
* **time to recover** after a breakdown: from the breakdown until the last of its parcels
  (aboard, or still due on its route) is aboard another van or delivered by one; how many
  of them a rescue trip took over where the van stood (``transferred``).
* **integrity**: parcels delivered twice, delivered by a van that never loaded them,
  parcels lost (neither delivered nor accounted as failed), and **loads of parcels that were
  not there** must all be 0. A parcel is at the warehouse from its order, aboard the van that
  loaded it, at the depot where it was unloaded (a line haul's station, or its van's depot
  after a breakdown's recovery); a load anywhere else is physically impossible, and such a
  load does not count towards recovering a breakdown. A rescue trip's transfer takes a
  parcel over from the broken-down van it is aboard, beside it.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field

from fleet.model import ParcelId, VanId, VanSpec
from sim.trace import Trace


@dataclass(frozen=True, slots=True)
class VanKpis:
    van: VanId
    km: float
    km_loaded: float
    delivered: int
    trips: int
    utilisation_kg_pct: float
    utilisation_m3_pct: float
    energy_kwh: float
    lowest_soc_pct: float


@dataclass(frozen=True, slots=True)
class Recovery:
    van: VanId
    at_s: float
    parcels: int
    recovered: int  # of those, on another van or delivered by one
    recovery_s: float | None  # None: not all of them got onto another van
    transferred: int = 0  # of those, taken over where it stood by a rescue trip


@dataclass(frozen=True, slots=True)
class Kpis:
    scenario: str
    mode: str
    parcels: int
    delivered: int
    on_time: int
    late: int
    early: int
    failed: int
    failed_by_reason: dict[str, int]
    urgent: int
    urgent_on_time: int
    mean_late_by_s: float  # over the late ones
    km_driven: float
    km_loaded: float
    km_empty: float
    energy_kwh: float
    charged_kwh: float
    lowest_soc_pct: float
    lowest_soc_van: str
    utilisation_kg_pct: float
    utilisation_m3_pct: float
    vans: int
    vans_used: int
    replans: int
    replans_by_cause: dict[str, int]
    breakdowns: tuple[Recovery, ...]
    delivered_twice: int
    delivered_unloaded: int  # delivered by a van that never loaded the parcel
    loaded_unavailable: int  # loads of a parcel that was not at that depot then
    lost: int
    messages_lost: int
    serial_frames_corrupted: int
    sim_s: float
    wall_s: float
    per_van: tuple[VanKpis, ...] = field(default=())

    @property
    def on_time_pct(self) -> float:
        return 100.0 * self.on_time / self.parcels if self.parcels else 100.0

    @property
    def speedup(self) -> float:
        return self.sim_s / self.wall_s if self.wall_s > 0 else float("inf")

    def to_json(self) -> dict[str, object]:
        out = asdict(self)
        out["on_time_pct"] = round(self.on_time_pct, 3)
        return out


def _is_on_time(t_s: float, earliest_s: int | None, latest_s: int | None, end_s: float) -> str:
    if earliest_s is not None and t_s < earliest_s:
        return "early"
    if latest_s is not None and t_s > latest_s:
        return "late"
    if latest_s is None and t_s > end_s:
        return "late"
    return "on_time"


def _valid_loads(trace: Trace) -> tuple[set[tuple[ParcelId, VanId, float]], int]:
    """Loads made where the parcel physically was (see the module docstring), and how many
    were not."""
    events: list[tuple[float, int, ParcelId, VanId, str | None]] = []
    events.extend((u.t_s, 0, u.parcel, u.van, u.depot) for u in trace.unloaded)
    events.extend(
        (ld.t_s, 1, ld.parcel, ld.van, f"van:{ld.from_van}" if ld.from_van else ld.depot)
        for ld in trace.loaded
    )
    events.extend((d.t_s, 2, d.parcel, d.van, None) for d in trace.delivered)
    events.sort(key=lambda e: (e[0], e[1]))
    where: dict[ParcelId, str] = {pid: f"depot:{trace.warehouse}" for pid in trace.parcels}
    valid: set[tuple[ParcelId, VanId, float]] = set()
    invalid = 0
    for t_s, kind, pid, van_id, depot in events:
        if kind == 0:
            where[pid] = f"depot:{depot}" if depot else "unknown"
        elif kind == 1:
            if depot is not None and where.get(pid) in (f"depot:{depot}", depot):
                valid.add((pid, van_id, t_s))
            else:
                invalid += 1
            where[pid] = f"van:{van_id}"
        else:
            where[pid] = "delivered"
    return valid, invalid


def compute_kpis(trace: Trace, van: VanSpec) -> Kpis:
    """The day's KPIs. ``trace`` must be finished (:meth:`Trace.finish`)."""
    first: dict[ParcelId, float] = {}
    count: Counter[ParcelId] = Counter()
    first_van: dict[ParcelId, VanId] = {}
    for d in sorted(trace.delivered, key=lambda d: d.t_s):
        count[d.parcel] += 1
        if d.parcel not in first:
            first[d.parcel] = d.t_s
            first_van[d.parcel] = d.van
    valid, invalid_loads = _valid_loads(trace)
    loaded_by: dict[ParcelId, set[VanId]] = defaultdict(set)
    for ld in trace.loaded:
        loaded_by[ld.parcel].add(ld.van)
    delivered_unloaded = sum(
        1 for pid, v in first_van.items() if v not in loaded_by.get(pid, set())
    )

    classes: Counter[str] = Counter()
    late_by: list[float] = []
    urgent_on_time = 0
    for pid, t_s in first.items():
        info = trace.parcels.get(pid)
        if info is None:
            classes["unknown"] += 1
            continue
        cls = _is_on_time(t_s, info.earliest_s, info.latest_s, trace.end_s)
        classes[cls] += 1
        if cls == "late":
            late_by.append(t_s - (info.latest_s if info.latest_s is not None else trace.end_s))
        if cls == "on_time" and info.urgent:
            urgent_on_time += 1

    failed_ids = {f.parcel for f in trace.failed if f.parcel not in first}
    failed_by_reason = Counter(f.reason for f in trace.failed if f.parcel not in first)
    lost = sum(1 for pid in trace.parcels if pid not in first and pid not in failed_ids)

    # distance, energy, state of charge, utilisation
    km: dict[VanId, float] = defaultdict(float)
    km_loaded: dict[VanId, float] = defaultdict(float)
    energy: dict[VanId, float] = defaultdict(float)
    for dr in trace.drives:
        km[dr.van] += dr.dist_m / 1000.0
        energy[dr.van] += dr.energy_kwh
        if dr.parcels_aboard > 0:
            km_loaded[dr.van] += dr.dist_m / 1000.0
    lowest: dict[VanId, float] = {}
    for s in trace.soc:
        if s.soc_pct < lowest.get(s.van, 101.0):
            lowest[s.van] = s.soc_pct
    load_kg: dict[VanId, float] = defaultdict(float)
    load_m3: dict[VanId, float] = defaultdict(float)
    trips: Counter[VanId] = Counter()
    for dep in trace.departures:
        load_kg[dep.van] += dep.load_kg
        load_m3[dep.van] += dep.load_m3
        trips[dep.van] += 1
    delivered_by = Counter(first_van.values())

    per_van = tuple(
        VanKpis(
            van=v,
            km=round(km[v], 3),
            km_loaded=round(km_loaded[v], 3),
            delivered=delivered_by[v],
            trips=trips[v],
            utilisation_kg_pct=_pct(load_kg[v], trips[v] * van.payload_kg),
            utilisation_m3_pct=_pct(load_m3[v], trips[v] * van.cargo_volume_m3),
            energy_kwh=round(energy[v], 4),
            lowest_soc_pct=round(lowest.get(v, 100.0), 3),
        )
        for v in sorted(trace.vans)
    )
    n_trips = sum(trips.values())
    if lowest:
        low_van = min(lowest, key=lambda v: (lowest[v], v))
        low_soc = lowest[low_van]
    else:
        low_van, low_soc = VanId(""), 100.0

    return Kpis(
        scenario=trace.scenario,
        mode=trace.mode,
        parcels=len(trace.parcels),
        delivered=len(first),
        on_time=classes["on_time"],
        late=classes["late"],
        early=classes["early"],
        failed=len(failed_ids),
        failed_by_reason=dict(sorted(failed_by_reason.items())),
        urgent=sum(1 for p in trace.parcels.values() if p.urgent),
        urgent_on_time=urgent_on_time,
        mean_late_by_s=round(sum(late_by) / len(late_by), 1) if late_by else 0.0,
        km_driven=round(sum(km.values()), 3),
        km_loaded=round(sum(km_loaded.values()), 3),
        km_empty=round(sum(km.values()) - sum(km_loaded.values()), 3),
        energy_kwh=round(sum(energy.values()), 3),
        charged_kwh=round(sum(c.energy_kwh for c in trace.charged), 3),
        lowest_soc_pct=round(low_soc, 3),
        lowest_soc_van=low_van,
        utilisation_kg_pct=_pct(sum(load_kg.values()), n_trips * van.payload_kg),
        utilisation_m3_pct=_pct(sum(load_m3.values()), n_trips * van.cargo_volume_m3),
        vans=len(trace.vans),
        vans_used=sum(1 for v in trace.vans if km[v] > 0),
        replans=len(trace.replans),
        replans_by_cause=dict(sorted(Counter(r.cause for r in trace.replans).items())),
        breakdowns=tuple(_recoveries(trace, valid)),
        delivered_twice=sum(1 for c in count.values() if c > 1),
        delivered_unloaded=delivered_unloaded,
        loaded_unavailable=invalid_loads,
        lost=lost,
        messages_lost=trace.counters.messages_lost,
        serial_frames_corrupted=trace.counters.serial_frames_corrupted,
        sim_s=trace.end_s - trace.start_s,
        wall_s=trace.wall_s,
        per_van=per_van,
    )


def _pct(part: float, whole: float) -> float:
    return round(100.0 * part / whole, 3) if whole > 0 else 0.0


def _recoveries(trace: Trace, valid: set[tuple[ParcelId, VanId, float]]) -> list[Recovery]:
    """Per breakdown: when its parcels were (physically) aboard another van."""
    out: list[Recovery] = []
    for b in trace.breakdowns:
        done: dict[ParcelId, float] = {}
        wanted = set(b.parcels)
        for pid, van_id, t_s in valid:
            if pid in wanted and van_id != b.van and t_s >= b.t_s:
                done[pid] = min(done.get(pid, t_s), t_s)
        complete = len(done) == len(wanted)
        moved = {
            ld.parcel
            for ld in trace.loaded
            if ld.from_van == b.van and ld.parcel in done and (ld.parcel, ld.van, ld.t_s) in valid
        }
        out.append(
            Recovery(
                van=b.van,
                at_s=b.t_s,
                parcels=len(wanted),
                recovered=len(done),
                recovery_s=(max(done.values(), default=b.t_s) - b.t_s) if complete else None,
                transferred=len(moved),
            )
        )
    return out


@dataclass(frozen=True, slots=True)
class Tolerance:
    """How far the two modes may differ on the same scenario and seed (docs/simulator.md).

    Counts may differ by ``count_abs`` or ``count_rel`` of the parcels, whichever is larger
    (a parcel due right at its window's edge may fall either side); distances and energy by
    ``dist_rel``; the lowest SoC by ``soc_pts`` percentage points; utilisation by
    ``util_pts``. Vans used, parcels and integrity figures must be equal.
    """

    count_abs: int = 2
    count_rel: float = 0.02
    dist_rel: float = 0.02
    soc_pts: float = 1.5
    util_pts: float = 1.5


def compare_kpis(a: Kpis, b: Kpis, tol: Tolerance | None = None) -> list[str]:
    """Differences between ``a`` and ``b`` beyond the tolerance, one line each ([] = agree)."""
    tol = tol or Tolerance()
    out: list[str] = []
    count_tol = max(tol.count_abs, tol.count_rel * max(a.parcels, 1))
    for name in ("delivered", "on_time", "late", "failed"):
        x, y = getattr(a, name), getattr(b, name)
        if abs(x - y) > count_tol:
            out.append(f"{name}: {x} vs {y} (tolerance ±{count_tol:g})")
    for name in (
        "parcels",
        "vans_used",
        "delivered_twice",
        "delivered_unloaded",
        "loaded_unavailable",
        "lost",
        "early",
    ):
        x, y = getattr(a, name), getattr(b, name)
        if x != y:
            out.append(f"{name}: {x} vs {y} (must be equal)")
    for name in ("km_driven", "km_loaded", "energy_kwh"):
        x, y = getattr(a, name), getattr(b, name)
        if abs(x - y) > tol.dist_rel * max(abs(x), abs(y), 1e-9):
            out.append(f"{name}: {x:.3f} vs {y:.3f} (tolerance ±{tol.dist_rel:.0%})")
    if abs(a.lowest_soc_pct - b.lowest_soc_pct) > tol.soc_pts:
        out.append(
            f"lowest_soc_pct: {a.lowest_soc_pct:.2f} vs {b.lowest_soc_pct:.2f} "
            f"(tolerance ±{tol.soc_pts:g} points)"
        )
    for name in ("utilisation_kg_pct", "utilisation_m3_pct"):
        x, y = getattr(a, name), getattr(b, name)
        if abs(x - y) > tol.util_pts:
            out.append(f"{name}: {x:.2f} vs {y:.2f} (tolerance ±{tol.util_pts:g} points)")
    return out
