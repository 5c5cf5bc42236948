"""``fleet site show|map``: look at a site's road network, operating area and depots."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from fleet.errors import RoadError
from fleet.model import load_site, load_van_spec
from fleet.paths import default_site_file, default_van_file
from fleet.viz import MAP_FORMATS, check_map_path, write_map

if TYPE_CHECKING:  # the road modules load when a command runs, not for `fleet --help`
    from fleet.roads import RoadNetwork
    from fleet.roads.summary import SiteSummary

site_app = typer.Typer(
    name="site",
    help="Show or map a site: road network, operating area, warehouse and stations.",
    no_args_is_help=True,
)
console = Console()

SITE_ARG = typer.Argument(
    None,
    metavar="[SITE_TOML]",
    help="Site config (configs/sites/<city>.toml); default: the Porto site.",
    show_default=False,
)
VAN_OPT = typer.Option(None, "--van", help="Van config; default: configs/van.toml.")
NO_CACHE_OPT = typer.Option(
    False, "--no-cache", help="Rebuild the road graph from the OSM extract (and re-cache it)."
)
OUTPUT_OPT = typer.Option(
    ...,
    "--output",
    "-o",
    help=f"Map file to write; the format follows the suffix ({', '.join(MAP_FORMATS)}).",
)


def register(app: typer.Typer) -> None:
    app.add_typer(site_app, name="site")


@contextmanager
def _progress() -> Iterator[Progress]:
    with Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        TimeElapsedColumn(),
        console=Console(stderr=True),
        transient=True,
    ) as progress:
        yield progress


def _load(site_file: Path | None, van_file: Path | None, no_cache: bool) -> RoadNetwork:
    from fleet.roads import load_network

    site = load_site(site_file or default_site_file())
    van = load_van_spec(van_file or default_van_file())
    with _progress() as progress:
        task = progress.add_task(f"{site.name}: road network", total=1.0)

        def report(stage: str, fraction: float) -> None:
            progress.update(task, description=f"{site.name}: {stage}", completed=fraction)

        net = load_network(site, van, use_cache=not no_cache, progress=report)
        progress.update(task, description=f"{site.name}: depots", completed=1.0)
    return net


def _clock(seconds: int) -> str:
    return f"{seconds // 3600:02d}:{seconds % 3600 // 60:02d}"


def _print_summary(net: RoadNetwork, summary: SiteSummary) -> None:
    site = net.site
    info = Table(title=f"Site {site.name}", show_header=False, title_justify="left")
    info.add_column("", style="bold")
    info.add_column("")
    info.add_row("config", str(site.config_file))
    info.add_row("OSM extract", f"{site.osm_file.name} (© OpenStreetMap contributors, ODbL)")
    info.add_row("operating area", f"{site.operating_area_file.name}: {net.area_km2:.1f} km²")
    info.add_row("road nodes kept", f"{net.num_nodes:,}")
    info.add_row("road edges kept", f"{net.num_edges:,}")
    excluded = ", ".join(site.excluded_highways) or "none"
    info.add_row("excluded road classes", excluded)
    info.add_row("timezone", site.timezone)
    info.add_row("shift", f"{_clock(site.shift_start_s)}-{_clock(site.shift_end_s)}")
    info.add_row("snap limit", f"{site.snap_max_m:g} m")
    if summary.longest is not None:
        leg = summary.longest
        info.add_row(
            "longest depot-to-depot path",
            f"{leg.source} → {leg.target}: {leg.dist_m / 1000:.2f} km, {leg.time_s / 60:.1f} min",
        )
    console.print(info)
    depots = Table(title="Depots", title_justify="left")
    depots.add_column("id", no_wrap=True)
    depots.add_column("kind", no_wrap=True)
    depots.add_column("vans", justify="right")
    depots.add_column("snap to road", justify="right", no_wrap=True)
    depots.add_column("road node", justify="right", no_wrap=True)
    depots.add_column("name")
    for d in summary.depots:
        snap = d.snap
        depots.add_row(
            d.depot.id,
            "warehouse" if d.is_warehouse else "station",
            str(d.depot.vans),
            f"{snap.dist_m:.1f} m" if snap else "[red]refused[/]",
            str(snap.node) if snap else f"[red]{d.refused}[/]",
            d.depot.name,
        )
    console.print(depots)


def _fail_on_problems(summary: SiteSummary, site_file: Path) -> None:
    problems = summary.problems
    if problems:
        raise RoadError(f"{site_file}: " + "; ".join(problems))


@site_app.command("show")
def show(
    site_file: Path | None = SITE_ARG,
    van_file: Path | None = VAN_OPT,
    no_cache: bool = NO_CACHE_OPT,
) -> None:
    """Print the site: roads kept, operating-area size, depots with their snap distance to the
    road, and the longest shortest path between any two depots."""
    from fleet.roads.summary import summarize_site

    net = _load(site_file, van_file, no_cache)
    summary = summarize_site(net)
    _print_summary(net, summary)
    _fail_on_problems(summary, net.site.config_file)


@site_app.command("map")
def map_(
    site_file: Path | None = SITE_ARG,
    output: Path = OUTPUT_OPT,
    van_file: Path | None = VAN_OPT,
    no_cache: bool = NO_CACHE_OPT,
) -> None:
    """Draw the road network, the operating area, the warehouse and the stations: an offline
    HTML page with pan, zoom and popups, or an image (PNG, SVG, PDF)."""
    from fleet.roads.summary import summarize_site
    from fleet.viz.site_map import site_map

    check_map_path(output)
    net = _load(site_file, van_file, no_cache)
    summary = summarize_site(net)
    with _progress() as progress:
        progress.add_task(f"drawing {output.name}", total=None)
        write_map(site_map(net, summary), output)
    size_kb = output.stat().st_size / 1024
    console.print(
        f"wrote {output} ({size_kb:,.0f} kB): {net.site.name}, {net.num_nodes:,} "
        f"road nodes, {len(summary.depots)} depots"
    )
    _fail_on_problems(summary, net.site.config_file)
