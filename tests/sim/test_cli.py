"""`fleet-sim run` and `fleet demo` as a user types them: progress, KPIs, report, errors."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from fleet.cli.app import app as fleet_app
from sim.cli import app as sim_app

runner = CliRunner()


def test_fleet_sim_run_fast_prints_kpis_and_writes_the_report(tmp_path: Path) -> None:
    out = tmp_path / "report"
    result = runner.invoke(
        sim_app,
        [
            "run",
            "--scenario",
            "poa_small",
            "--fast",
            "--plan-iterations",
            "300",
            "--report",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "poa_small · fast mode" in result.output
    assert "delivered on time" in result.output and "MQTT messages lost" in result.output
    for name in ("report.md", "report.html", "map.html", "kpis.json", "deliveries.png"):
        assert (out / name).is_file(), name


def test_an_unknown_scenario_is_one_clear_error() -> None:
    result = runner.invoke(sim_app, ["run", "--scenario", "no-such-day", "--fast"])
    assert result.exit_code != 0
    assert "no shipped scenario of that name" in str(result.exception) + result.output
    assert "normal" in str(result.exception) + result.output  # it lists what is shipped


def test_fast_with_a_speedup_is_refused() -> None:
    result = runner.invoke(sim_app, ["run", "--scenario", "poa_small", "--fast", "--speedup", "60"])
    assert result.exit_code != 0
    assert "--fast runs without a broker" in str(result.exception) + result.output


def test_every_command_has_help() -> None:
    for app, args in ((sim_app, ["run", "--help"]), (fleet_app, ["demo", "--help"])):
        result = runner.invoke(app, args)
        assert result.exit_code == 0
        assert "--report" in result.output and "--speedup" in result.output
