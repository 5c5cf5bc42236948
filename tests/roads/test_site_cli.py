"""`fleet site show` and `fleet site map`, run the way a user runs them."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fleet.cli.app import app, main
from fleet.roads import RoadNetwork

from .conftest import IN_THE_LAKE, SITES

runner = CliRunner()


def _main(
    args: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> tuple[int, str, str]:
    """Run the ``fleet`` entry point in this process: exit code, stdout, stderr."""
    monkeypatch.setattr(sys, "argv", ["fleet", *args])
    monkeypatch.setenv("COLUMNS", "120")
    with pytest.raises(SystemExit) as done:
        main()
    out, err = capsys.readouterr()
    return int(done.value.code or 0), out, err


def _fleet(args: list[str], cache: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "FLEET_CACHE_DIR": str(cache), "COLUMNS": "120"}
    return subprocess.run(
        [sys.executable, "-c", "from fleet.cli.app import main; main()", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=90,
        check=False,
    )


@pytest.mark.parametrize("args", [["site"], ["site", "show"], ["site", "map"]])
def test_every_site_command_has_help(args: list[str]) -> None:
    result = runner.invoke(app, [*args, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage" in result.output


def test_show_prints_roads_area_depots_and_longest_leg(poa: RoadNetwork) -> None:
    result = runner.invoke(app, ["site", "show", str(SITES / "poa.toml")], env={"COLUMNS": "120"})
    assert result.exit_code == 0, result.output
    out = result.output
    assert "Porto Alegre" in out
    assert f"{poa.num_nodes:,}" in out and f"{poa.num_edges:,}" in out
    assert f"{poa.area_km2:.1f} km²" in out
    for depot in poa.site.depots:
        assert depot.id in out
    assert re.search(r"longest depot-to-depot path .*→.*: \d+\.\d\d km, \d+\.\d min", out)
    assert len(re.findall(r"\b\d+\.\d m\b", out)) == len(poa.site.depots)  # snap distances


def test_show_defaults_to_the_porto_site(porto: RoadNetwork) -> None:
    result = runner.invoke(app, ["site", "show"], env={"COLUMNS": "120"})
    assert result.exit_code == 0, result.output
    assert "Site Porto" in result.output and "WH-PORTO" in result.output
    assert f"{porto.num_nodes:,}" in result.output
    assert 15_000 < porto.num_nodes < 20_000  # measured: 17,236 nodes, 39,712 edges


def test_map_writes_an_offline_html_page(poa: RoadNetwork, tmp_path: Path) -> None:
    out = tmp_path / "maps" / "site.html"
    result = runner.invoke(app, ["site", "map", str(SITES / "poa.toml"), "-o", str(out)])
    assert result.exit_code == 0, result.output
    page = out.read_text(encoding="utf-8")
    assert "© OpenStreetMap contributors" in page
    assert not re.search(r"<script[^>]+src=|<link[^>]+href=|@import|url\(http", page)
    data = json.loads(re.search(r'id="map-data">(.*?)</script>', page, re.S).group(1))  # type: ignore[union-attr]
    names = [layer["name"] for layer in data["layers"]]
    assert names[0] == "Operating area" and "Warehouse" in names and "Stations" in names
    labels = [
        lab for layer in data["layers"] if layer["kind"] == "points" for lab in layer["labels"]
    ]
    assert {label.split(" - ")[0] for label in labels} == {d.id for d in poa.site.depots}
    road_links = sum(
        len(layer["lines"])
        for layer in data["layers"]
        if "roads" in layer["name"].lower() or "streets" in layer["name"].lower()
    )
    assert road_links == len(set(poa.prepared.edge_link.tolist()))


def test_map_writes_a_png(poa: RoadNetwork, tmp_path: Path) -> None:
    out = tmp_path / "site.png"
    result = runner.invoke(app, ["site", "map", str(SITES / "poa.toml"), "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert out.stat().st_size > 50_000


def test_map_refuses_an_unknown_format_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "site.txt"
    code, _, err = _main(
        ["site", "map", str(SITES / "poa.toml"), "-o", str(out)], monkeypatch, capsys
    )
    assert code == 1
    assert re.fullmatch(r"error: .*site\.txt: cannot tell the map format .*\.html.*\n", err, re.S)
    assert not out.exists()


def test_site_with_a_depot_off_the_road_fails_naming_it(
    poa: RoadNetwork,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    text = (SITES / "poa.toml").read_text()
    text = text.replace('"data/poa_osm.pbf"', f'"{SITES / "data" / "poa_osm.pbf"}"')
    text = text.replace('"poa_area.geojson"', f'"{SITES / "poa_area.geojson"}"')
    text = text.replace(
        "lon = -51.22697\nlat = -30.03105", f"lon = {IN_THE_LAKE[0]}\nlat = {IN_THE_LAKE[1]}"
    )
    site = tmp_path / "lake.toml"
    site.write_text(text)
    code, out, err = _main(["site", "show", str(site)], monkeypatch, capsys)
    assert code == 1, out
    assert "refused" in out
    assert re.search(
        r"error: .*lake\.toml: depot ST-CENTRO: \d+ m from the nearest drivable road", err
    )


def test_missing_site_file_is_one_clear_line(tmp_path: Path) -> None:
    result = _fleet(["site", "show", str(tmp_path / "atlantis.toml")], tmp_path)
    assert result.returncode == 1
    assert result.stderr.strip().endswith("atlantis.toml: file not found")
    assert "Traceback" not in result.stderr
