"""plan.json: exact round trips, strict reading that names the JSON path, atomic writing."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fleet.errors import InputError
from fleet.model import (
    DepotId,
    Leg,
    NodeId,
    Parcel,
    ParcelId,
    Plan,
    PlanSummary,
    Stop,
    StopKind,
    Trip,
    Unserved,
    UnservedReason,
    VanId,
    VanRoute,
    VanSummary,
)
from fleet.planning import read_plan, write_plan
from fleet.planning.plan_io import plan_to_json, read_plan_and_parcels


def test_a_real_plan_and_its_parcels_survive_a_round_trip(
    tmp_path: Path, planned40: Plan, day40: list[Parcel]
) -> None:
    path = tmp_path / "plan.json"
    write_plan(planned40, path, parcels=day40)
    plan, parcels = read_plan_and_parcels(path)
    assert plan == planned40
    assert list(parcels) == day40
    assert read_plan(path) == planned40
    doc = json.loads(path.read_text())
    assert doc["attribution"].startswith("Road geometry © OpenStreetMap contributors")
    first_leg = next(s for r in doc["routes"] for t in r["trips"] for s in t["stops"][1:])
    assert first_leg["geometry_in"]["type"] == "LineString"


finite = st.floats(-1e6, 1e6, allow_nan=False)
coords = st.tuples(st.floats(-180, 180), st.floats(-90, 90))
ids = st.from_regex(r"[A-Z0-9-]{1,8}", fullmatch=True)
stops = st.builds(
    Stop,
    seq=st.integers(0, 50),
    kind=st.sampled_from(StopKind),
    ref=st.just("") | ids,  # a depot id, or "" at a door (docs/limits.md: the id rule)
    node=st.integers(1, 2**40).map(NodeId),
    lon=st.floats(-180, 180),
    lat=st.floats(-90, 90),
    arrival_s=finite,
    departure_s=finite,
    parcels_loaded=st.lists(ids.map(ParcelId), max_size=3).map(tuple),
    parcels_delivered=st.lists(ids.map(ParcelId), max_size=3).map(tuple),
    load_after_kg=finite,
    load_after_m3=finite,
    dist_so_far_m=finite,
    energy_so_far_kwh=finite,
    soc_pct=finite,
    geometry_in=st.one_of(st.just(()), st.lists(coords, min_size=2, max_size=4).map(tuple)),
)
routes = st.builds(
    VanRoute,
    van_id=ids.map(VanId),
    leg=st.sampled_from(Leg),
    depot=ids.map(DepotId),
    trips=st.lists(
        st.builds(Trip, index=st.integers(0, 9), stops=st.lists(stops, max_size=3).map(tuple)),
        max_size=2,
    ).map(tuple),
)
van_summaries = st.builds(
    VanSummary,
    van_id=ids.map(VanId),
    leg=st.sampled_from(Leg),
    depot=ids.map(DepotId),
    trips=st.integers(0, 9),
    stops=st.integers(0, 99),
    parcels=st.integers(0, 999),
    dist_m=st.floats(0, 1e6),
    energy_kwh=st.floats(0, 1e3),
    start_s=finite,
    end_s=finite,
    min_soc_pct=finite,
    util_kg_pct=st.floats(0, 100),
    util_m3_pct=st.floats(0, 100),
)
plans = st.builds(
    Plan,
    site=st.text(min_size=1, max_size=10),
    day=st.dates(min_value=date(2000, 1, 1), max_value=date(2100, 1, 1)),
    timezone=st.sampled_from(["Europe/Lisbon", "America/Sao_Paulo"]),
    created_utc=st.just("2026-11-23T10:00:00Z"),
    routes=st.lists(routes, max_size=2).map(tuple),
    unserved=st.lists(
        st.builds(
            Unserved,
            parcel_id=ids.map(ParcelId),
            reason=st.sampled_from(UnservedReason),
            detail=st.text(max_size=20),
        ),
        max_size=3,
    ).map(tuple),
    summary=st.builds(
        PlanSummary,
        parcels=st.integers(0, 99),
        served=st.integers(0, 99),
        unserved=st.integers(0, 99),
        vans_available=st.integers(0, 99),
        vans_used=st.integers(0, 99),
        trips=st.integers(0, 99),
        dist_m=st.floats(0, 1e7),
        energy_kwh=st.floats(0, 1e4),
        line_haul_dist_m=st.floats(0, 1e7),
        last_mile_dist_m=st.floats(0, 1e7),
        vans=st.lists(van_summaries, max_size=2).map(tuple),
    ),
)


@settings(
    max_examples=60, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(plans)
def test_any_plan_survives_a_round_trip(tmp_path: Path, plan: Plan) -> None:
    path = tmp_path / "any.json"
    write_plan(plan, path)
    assert read_plan(path) == plan


@pytest.fixture
def document(tmp_path: Path, planned40: Plan, day40: list[Parcel]) -> dict[str, object]:
    return plan_to_json(planned40, day40)


def load(tmp_path: Path, doc: object) -> Plan:
    path = tmp_path / "edited.json"
    path.write_text(json.dumps(doc))
    return read_plan(path)


def test_an_unknown_key_is_refused_with_its_path(tmp_path: Path, document: dict) -> None:  # type: ignore[type-arg]
    document["routes"][0]["trips"][0]["stops"][1]["speed"] = 3  # type: ignore[index]
    with pytest.raises(
        InputError, match=r"routes\[0\]\.trips\[0\]\.stops\[1\]\.speed: unknown key"
    ):
        load(tmp_path, document)


def test_a_wrong_type_is_refused_with_its_path(tmp_path: Path, document: dict) -> None:  # type: ignore[type-arg]
    document["routes"][0]["trips"][0]["stops"][2]["arrival_s"] = "9:00"  # type: ignore[index]
    with pytest.raises(
        InputError, match=r"routes\[0\]\.trips\[0\]\.stops\[2\]\.arrival_s: expected a number"
    ):
        load(tmp_path, document)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda d: d.pop("summary"), "summary: missing"),
        (lambda d: d.update(format="other"), "not a fleet plan"),
        (lambda d: d.update(version=99), "reads plan version 1"),
        (lambda d: d.update(day="24/11/2026"), "day: expected a date"),
        (
            lambda d: d["unserved"].append({"parcel_id": "X", "reason": "lost", "detail": ""}),
            "reason: expected one of",
        ),
        (lambda d: d["parcels"][0].update(weight_kg=-1), r"parcels\[0\].*weight_kg"),
        (
            lambda d: d["routes"][0]["trips"][0]["stops"][1].update(geometry_in={"type": "Point"}),
            "expected 'LineString'",
        ),
    ],
)
def test_structural_errors_name_what_is_wrong(
    tmp_path: Path, document: dict, edit, message: str
) -> None:  # type: ignore[no-untyped-def, type-arg]
    edit(document)
    with pytest.raises(InputError, match=message):
        load(tmp_path, document)


def test_broken_json_names_line_and_column(tmp_path: Path) -> None:
    path = tmp_path / "broken.json"
    path.write_text('{\n  "format": "fleet-plan",\n  "version": 1,,\n}')
    with pytest.raises(InputError, match="line 3 column"):
        read_plan(path)
    with pytest.raises(InputError, match="file not found"):
        read_plan(tmp_path / "missing.json")


def test_a_failed_write_leaves_the_old_file_whole_and_no_temporary(
    tmp_path: Path, planned40: Plan
) -> None:
    target = tmp_path / "plan.json"
    target.mkdir()  # a directory where the file should go: the final rename must fail
    with pytest.raises(InputError, match="cannot write the plan"):
        write_plan(planned40, target)
    assert target.is_dir() and list(tmp_path.iterdir()) == [target]
    with pytest.raises(InputError, match="cannot write the plan"):
        write_plan(planned40, tmp_path / "no-such-dir" / "plan.json")
