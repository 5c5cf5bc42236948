"""Issue 15: one id rule where ids enter, bounds checked before parsing, one clear line for
every bad input (never a traceback), nothing stored half-way. Each case failed before."""

from __future__ import annotations

import json
import os
import stat
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from firmware_bridge.bridge.config import ConfigFileError, load_signing_key
from firmware_bridge.bridge.spool import Spool
from fleet.cli.app import app
from fleet.errors import ConfigError, FleetError, InputError
from fleet.identifiers import depot_id_problem, id_problem, json_depth
from fleet.model.site import load_site
from fleet.planning import orders as orders_module
from fleet.planning.orders import read_orders
from fleet.planning.plan_io import plan_to_json, read_plan_and_parcels
from fleet.protocol import derive_van_key
from fleet.security.credentials import key_file_text
from fleet.store import SqliteStore
from tests.support import plans

REPO = Path(__file__).resolve().parents[2]
SITE = REPO / "configs" / "sites" / "poa.toml"
CLOSED = ["--broker", "mqtt://127.0.0.1:9", "--timeout", "0.3"]


@pytest.mark.parametrize(
    "bad",
    ["PEDIDO-ção-1", "A/+/#", "P\x01", "x" * 65, "", ".", "..", "a b", "A\n", "WH:1", "🚚"],
)
def test_the_id_rule_refuses_what_the_protocol_or_a_topic_cannot_carry(bad: str) -> None:
    problem = id_problem(bad)
    assert problem is not None and "\n" not in problem
    assert "docs/limits.md" in problem


@pytest.mark.parametrize("good", ["P1", "WH-PORTO-01", "ST_A.2", "-x", "_", "a" * 64])
def test_the_id_rule_takes_the_ids_we_make(good: str) -> None:
    assert id_problem(good) is None


def test_a_depot_id_leaves_room_for_its_vans_ids() -> None:
    assert depot_id_problem("S" * 58) is None
    assert "vans" in (depot_id_problem("S" * 59) or "")


def test_json_depth_is_linear_and_skips_strings() -> None:
    assert json_depth(b'[[1, "[[[["], {"a": []}]') == 3
    assert json_depth("[" * 100_000) == 100_000


def _csv(tmp_path: Path, rows: str) -> Path:
    path = tmp_path / "u.csv"
    path.write_text("parcel_id,lon,lat,weight_kg,volume_m3,service_s\n" + rows, encoding="utf-8")
    return path


def test_an_orders_row_with_a_non_ascii_id_is_a_bad_row_naming_the_field(
    tmp_path: Path,
) -> None:
    orders = read_orders(
        _csv(
            tmp_path,
            "PEDIDO-ção-1,-51.1996343,-30.0305937,1,0.01,\nP2,-51.1996343,-30.0305937,1,0.01,\n",
        ),
        load_site(SITE),
    )
    assert [p.id for p in orders.parcels] == ["P2"]  # one bad parcel never blocks the others
    (bad,) = orders.bad_rows
    assert bad.line == 2 and bad.field == "parcel_id" and "U+00E7" in bad.message


def test_a_service_time_beyond_a_day_names_the_service_time(tmp_path: Path) -> None:
    orders = read_orders(_csv(tmp_path, "P1,-51.19,-30.03,1,0.01,99999999999\n"), load_site(SITE))
    (bad,) = orders.bad_rows
    assert bad.field == "service_s" and "service time" in bad.message


def test_an_orders_file_over_the_bound_is_refused_before_it_is_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(orders_module, "MAX_ORDERS_BYTES", 100)
    path = _csv(tmp_path, "P1,-51.19,-30.03,1,0.01,\n" * 10)
    with pytest.raises(InputError, match="exceed the limit of 100 bytes"):
        read_orders(path, load_site(SITE))


def test_more_rows_than_parcels_per_day_are_refused_with_the_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(orders_module, "MAX_ORDERS_ROWS", 3)
    rows = "".join(f"P{i},-51.19,-30.03,1,0.01,\n" for i in range(5))
    with pytest.raises(InputError, match=r"line 5: more than 3 parcel rows"):
        read_orders(_csv(tmp_path, rows), load_site(SITE))


def _plan_file(tmp_path: Path, edit: object) -> Path:
    doc = json.loads(json.dumps(plan_to_json(plans.plan())))
    edit(doc)  # type: ignore[operator]
    path = tmp_path / "plan.json"
    path.write_text(json.dumps(doc), encoding="utf-8")
    return path


def test_a_node_id_of_2_pow_80_is_an_input_error_not_an_overflow(tmp_path: Path) -> None:
    def big(doc: dict) -> None:  # type: ignore[type-arg]
        doc["routes"][0]["trips"][0]["stops"][0]["node"] = 2**80

    with pytest.raises(InputError, match=r"stops\[0\]\.node: expected a whole number within"):
        read_plan_and_parcels(_plan_file(tmp_path, big))


def test_a_plan_nested_100000_deep_is_an_input_error_not_a_recursion_error(
    tmp_path: Path,
) -> None:
    path = tmp_path / "deep.json"
    path.write_text("[" * 100_000 + "]" * 100_000, encoding="utf-8")
    with pytest.raises(InputError, match="nested 100000 deep; the limit is 32"):
        read_plan_and_parcels(path)


def test_a_plan_with_a_bad_parcel_id_names_it(tmp_path: Path) -> None:
    def bad(doc: dict) -> None:  # type: ignore[type-arg]
        doc["routes"][0]["trips"][0]["stops"][0]["parcels_loaded"][0] = "P\x01"

    with pytest.raises(InputError, match=r"parcels_loaded\[0\]: 'P\\x01' holds U\+0001"):
        read_plan_and_parcels(_plan_file(tmp_path, bad))


