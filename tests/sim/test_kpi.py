"""KPIs from a hand-made trace: each figure is what its definition says."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from fleet.model import DepotId, ParcelId, VanId, VanSpec, load_van_spec
from sim.kpi import Tolerance, compare_kpis, compute_kpis
from sim.trace import (
    BreakdownRecord,
    Delivered,
    Drive,
    Loaded,
    ParcelInfo,
    Trace,
)

A, B = VanId("ST-1-01"), VanId("ST-1-02")
ST = DepotId("ST-1")


@pytest.fixture()
def van(van_file: Path) -> VanSpec:
    return load_van_spec(van_file)


def _p(i: int) -> ParcelInfo:
    return ParcelInfo(ParcelId(f"P{i}"), 0.0, 0.0, 10.0, 0.1, None, None, 0, False)


def test_kpis_follow_their_definitions(van: VanSpec, make_trace: Callable[[], Trace]) -> None:
    k = compute_kpis(make_trace(), van)
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


def test_integrity_catches_double_delivery_and_delivery_without_loading(
    van: VanSpec, make_trace: Callable[[], Trace]
) -> None:
    tr = make_trace()
    tr.delivered.append(Delivered(9000.0, B, ParcelId("P1")))  # again, and B never loaded it
    tr.delivered.append(Delivered(9100.0, B, ParcelId("P5")))  # B never loaded it
    k = compute_kpis(tr, van)
    assert k.delivered_twice == 1
    assert k.delivered_unloaded == 1  # P5 (P1's first delivery was by A, who loaded it)


def test_a_breakdown_whose_parcels_never_move_is_not_recovered(
    van: VanSpec, make_trace: Callable[[], Trace]
) -> None:
    tr = Trace(scenario="t", mode="fast", seed=1, start_s=0.0, end_s=10_000.0, warehouse="ST-1")
    tr.vans = {A: ST}
    tr.add_parcels([_p(1)])
    tr.loaded.append(Loaded(10.0, A, ParcelId("P1"), ST))
    tr.breakdowns.append(BreakdownRecord(100.0, A, 0.0, 0.0, (ParcelId("P1"),)))
    tr.finish(10_000.0, {})
    k = compute_kpis(tr, van)
    assert k.breakdowns[0].recovery_s is None and k.breakdowns[0].recovered == 0
    assert k.failed_by_reason == {"stranded_on_broken_van": 1}
    assert k.lost == 0


def test_compare_within_and_beyond_tolerance(van: VanSpec, make_trace: Callable[[], Trace]) -> None:
    a = compute_kpis(make_trace(), van)
    tr = make_trace()
    tr.drives.append(Drive(B, 8000.0, 8010.0, 100.0, 0.03, 0, ()))  # +0.1 km of 12: < 2 %
    assert compare_kpis(a, compute_kpis(tr, van)) == []
    tr.drives.append(Drive(B, 9000.0, 9100.0, 2000.0, 0.6, 0, ()))
    diff = compare_kpis(a, compute_kpis(tr, van), Tolerance())
    assert any(line.startswith("km_driven") for line in diff)


def test_a_load_where_the_parcel_is_not_is_flagged_and_is_no_recovery(
    van: VanSpec, make_trace: Callable[[], Trace]
) -> None:
    tr = make_trace()
    assert compute_kpis(tr, van).loaded_unavailable == 0
    # B takes P3 at the station 10 s after the breakdown, while P3 is still aboard broken A
    tr.loaded.append(Loaded(4010.0, B, ParcelId("P3"), ST))
    k = compute_kpis(tr, van)
    assert k.loaded_unavailable == 1
    (rec,) = k.breakdowns
    assert rec.recovery_s == 2100.0  # the impossible load does not count as recovery
