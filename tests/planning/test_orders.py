"""The orders CSV: every bad row reported at once with its line and field; good rows parsed."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fleet.errors import InputError
from fleet.model import Parcel, ParcelId, Site
from fleet.planning import read_orders, write_orders

HEADER = "parcel_id,lon,lat,weight_kg,volume_m3,earliest,latest,service_s,station\n"


def write(tmp_path: Path, body: str, header: str = HEADER) -> Path:
    path = tmp_path / "orders.csv"
    path.write_text(header + body, encoding="utf-8")
    return path


def test_good_rows_become_parcels_with_local_times(tmp_path: Path, site: Site) -> None:
    path = write(
        tmp_path,
        "A1,-51.2,-30.03,2.5,0.01,09:00,11:30,,\n"
        "A2,-51.21,-30.04,0,0,,,45,ST-CENTRO\n"
        "A3,-51.22,-30.05,1,0.002,2026-11-24T13:00:00-03:00,2026-11-24T15:00,,\n"
        "\n"
        "A4,-51.2,-30.03,1,0.001,,24:00,,\n",
    )
    orders = read_orders(path, site)
    assert orders.bad_rows == ()
    a1, a2, a3, a4 = orders.parcels
    assert (a1.earliest_s, a1.latest_s) == (9 * 3600, 11 * 3600 + 1800)
    assert a2.station == "ST-CENTRO" and a2.service_s == 45.0 and not a2.has_window
    assert (a3.earliest_s, a3.latest_s) == (13 * 3600, 15 * 3600)
    assert a4.latest_s == 24 * 3600
    assert orders.day == date(2026, 11, 24)


def test_an_offset_time_is_converted_to_the_sites_time_zone(tmp_path: Path, site: Site) -> None:
    # 12:00 UTC is 09:00 in Porto Alegre (UTC-3)
    path = write(tmp_path, "A1,-51.2,-30.03,1,0.01,2026-11-24T12:00:00+00:00,,,\n")
    assert read_orders(path, site).parcels[0].earliest_s == 9 * 3600


def test_every_bad_row_is_reported_at_once_with_line_and_field(tmp_path: Path, site: Site) -> None:
    path = write(
        tmp_path,
        "B1,-51.2,-30.03,-2,0.01,,,,\n"  # line 2: negative weight
        "B2,-51.2,-30.03,1,0.01,,,,ST-NOWHERE\n"  # line 3: unknown station
        "B3,-51.2,abc,1,0.01,,,,\n"  # line 4: not a number
        "B4,-51.2,-30.03,1,0.01,12:00,10:00,,\n"  # line 5: window inverted
        "B5,-51.2,-30.03,1,0.01,9h,,,\n"  # line 6: bad time
        "B6,-51.2,-30.03,1\n"  # line 7: too few fields
        "B7,-51.2,-30.03,1,0.01,,,,\n"  # line 8: good
        "B7,-51.2,-30.03,1,0.01,,,,\n"  # line 9: duplicate id
        ",-51.2,-30.03,1,0.01,,,,\n"  # line 10: no id
        "B8,-51.2,-30.03,1,0.01,,,-1,\n"  # line 11: negative service time
        "B9,-51.2,-30.03,1,-0.5,,,,\n",  # line 12: negative volume
    )
    orders = read_orders(path, site)
    assert [p.id for p in orders.parcels] == ["B7"]
    got = [(b.line, b.field) for b in orders.bad_rows]
    assert got == [
        (2, "weight_kg"),
        (3, "station"),
        (4, "lat"),
        (5, "latest"),
        (6, "earliest"),
        (7, "row"),
        (9, "parcel_id"),
        (10, "parcel_id"),
        (11, "service_s"),
        (12, "volume_m3"),
    ]
    assert "first used on line 8" in orders.bad_rows[6].message
    assert "ST-CENTRO" in orders.bad_rows[1].message  # names the stations there are
    with pytest.raises(InputError) as err:
        orders.require_clean()
    text = str(err.value)
    assert "10 bad row(s)" in text and "line 2 (parcel B1): weight_kg" in text
    assert "--skip-bad-rows" in text


def test_a_parcel_too_heavy_for_a_van_is_not_a_bad_row(tmp_path: Path, site: Site) -> None:
    path = write(tmp_path, "H1,-51.2,-30.03,1500,30,,,,\n")
    orders = read_orders(path, site)
    assert orders.bad_rows == () and orders.parcels[0].weight_kg == 1500


def test_a_dated_time_on_another_day_is_a_bad_row(tmp_path: Path, site: Site) -> None:
    path = write(tmp_path, "D1,-51.2,-30.03,1,0.01,2026-11-25T09:00,,,\n")
    orders = read_orders(path, site, day=date(2026, 11, 24))
    assert orders.bad_rows[0].field == "earliest"
    assert "2026-11-25" in orders.bad_rows[0].message


@pytest.mark.parametrize(
    ("header", "message"),
    [
        ("parcel_id,lon,lat,weight_kg\n", "missing required column(s): volume_m3"),
        ("parcel_id,lon,lat,weight_kg,volume_m3,wieght\n", "unknown column(s) 'wieght'"),
        ("parcel_id,lon,lat,lat,weight_kg,volume_m3\n", "given twice: lat"),
    ],
)
def test_a_wrong_header_is_refused_naming_the_column(
    tmp_path: Path, site: Site, header: str, message: str
) -> None:
    with pytest.raises(InputError, match="line 1") as err:
        read_orders(write(tmp_path, "", header=header), site)
    assert message in str(err.value)


def test_missing_and_empty_files_are_clear_errors(tmp_path: Path, site: Site) -> None:
    with pytest.raises(InputError, match="file not found"):
        read_orders(tmp_path / "nope.csv", site)
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(InputError, match="empty file"):
        read_orders(empty, site)


def test_a_byte_order_mark_is_ignored(tmp_path: Path, site: Site) -> None:
    path = tmp_path / "bom.csv"
    path.write_text("\ufeff" + HEADER + "X,-51.2,-30.03,1,0.01,,,,\n", encoding="utf-8")
    assert [p.id for p in read_orders(path, site).parcels] == ["X"]


parcels = st.builds(
    Parcel,
    id=st.from_regex(r"[A-Za-z0-9_-]{1,12}", fullmatch=True).map(ParcelId),
    lon=st.floats(-51.25, -51.13),
    lat=st.floats(-30.1, -30.0),
    weight_kg=st.floats(0, 2000, allow_nan=False),
    volume_m3=st.floats(0, 30, allow_nan=False),
    earliest_s=st.none() | st.integers(0, 12 * 3600),
    latest_s=st.none() | st.integers(12 * 3600, 24 * 3600),
    service_s=st.none() | st.floats(0, 600, allow_nan=False),
    station=st.none() | st.sampled_from(["ST-CENTRO", "ST-MOINHOS"]).map(lambda s: s),  # type: ignore[arg-type]
)


@settings(
    max_examples=40, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.lists(parcels, max_size=8, unique_by=lambda p: p.id))
def test_written_orders_read_back_the_same(
    tmp_path: Path, site: Site, written: list[Parcel]
) -> None:
    path = tmp_path / "round.csv"
    write_orders(written, path)
    orders = read_orders(path, site)
    assert orders.bad_rows == ()
    assert list(orders.parcels) == written