def test_a_station_id_with_wildcards_is_refused_by_the_site_reader(tmp_path: Path) -> None:
    text = SITE.read_text(encoding="utf-8")
    first = text.index('id = "', text.index("[[stations]]"))
    end = text.index('"', first + 6)
    site = tmp_path / "site.toml"
    site.write_text(text[:first] + 'id = "ST/+#' + text[end:], encoding="utf-8")
    for name in ("poa_area.geojson",):
        (tmp_path / name).write_bytes((SITE.parent / name).read_bytes())
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "poa_osm.pbf").write_bytes(b"")
    with pytest.raises(ConfigError, match=r"\[stations\[0\]\] id: 'ST/\+#' holds '/'"):
        load_site(site)


def test_a_binary_site_toml_and_a_binary_key_file_are_one_line_errors(tmp_path: Path) -> None:
    binary = tmp_path / "bin.toml"
    binary.write_bytes(b"\xff\xfe\x00\x01garbage")
    with pytest.raises(ConfigError, match="not UTF-8 text"):
        load_site(binary)
    with pytest.raises(ConfigFileError, match="not UTF-8 text"):
        load_signing_key(binary)


def test_a_bridge_started_with_another_vans_key_refuses_to_start(tmp_path: Path) -> None:
    from firmware_bridge.cli import _van_key

    other = derive_van_key(b"m" * 32, "WH-PORTO-02")
    key_file = tmp_path / "signing.key"
    key_file.write_text(key_file_text("WH-PORTO-02", other.key_id, other.secret))
    with pytest.raises(ConfigFileError, match="van WH-PORTO-02's signing key, but this bridge"):
        _van_key(key_file, "WH-PORTO-01")
    assert _van_key(key_file, "WH-PORTO-02").key_id == other.key_id


def _invoke(*args: str) -> object:
    result = CliRunner(env={"FLEET_BROKER": None, "FLEET_MQTT_LOGIN": None}).invoke(
        app, list(args), catch_exceptions=True
    )
    if result.exit_code == 2:
        return "usage"
    return result.exception


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (("pause", "A/+/#"), "van id: 'A/+/#' holds '/'"),
        (("status", "X/+/#"), "van id: 'X/+/#' holds '/'"),
        (("cancel", "P\x01"), "parcel id: 'P\\x01' holds U+0001"),
        (("estop", "WH-PORTO-01", "A#"), "van id: 'A#' holds '#'"),
        (("events", "--van", "a/b"), "--van: 'a/b'"),
    ],
)
def test_cli_ids_outside_the_rule_are_one_line_errors(args: tuple[str, ...], says: str) -> None:
    exc = _invoke(*args, *CLOSED)
    assert isinstance(exc, InputError) and says in str(exc)


@pytest.mark.parametrize(
    "args",
    [
        ("events", "--limit", "-5"),
        ("events", "--after", "99999999999999999999999"),
        ("status", "--watch", "--interval", "-1"),
        ("status", "--watch", "--interval", "100000"),
    ],
)
def test_cli_numbers_outside_their_bounds_are_usage_errors(args: tuple[str, ...]) -> None:
    assert _invoke(*args, *CLOSED) == "usage"


def test_dispatch_of_a_nan_plan_and_add_of_a_huge_csv_are_one_line_errors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    nan = tmp_path / "nan.json"
    nan.write_text('{"format": NaN}')
    orders = _csv(tmp_path, "P1,-51.19,-30.03,1,0.01,\n")
    exc = _invoke("dispatch", str(nan), "--orders", str(orders), *CLOSED)
    assert isinstance(exc, InputError) and "NaN is not a JSON number" in str(exc)
    monkeypatch.setattr(orders_module, "MAX_ORDERS_BYTES", 10)
    exc = _invoke("add", str(orders), *CLOSED)
    assert isinstance(exc, InputError) and "exceed the limit of 10 bytes" in str(exc)


def test_an_error_naming_a_toml_table_is_printed_with_the_table(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before: "has no  table" (rich read "[tls]" as markup)."""
    from fleet.cli.app import main

    login = tmp_path / "mqtt.toml"
    login.write_text('[mqtt]\nhost = "h"\nport = 1883\nusername = "u"\npassword = "p"\n')
    monkeypatch.setattr(sys, "argv", ["fleet", "status", "--login", str(login), "--tls"])
    with pytest.raises(SystemExit) as exit_:
        main()
    assert exit_.value.code == 1
    assert "has no [tls] table" in capsys.readouterr().err


def test_the_store_and_the_bridges_spool_are_created_0600(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "fleet.db")
    store.close()
    for name in ("fleet.db", "fleet.db.lock"):
        assert stat.S_IMODE(os.stat(tmp_path / name).st_mode) == 0o600, name
    spool = Spool(tmp_path / "spool", max_messages=10)
    spool.append("fleet/v1/vans/V/state", b"{}")
    for f in (tmp_path / "spool").iterdir():
        assert stat.S_IMODE(f.stat().st_mode) == 0o600, f


def test_no_fleet_error_escapes_as_another_type() -> None:
    assert issubclass(ConfigFileError, FleetError)


def test_a_toml_list_holding_a_number_beyond_any_float_names_the_key(tmp_path: Path) -> None:
    """Found by the fuzzer (toml_tree.scenario): OverflowError in Table.number_list."""
    from fleet.model.toml_table import Table

    path = tmp_path / "x.toml"
    path.write_text(f"center = [{10**400}, 41.1]\nother = [nan, 1]\n")
    table = Table.root(path)
    with pytest.raises(ConfigError, match=r"center: expected a list of finite numbers"):
        table.number_list("center", "degrees")
    with pytest.raises(ConfigError, match=r"other: expected a list of finite numbers"):
        table.number_list("other", "degrees")
