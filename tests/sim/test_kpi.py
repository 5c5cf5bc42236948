"""KPIs from a hand-made trace: each figure is what its definition says."""

from __future__ import annotations

from pathlib import Path

import pytest

from fleet.model import DepotId, ParcelId, VanId, VanSpec, load_van_spec
from sim.kpi import Tolerance, compare_kpis, compute_kpis
from sim.trace import (
    BreakdownRecord,
    Delivered,
    Departure,
    Drive,
    Loaded,
    ParcelInfo,
    Replan,
    SocSample,
    Trace,
    Unloaded,
)

A, B = VanId("ST-1-01"), VanId("ST-1-02")
ST = DepotId("ST-1")


def _p(
    i: int, earliest: int | None = None, latest: int | None = None, urgent: bool = False
) -> ParcelInfo:
    return ParcelInfo(ParcelId(f"P{i}"), 0.0, 0.0, 10.0, 0.1, earliest, latest, 0, urgent)


def _trace() -> Trace:
    tr = Trace(scenario="t", mode="fast", seed=1, start_s=0.0, end_s=20_000.0)
    tr.vans = {A: ST, B: ST}
    tr.add_parcels([_p(1, 1000, 2000), _p(2, None, 3000, urgent=True), _p(3), _p(4), _p(5)])
    for i in (1, 2, 3, 4):
        tr.loaded.append(Loaded(100.0, A, ParcelId(f"P{i}"), ST))
    tr.departures.append(Departure(A, 100.0, 40.0, 0.4, 4))
    tr.drives.append(Drive(A, 100.0, 500.0, 4000.0, 1.2, 4, ()))
    tr.delivered.append(Delivered(1500.0, A, ParcelId("P1")))  # on time
    tr.delivered.append(Delivered(3500.0, A, ParcelId("P2")))  # late by 500 s
    tr.soc.append(SocSample(A, 3500.0, 80.0))
    # A breaks down with P3, P4 aboard; they go back to the station and B takes them
    tr.breakdowns.append(BreakdownRecord(4000.0, A, 0.0, 0.0, (ParcelId("P3"), ParcelId("P4"))))
    for i in (3, 4):
        tr.unloaded.append(Unloaded(5800.0, A, ParcelId(f"P{i}"), ST, "breakdown"))
    tr.replans.append(Replan(4000.0, "breakdown", "A", 2))
    tr.loaded.append(Loaded(6000.0, B, ParcelId("P3"), ST))
    tr.loaded.append(Loaded(6100.0, B, ParcelId("P4"), ST))
    tr.departures.append(Departure(B, 6100.0, 20.0, 0.2, 2))
    tr.drives.append(Drive(B, 6100.0, 6500.0, 6000.0, 1.8, 2, ()))
    tr.drives.append(Drive(B, 7000.0, 7500.0, 2000.0, 0.6, 0, ()))
    tr.soc.append(SocSample(B, 7500.0, 55.5))
    tr.delivered.append(Delivered(6500.0, B, ParcelId("P3")))
    tr.delivered.append(Delivered(6600.0, B, ParcelId("P4")))
    tr.finish(20_000.0, {ParcelId("P5"): ("too_heavy", "P5 weighs too much")})
    return tr


@pytest.fixture()
def van(van_file: Path) -> VanSpec:
    return load_van_spec(van_file)


def test_kpis_follow_their_definitions(van: VanSpec) -> None:
    k = compute_kpis(_trace(), van)
    assert (k.parcels, k.delivered, k.on_time, k.late, k.early, k.failed) == (5, 4, 3, 1, 0, 1)
    assert k.failed_by_reason == {"too_heavy": 1}
    assert (k.urgent, k.urgent_on_time, k.mean_late_by_s) == (1, 0, 500.0)
    assert (k.km_driven, k.km_loaded, k.km_empty) == (12.0, 10.0, 2.0)
    assert k.energy_kwh == pytest.approx(3.6)
    assert (k.lowest_soc_pct, k.lowest_soc_van) == (55.5, B)
    # two departures: 60 kg of 2000 kg, 0.6 m³ of 48 m³
    assert k.utilisation_kg_pct == pytest.approx(3.0)
    assert k.utilisation_m3_pct == pytest.approx(1.25)
    assert (k.vans, k.vans_used) == (2, 2)
    assert k.replans_by_cause == {"breakdown": 1}
    (rec,) = k.breakdowns
    assert (rec.parcels, rec.recovered, rec.recovery_s) == (2, 2, 2100.0)
    assert (k.delivered_twice, k.delivered_unloaded, k.lost) == (0, 0, 0)
    per = {v.van: v for v in k.per_van}
    assert per[A].delivered == 2 and per[B].delivered == 2 and per[B].km_loaded == 6.0


def test_integrity_catches_double_delivery_and_delivery_without_loading(van: VanSpec) -> None:
    tr = _trace()
    tr.delivered.append(Delivered(9000.0, B, ParcelId("P1")))  # again, and B never loaded it
    tr.delivered.append(Delivered(9100.0, B, ParcelId("P5")))  # B never loaded it
    k = compute_kpis(tr, van)
    assert k.delivered_twice == 1
    assert k.delivered_unloaded == 1  # P5 (P1's first delivery was by A, who loaded it)


def test_a_breakdown_whose_parcels_never_move_is_not_recovered(van: VanSpec) -> None:
    tr = Trace(scenario="t", mode="fast", seed=1, start_s=0.0, end_s=10_000.0)
    tr.vans = {A: ST}
    tr.add_parcels([_p(1)])
    tr.loaded.append(Loaded(10.0, A, ParcelId("P1"), ST))
    tr.breakdowns.append(BreakdownRecord(100.0, A, 0.0, 0.0, (ParcelId("P1"),)))
    tr.finish(10_000.0, {})
    k = compute_kpis(tr, van)
    assert k.breakdowns[0].recovery_s is None and k.breakdowns[0].recovered == 0
    assert k.failed_by_reason == {"stranded_on_broken_van": 1}
    assert k.lost == 0


def test_compare_within_and_beyond_tolerance(van: VanSpec) -> None:
    a = compute_kpis(_trace(), van)
    tr = _trace()
    tr.drives.append(Drive(B, 8000.0, 8010.0, 100.0, 0.03, 0, ()))  # +0.1 km of 12: < 2 %
    assert compare_kpis(a, compute_kpis(tr, van)) == []
    tr.drives.append(Drive(B, 9000.0, 9100.0, 2000.0, 0.6, 0, ()))
    diff = compare_kpis(a, compute_kpis(tr, van), Tolerance())
    assert any(line.startswith("km_driven") for line in diff)
