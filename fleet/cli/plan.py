"""``fleet plan``, ``fleet verify`` and ``fleet orders sample|check``: plan a day, re-check it."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich import box
from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from fleet.errors import InputError, VerificationError
from fleet.model import Plan, Site, Unserved, UnservedReason, VanSpec, load_site, load_van_spec
from fleet.paths import default_site_file, default_van_file
from fleet.viz import MAP_FORMATS, check_map_path, write_map

if TYPE_CHECKING:  # the planner and the road graph load when a command runs, not for --help
    from fleet.planning.orders import BadRow
    from fleet.planning.sizing import FleetSizing
    from fleet.roads import RoadNetwork

console = Console()
if not console.is_terminal:
    console = Console(width=140)  # piped or redirected: never cut a table to 80 columns
err = Console(stderr=True)

orders_app = typer.Typer(
    name="orders",
    help="Make or check an orders CSV (format: docs/orders.md).",
    no_args_is_help=True,
)

SITE_OPT = typer.Option(
    None, "--site", "-s", help="Site config (configs/sites/<city>.toml); default: Porto."
)
VAN_OPT = typer.Option(None, "--van", help="Van config; default: configs/van.toml.")
NO_CACHE_OPT = typer.Option(
    False, "--no-cache", help="Rebuild the road graph from the OSM extract (and re-cache it)."
)
ORDERS_ARG = typer.Argument(..., help="Orders CSV (docs/orders.md).")
PLAN_OUT_OPT = typer.Option(
    None, "--output", "-o", help="Plan file to write (plan.json); needed unless --size-fleet."
)
SIZE_FLEET_OPT = typer.Option(
    False,
    "--size-fleet",
    help="Say how many vans each depot needs for these orders (the fewest that serve every "
    "parcel) instead of writing a plan; --time-limit covers all of it.",
)
MAP_OPT = typer.Option(
    None, "--map", help=f"Also draw the plan on the city ({', '.join(MAP_FORMATS)})."
)
TIME_LIMIT_OPT = typer.Option(
    30.0, "--time-limit", min=0.5, help="Seconds the optimiser may spend (both legs)."
)
SEED_OPT = typer.Option(1, "--seed", help="Seed of the optimiser's randomness.")
VANS_OPT = typer.Option(
    [], "--vans", help="Vans of a depot instead of the site config: DEPOT=N (repeatable)."
)
SKIP_OPT = typer.Option(
    False, "--skip-bad-rows", help="Plan the good rows of a file with errors; list the rest."
)
DAY_OPT = typer.Option(
    None, "--day", help="Plan day YYYY-MM-DD (default: from the orders, else today)."
)
WORKERS_OPT = typer.Option(
    None, "--workers", min=1, help="Processes for the optimiser (default: every core)."
)
PLAN_ARG = typer.Argument(..., metavar="PLAN_JSON", help="Plan file (plan.json).")
ORDERS_OPT = typer.Option(
    None, "--orders", help="Check against this orders CSV instead of the parcels in the plan."
)
ORDERS_OUT_OPT = typer.Option(..., "--output", "-o", help="Orders CSV to write.")
PARCELS_OPT = typer.Option(2000, "--parcels", "-n", min=0, help="How many parcels.")
SAMPLE_SEED_OPT = typer.Option(1, "--seed", help="Same seed, same orders.")
CHECK_DAY_OPT = typer.Option(None, "--day", help="Plan day YYYY-MM-DD.")


def register(app: typer.Typer) -> None:
    app.command("plan")(plan)
    app.command("verify")(verify)
    app.add_typer(orders_app, name="orders")


@contextmanager
def _progress() -> Iterator[Progress]:
    with Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.percentage:>3.0f}%"),
        TimeElapsedColumn(),
        console=err,
        transient=True,
        # redrawn on each update, not by a refresh thread: with one thread the planner may
        # fork its worker processes (cheap), instead of starting fresh interpreters
        auto_refresh=False,
    ) as progress:
        yield progress


def _configs(site_file: Path | None, van_file: Path | None) -> tuple[Site, VanSpec]:
    return load_site(site_file or default_site_file()), load_van_spec(
        van_file or default_van_file()
    )


def _network(site: Site, van: VanSpec, no_cache: bool, progress: Progress) -> RoadNetwork:
    from fleet.roads import load_network

    task = progress.add_task(f"{site.name}: road network", total=1.0)

    def report(stage: str, fraction: float) -> None:
        progress.update(task, description=f"{site.name}: {stage}", completed=fraction, refresh=True)

    net = load_network(site, van, use_cache=not no_cache, progress=report)
    progress.remove_task(task)
    return net


def parse_vans(items: list[str]) -> dict[str, int]:
    """``["WH-PORTO=8", "ST-BAIXA=3,ST-FOZ=2"]`` → ``{"WH-PORTO": 8, ...}``."""
    out: dict[str, int] = {}
    for item in items:
        for part in item.split(","):
            depot, sep, count = part.strip().partition("=")
            if not sep or not depot or not count.strip().isdigit():
                raise InputError(f"--vans {part.strip()!r}: expected DEPOT=N, e.g. WH-PORTO=8")
            out[depot.strip()] = int(count)
    return out


def _bad_rows_as_unserved(bad: tuple[BadRow, ...], taken: set[str]) -> list[Unserved]:
    out = []
    for b in bad:
        pid = b.parcel_id if b.parcel_id and b.parcel_id not in taken else ""
        pid = pid or f"{b.parcel_id or 'row'}@line{b.line}"
        taken.add(pid)
        out.append(Unserved(pid, UnservedReason.BAD_ROW, f"line {b.line}: {b.field}: {b.message}"))  # type: ignore[arg-type]
    return out


def _today(site: Site) -> date:
    from fleet.planning.orders import site_zone

    return datetime.now(site_zone(site)).date()


def print_summary(plan: Plan, van: VanSpec, elapsed_s: float | None = None) -> None:
    from fleet.planning.text import clock

    s = plan.summary
    head = Table(
        title=f"Plan for {plan.site} on {plan.day.isoformat()}",
        show_header=False,
        title_justify="left",
    )
    head.add_column("", style="bold")
    head.add_column("")
    head.add_row("parcels served", f"{s.served:,} of {s.parcels:,}")
    head.add_row("parcels unserved", f"{s.unserved:,}")
    head.add_row("vans used", f"{s.vans_used} of {s.vans_available}")
    head.add_row("trips", f"{s.trips}")
    head.add_row(
        "distance",
        f"{s.dist_m / 1000:,.1f} km (line haul {s.line_haul_dist_m / 1000:,.1f} km, "
        f"last mile {s.last_mile_dist_m / 1000:,.1f} km)",
    )
    head.add_row("energy", f"{s.energy_kwh:,.1f} kWh")
    if elapsed_s is not None:
        head.add_row("planned in", f"{elapsed_s:.1f} s (verified)")
    console.print(head)
    vans = Table(title="Vans", title_justify="left", box=box.SIMPLE_HEAD)
    vans.add_column("van", no_wrap=True)
    for col in ("leg", "trips", "stops", "parcels", "km", "kWh", "out", "back", "SoC≥"):
        vans.add_column(col, justify="right", no_wrap=True)
    vans.add_column("kg", justify="right", no_wrap=True)
    vans.add_column("m³", justify="right", no_wrap=True)
    vans.caption = "leg: LH line haul, LM last mile; SoC≥: lowest charge; kg, m³: mean load out"
    for v in s.vans:
        vans.add_row(
            v.van_id,
            "LH" if v.leg.value == "line_haul" else "LM",
            str(v.trips),
            str(v.stops),
            str(v.parcels),
            f"{v.dist_m / 1000:.1f}",
            f"{v.energy_kwh:.1f}",
            clock(v.start_s),
            clock(v.end_s),
            f"{v.min_soc_pct:.0f} %",
            f"{v.util_kg_pct:.0f} %",
            f"{v.util_m3_pct:.0f} %",
        )
    console.print(vans)
    if plan.unserved:
        reasons = Counter(u.reason.value for u in plan.unserved)
        table = Table(title="Not served", title_justify="left")
        table.add_column("reason")
        table.add_column("parcels", justify="right")
        table.add_column("example")
        for reason, n in reasons.most_common():
            example = next(u for u in plan.unserved if u.reason.value == reason)
            table.add_row(reason, str(n), f"{example.parcel_id}: {example.detail}")
        console.print(table)


def print_sizing(sizing: FleetSizing, site: Site, parcels: int, elapsed_s: float) -> None:
    """The fleet sizing as a table per depot, then what no number of vans changes."""
    table = Table(
        title=f"Vans needed for {parcels:,} parcels at {site.name} "
        f"({sizing.current.day.isoformat()}, {elapsed_s:.0f} s, verified)",
        title_justify="left",
        box=box.SIMPLE_HEAD,
    )
    table.add_column("depot", no_wrap=True)
    table.add_column("vans available", justify="right")
    table.add_column("vans needed", justify="right")
    table.add_column("short of vans: now", justify="right")
    table.add_column("with vans needed", justify="right")
    table.caption = (
        "vans needed: the fewest that serve every parcel a van can serve (each van makes as "
        "many trips as its shift allows); short of vans: parcels left `not_enough_vans`; "
        "≥: even that many left some, more may be needed"
    )
    for d in sizing.depots:
        needed = f"≥ {d.needed}" if d.at_least else str(d.needed)
        style = "bold red" if d.needed > d.available else None
        table.add_row(
            d.depot,
            str(d.available),
            needed,
            str(d.short_now),
            str(d.short_sized),
            style=style,
        )
    if sizing.unattributed_now or sizing.unattributed_sized:
        table.add_row(
            "(no depot named)", "", "", str(sizing.unattributed_now), str(sizing.unattributed_sized)
        )
    table.add_row(
        "all",
        str(sum(d.available for d in sizing.depots)),
        str(sum(d.needed for d in sizing.depots)),
        str(sum(d.short_now for d in sizing.depots) + sizing.unattributed_now),
        str(sum(d.short_sized for d in sizing.depots) + sizing.unattributed_sized),
        style="bold",
    )
    console.print(table)
    other = Counter(
        u.reason.value
        for u in sizing.sized.unserved
        if u.reason is not UnservedReason.NOT_ENOUGH_VANS
    )
    if other:
        console.print(
            f"{sum(other.values())} parcel(s) no number of vans can serve: "
            + ", ".join(f"{n} {reason}" for reason, n in other.most_common())
        )
    short = [d.depot for d in sizing.depots if d.short_now and d.needed > d.available]
    if short:
        console.print(f"not_enough_vans is real today at {', '.join(short)}")


def plan(
    orders: Path = ORDERS_ARG,
    output: Path | None = PLAN_OUT_OPT,
    site_file: Path | None = SITE_OPT,
    van_file: Path | None = VAN_OPT,
    map_file: Path | None = MAP_OPT,
    time_limit: float = TIME_LIMIT_OPT,
    seed: int = SEED_OPT,
    vans: list[str] = VANS_OPT,
    skip_bad_rows: bool = SKIP_OPT,
    day: str | None = DAY_OPT,
    workers: int | None = WORKERS_OPT,
    no_cache: bool = NO_CACHE_OPT,
    size_fleet: bool = SIZE_FLEET_OPT,
) -> None:
    """Plan both legs of a day: line haul to the stations, last mile to the doors.

    Shows progress, verifies the plan independently, writes it, and prints a summary.
    With --size-fleet: how many vans each depot needs for the day, as a table.
    """
    from fleet.planning import plan_day, read_orders, write_plan
    from fleet.planning.plan_map import plan_map

    if size_fleet and (output is not None or map_file is not None):
        raise InputError("--size-fleet writes no plan: leave out --output and --map")
    if not size_fleet and output is None:
        raise InputError("--output is needed: the plan file to write (or use --size-fleet)")
    if map_file is not None:
        check_map_path(map_file)
    site, van = _configs(site_file, van_file)
    fleet = parse_vans(vans)
    plan_day_date: date | None = None
    if day is not None:
        try:
            plan_day_date = date.fromisoformat(day)
        except ValueError as exc:
            raise InputError(f"--day {day!r}: expected a date YYYY-MM-DD") from exc
    book = read_orders(orders, site, day=plan_day_date)
    skipped: list[Unserved] = []
    if book.bad_rows:
        if not skip_bad_rows:
            book.require_clean()
        skipped = _bad_rows_as_unserved(book.bad_rows, {p.id for p in book.parcels})
        table = Table(title=f"Skipped {len(book.bad_rows)} bad row(s)", title_justify="left")
        table.add_column("line", justify="right")
        table.add_column("parcel")
        table.add_column("field")
        table.add_column("problem")
        for b in book.bad_rows:
            table.add_row(str(b.line), b.parcel_id, b.field, b.message)
        err.print(table)
    the_day = plan_day_date or book.day or _today(site)
    t0 = time.monotonic()
    sizing: FleetSizing | None = None
    with _progress() as progress:
        net = _network(site, van, no_cache, progress)
        task = progress.add_task("planning", total=1.0)

        def report(stage: str, fraction: float) -> None:
            progress.update(
                task, description=f"{site.name}: {stage}", completed=fraction, refresh=True
            )

        if size_fleet:
            from fleet.planning.sizing import size_fleet as run_sizing

            sizing = run_sizing(
                book.parcels,
                site,
                van,
                net,
                time_limit_s=time_limit,
                seed=seed,
                progress=report,
                day=the_day,
                vans=fleet,
                workers=workers,
            )
        else:
            assert output is not None
            try:
                result = plan_day(
                    book.parcels,
                    site,
                    van,
                    net,
                    time_limit_s=time_limit,
                    seed=seed,
                    progress=report,
                    day=the_day,
                    created_utc=datetime.now(UTC)
                    .isoformat(timespec="seconds")
                    .replace("+00:00", "Z"),
                    vans=fleet,
                    workers=workers,
                    already_unserved=skipped,
                )
            except VerificationError as exc:
                raise VerificationError(
                    [
                        "the planner made a plan its verifier rejects (nothing written)",
                        *exc.violations,
                    ]
                ) from exc
            progress.update(
                task, description=f"{site.name}: writing {output.name}", completed=1.0, refresh=True
            )
            write_plan(result, output, parcels=book.parcels)
            if map_file is not None:
                progress.update(
                    task, description=f"{site.name}: drawing {map_file.name}", refresh=True
                )
                write_map(plan_map(result, net, book.parcels), map_file)
    if sizing is not None:
        print_sizing(sizing, site, len(book.parcels), time.monotonic() - t0)
        return
    print_summary(result, van, time.monotonic() - t0)
    err.print(f"wrote {output}" + (f" and {map_file}" if map_file else ""))


def verify(
    plan_file: Path = PLAN_ARG,
    site_file: Path | None = SITE_OPT,
    van_file: Path | None = VAN_OPT,
    orders: Path | None = ORDERS_OPT,
    no_cache: bool = NO_CACHE_OPT,
) -> None:
    """Re-check a plan on the road graph: every limit, window and parcel. Exits 1 with one line
    per violation."""
    from fleet.planning import read_orders, verify_plan
    from fleet.planning.plan_io import read_plan_and_parcels

    site, van = _configs(site_file, van_file)
    the_plan, parcels = read_plan_and_parcels(plan_file)
    if orders is not None:
        book = read_orders(orders, site, day=the_plan.day)
        book.require_clean()
        parcels = book.parcels
    elif not parcels and the_plan.routes:
        raise InputError(f"{plan_file}: holds no parcels; give the orders with --orders")
    with _progress() as progress:
        net = _network(site, van, no_cache, progress)
        task = progress.add_task("verifying", total=None)
        progress.refresh()
        problems = verify_plan(the_plan, parcels, site, van, net)
        progress.remove_task(task)
    if problems:
        for line in problems:
            console.print(line, highlight=False, soft_wrap=True)
        err.print(f"[bold red]{plan_file}: {len(problems)} violation(s)[/]")
        raise typer.Exit(1)
    s = the_plan.summary
    console.print(
        f"{plan_file}: valid — {s.served:,} parcels delivered by {s.vans_used} vans in "
        f"{s.trips} trips, {s.unserved:,} listed unserved, {s.dist_m / 1000:,.1f} km",
        highlight=False,
    )


@orders_app.command("sample")
def sample(
    output: Path = ORDERS_OUT_OPT,
    site_file: Path | None = SITE_OPT,
    van_file: Path | None = VAN_OPT,
    parcels: int = PARCELS_OPT,
    seed: int = SAMPLE_SEED_OPT,
    no_cache: bool = NO_CACHE_OPT,
) -> None:
    """Write a realistic day of orders on the site's residential streets (docs/orders.md)."""
    from fleet.planning import write_orders
    from fleet.planning.sample import sample_orders

    site, van = _configs(site_file, van_file)
    with _progress() as progress:
        net = _network(site, van, no_cache, progress)
        task = progress.add_task(f"sampling {parcels:,} parcels", total=None)
        progress.refresh()
        made = sample_orders(net, parcels, seed)
        write_orders(made, output)
        progress.remove_task(task)
    windows = sum(p.has_window for p in made)
    kg = sum(p.weight_kg for p in made)
    console.print(
        f"wrote {output}: {len(made):,} parcels on {site.name}, {kg:,.0f} kg in all, "
        f"{windows:,} with a delivery window",
        highlight=False,
    )


@orders_app.command("check")
def check(
    orders: Path = ORDERS_ARG,
    site_file: Path | None = SITE_OPT,
    day: str | None = CHECK_DAY_OPT,
) -> None:
    """Check an orders CSV; list every bad row with its line and field (exit 1 if any)."""
    from fleet.planning import read_orders

    site = load_site(site_file or default_site_file())
    plan_day_date = None
    if day is not None:
        try:
            plan_day_date = date.fromisoformat(day)
        except ValueError as exc:
            raise InputError(f"--day {day!r}: expected a date YYYY-MM-DD") from exc
    book = read_orders(orders, site, day=plan_day_date)
    for b in book.bad_rows:
        console.print(str(b), highlight=False, soft_wrap=True)
    console.print(
        f"{orders}: {len(book.parcels):,} good row(s), {len(book.bad_rows):,} bad",
        highlight=False,
    )
    if book.bad_rows:
        raise typer.Exit(1)
