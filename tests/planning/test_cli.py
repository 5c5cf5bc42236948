"""`fleet orders sample`, `fleet plan`, `fleet verify`, `fleet orders check` as a user runs them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fleet.cli.app import app
from fleet.roads import RoadNetwork
from tests.planning.conftest import SITES

runner = CliRunner()
POA = str(SITES / "poa.toml")
ENV = {"COLUMNS": "140"}


@pytest.mark.parametrize(
    "args", [["plan"], ["verify"], ["orders"], ["orders", "sample"], ["orders", "check"]]
)
def test_every_planning_command_has_help(args: list[str]) -> None:
    result = runner.invoke(app, [*args, "--help"], env=ENV)
    assert result.exit_code == 0, result.output
    assert "Usage" in result.output


@pytest.fixture(scope="module")
def orders_csv(net: RoadNetwork, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("cli") / "orders.csv"
    result = runner.invoke(
        app,
        ["orders", "sample", "--site", POA, "--parcels", "30", "--seed", "3", "-o", str(path)],
        env=ENV,
    )
    assert result.exit_code == 0, result.output
    assert "30 parcels on Porto Alegre" in result.output
    return path


def test_sample_then_plan_then_verify(orders_csv: Path, tmp_path: Path) -> None:
    assert len(orders_csv.read_text().splitlines()) == 31
    plan_json, plan_html = tmp_path / "plan.json", tmp_path / "plan.html"
    result = runner.invoke(
        app,
        [
            "plan",
            str(orders_csv),
            "--site",
            POA,
            "-o",
            str(plan_json),
            "--map",
            str(plan_html),
            "--time-limit",
            "1",
            "--workers",
            "1",
            "--day",
            "2026-11-24",
        ],
        env=ENV,
    )
    assert result.exit_code == 0, result.output
    out = result.output
    assert "Plan for Porto Alegre on 2026-11-24" in out
    for word in ("parcels served", "vans used", "trips", "distance", "energy", "Vans", "kg", "m³"):
        assert word in out
    doc = json.loads(plan_json.read_text())
    assert doc["day"] == "2026-11-24" and len(doc["parcels"]) == 30
    assert "OpenStreetMap contributors" in plan_html.read_text()
    verified = runner.invoke(app, ["verify", str(plan_json), "--site", POA], env=ENV)
    assert verified.exit_code == 0, verified.output
    assert "valid" in verified.output


def test_size_fleet_prints_a_table_per_depot_and_writes_no_plan(
    orders_csv: Path, tmp_path: Path
) -> None:
    args = ["plan", str(orders_csv), "--site", POA, "--size-fleet", "--time-limit", "1"]
    result = runner.invoke(app, [*args, "--workers", "1"], env=ENV)
    assert result.exit_code == 0, result.output
    out = result.output
    assert "Vans needed for 30 parcels at Porto Alegre" in out
    for column in ("vans available", "vans needed", "short of vans: now", "with vans needed"):
        assert column in out
    for depot in ("WH-POA", "ST-CENTRO", "ST-MOINHOS", "all"):
        assert depot in out
    assert list(tmp_path.iterdir()) == []
    refused = runner.invoke(app, [*args, "-o", str(tmp_path / "plan.json")], env=ENV)
    assert refused.exit_code != 0
    assert "--size-fleet writes no plan" in str(refused.exception) + refused.output
    needs_output = runner.invoke(app, ["plan", str(orders_csv), "--site", POA], env=ENV)
    assert needs_output.exit_code != 0
    assert "--output is needed" in str(needs_output.exception) + needs_output.output


def test_verify_prints_one_line_per_violation_and_fails(orders_csv: Path, tmp_path: Path) -> None:
    plan_json = tmp_path / "plan.json"
    made = runner.invoke(
        app,
        [
            "plan",
            str(orders_csv),
            "--site",
            POA,
            "-o",
            str(plan_json),
            "--time-limit",
            "0.5",
            "--workers",
            "1",
        ],
        env=ENV,
    )
    assert made.exit_code == 0, made.output
    doc = json.loads(plan_json.read_text())
    door = next(
        s for r in doc["routes"] for t in r["trips"] for s in t["stops"] if s["kind"] == "door"
    )
    door["arrival_s"] -= 300
    doc["summary"]["served"] += 1
    plan_json.write_text(json.dumps(doc))
    result = runner.invoke(app, ["verify", str(plan_json), "--site", POA], env=ENV)
    assert result.exit_code == 1
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert any("but the road takes until" in line for line in lines)
    assert any(line.startswith("summary: served is") for line in lines)
    assert "violation(s)" in result.output


BAD = (
    "parcel_id,lon,lat,weight_kg,volume_m3\n"
    "A,-51.2245,-30.0335,2,0.01\n"
    "B,-51.2245,-30.0335,-2,0.01\n"
    "C,-51.2245,-30.0335,1,abc\n"
)


def test_a_file_with_bad_rows_is_not_planned_unless_asked(net: RoadNetwork, tmp_path: Path) -> None:
    orders = tmp_path / "bad.csv"
    orders.write_text(BAD)
    plan_json = tmp_path / "plan.json"
    args = [
        "plan",
        str(orders),
        "--site",
        POA,
        "-o",
        str(plan_json),
        "--time-limit",
        "0.5",
        "--workers",
        "1",
    ]
    refused = runner.invoke(app, args, env=ENV)
    assert refused.exit_code == 1 and not plan_json.exists()
    assert "2 bad row(s)" in str(refused.exception)
    assert "line 3 (parcel B): weight_kg" in str(refused.exception)
    planned = runner.invoke(app, [*args, "--skip-bad-rows"], env=ENV)
    assert planned.exit_code == 0, planned.output
    doc = json.loads(plan_json.read_text())
    assert {(u["parcel_id"], u["reason"]) for u in doc["unserved"]} == {
        ("B", "bad_row"),
        ("C", "bad_row"),
    }
    assert doc["summary"]["served"] == 1
    checked = runner.invoke(app, ["orders", "check", str(orders), "--site", POA], env=ENV)
    assert checked.exit_code == 1
    assert "line 4 (parcel C): volume_m3" in checked.output


def test_the_real_command_reports_a_bad_argument_in_one_line(
    plan_cache: Path, tmp_path: Path
) -> None:
    env = {**os.environ, "FLEET_CACHE_DIR": str(plan_cache), "COLUMNS": "120"}
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            "from fleet.cli.app import main; main()",
            "plan",
            str(tmp_path / "missing.csv"),
            "--site",
            POA,
            "-o",
            str(tmp_path / "p.json"),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert result.returncode == 1
    assert (
        result.stderr.strip().startswith("error:")
        and "missing.csv: file not found" in result.stderr
    )
    assert "Traceback" not in result.stderr
