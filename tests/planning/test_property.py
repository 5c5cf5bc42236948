"""Random small days on Porto Alegre: whatever comes in, the plan passes the verifier and
accounts for every parcel exactly once."""

from __future__ import annotations

from collections import Counter

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fleet.model import DepotId, Parcel, ParcelId, Plan
from tests.planning.conftest import PlanFn

STATIONS = ["ST-CENTRO", "ST-MOINHOS", "ST-PETROPOLIS", "ST-MENINO-DEUS"]


@st.composite
def parcels(draw: st.DrawFn, index: int) -> Parcel:
    earliest = latest = None
    if draw(st.booleans()):
        earliest = draw(st.integers(5 * 3600, 19 * 3600))
        latest = earliest + draw(st.integers(0, 4 * 3600))
        latest = min(latest, 24 * 3600)
    return Parcel(
        id=ParcelId(f"R{index:03d}"),
        # the bounding box of the extract: some points fall outside the operating area
        lon=draw(st.floats(-51.26, -51.13)),
        lat=draw(st.floats(-30.11, -29.99)),
        weight_kg=draw(st.one_of(st.floats(0.0, 30.0), st.floats(0.0, 1200.0))),
        volume_m3=draw(st.one_of(st.floats(0.0, 0.2), st.floats(0.0, 26.0))),
        earliest_s=earliest,
        latest_s=latest,
        service_s=draw(st.none() | st.floats(0.0, 300.0)),
        station=draw(st.none() | st.sampled_from(STATIONS).map(DepotId)),
    )


@st.composite
def days(draw: st.DrawFn) -> list[Parcel]:
    n = draw(st.integers(0, 9))
    return [draw(parcels(i)) for i in range(n)]


@settings(
    max_examples=12,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(days(), st.integers(1, 3), st.integers(1, 5))
def test_random_small_days_are_planned_valid_and_complete(
    plan: PlanFn, day: list[Parcel], seed: int, station_vans: int
) -> None:
    result: Plan = plan(  # the fixture checks verify_plan(...) == []
        day, seed=seed, vans={s: station_vans for s in STATIONS} | {"WH-POA": 2}
    )
    delivered = Counter(pid for _, pid in result.delivered())
    listed = Counter(u.parcel_id for u in result.unserved)
    for p in day:
        assert delivered[p.id] + listed[p.id] == 1, p.id
    assert sum(delivered.values()) + sum(listed.values()) == len(day)
