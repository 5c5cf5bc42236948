"""The small world every fault run shares: a site, a van, a controller tuning, a day's orders
and the plan for them — made once per test session, with the real tools.

The site is Porto Alegre's road network (the extract shipped in ``configs/sites/data``) with
one warehouse and one station a few hundred metres apart, one line-haul van and two
last-mile vans, and six parcels at street corners around the station; the van's service
times are shortened so that a whole day runs in a few hundred simulated seconds. The plan
comes from ``fleet plan`` itself (PyVRP, the independent verifier, plan.json).
"""

from __future__ import annotations

import math
import os
import random
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

from fleet.model import load_site, load_van_spec
from fleet.roads import load_network

REPO = Path(__file__).resolve().parents[2]
BASE_SITE = REPO / "configs" / "sites" / "poa.toml"
DAY = date(2026, 11, 23)
STATION = ("ST-CENTRO", -51.22697, -30.03105)
PARCELS = 6
SEED = 20261123

VAN_TOML = """\
# The L4 van with short service times: a fault-injection day lasts minutes, not hours.
[van]
name = "L4 light truck (fault tests)"
range_km = 160.0
top_speed_kmh = 60.0
payload_kg = 1000.0
cargo_volume_m3 = 24.0
battery_kwh = 48.0
consumption_kwh_per_km = 0.30
range_reserve_pct = 10.0
charging_power_kw = 50.0
max_accel_mps2 = 1.2
max_decel_mps2 = 2.5

[service]
door_stop_s = 15.0
per_parcel_s = 5.0
station_unload_s = 60.0
depot_load_s = 60.0
"""


def controller_toml(factor: float) -> str:
    """The production timers, which are wall-clock intervals, in accelerated seconds."""

    def wall(seconds: float) -> float:
        return round(seconds * factor, 3)

    return f"""\
[controller]
name = "fleet-controller"
release_ahead_stops = 2
stale_after_s = {wall(10.0)}
offline_replan_after_s = 120.0
fatal_grace_s = {wall(1.0)}
resend_first_s = {wall(0.5)}
resend_max_s = {wall(4.0)}
resend_give_up_s = {wall(60.0)}
estop_resend_s = {wall(0.2)}
flush_interval_s = {wall(0.25)}
tick_s = {min(10.0, wall(0.1))}
replan_time_limit_s = 2.0

[limits]
max_messages_per_van_per_s = 20.0
burst_messages_per_van = 40
max_pending_messages = 100000
"""


@dataclass(frozen=True)
class World:
    root: Path
    cache_dir: Path
    site_file: Path
    van_file: Path
    orders_file: Path
    plan_file: Path
    homes: dict[str, tuple[float, float]]  # van id → its depot's lon/lat
    parcel_ids: tuple[str, ...]
    start_epoch_s: float  # 06:00 local on DAY, when the shift starts

    def controller_file(self, factor: float) -> Path:
        path = self.root / f"controller-x{factor:g}.toml"
        if not path.exists():
            path.write_text(controller_toml(factor), encoding="utf-8")
        return path

    def env(self) -> dict[str, str]:
        return {**os.environ, "FLEET_CACHE_DIR": str(self.cache_dir)}


@contextmanager
def _cache_env(cache_dir: Path) -> Iterator[None]:
    old = os.environ.get("FLEET_CACHE_DIR")
    os.environ["FLEET_CACHE_DIR"] = str(cache_dir)
    try:
        yield
    finally:
        if old is None:
            del os.environ["FLEET_CACHE_DIR"]
        else:
            os.environ["FLEET_CACHE_DIR"] = old


def _metres(a: tuple[float, float], b: tuple[float, float]) -> float:
    lat0 = math.radians((a[1] + b[1]) / 2)
    dx = (a[0] - b[0]) * 111_320.0 * math.cos(lat0)
    dy = (a[1] - b[1]) * 110_540.0
    return math.hypot(dx, dy)


def build_world(root: Path) -> World:
    root.mkdir(parents=True, exist_ok=True)
    cache_dir = root / "cache"
    van_file = root / "van.toml"
    van_file.write_text(VAN_TOML, encoding="utf-8")
    base = load_site(BASE_SITE)
    with _cache_env(cache_dir):
        net = load_network(base, load_van_spec(van_file))
    station = (STATION[1], STATION[2])
    rng = random.Random(SEED)
    nodes = sorted(net.graph.nodes)
    by_distance: dict[str, list[tuple[float, float]]] = {"warehouse": [], "doors": []}
    for node in nodes:
        lonlat = net.lonlat(node)
        d = _metres(lonlat, station)
        if 450 <= d <= 650:
            by_distance["warehouse"].append(lonlat)
        elif 150 <= d <= 450:
            by_distance["doors"].append(lonlat)
    warehouse = rng.choice(by_distance["warehouse"])
    doors = rng.sample(by_distance["doors"], PARCELS)
    site_file = root / "site.toml"
    site_file.write_text(
        f"""\
# Fault-injection site: Porto Alegre's roads, a warehouse and one station close together.
# Road data: © OpenStreetMap contributors (ODbL 1.0).
[site]
name = "Porto Alegre (fault tests)"
osm_file = "{base.osm_file.resolve()}"
operating_area_file = "{base.operating_area_file.resolve()}"
timezone = "{base.timezone}"
snap_max_m = {base.snap_max_m}

[roads]
exclude_highways = {list(base.excluded_highways)!r}

[shift]
start = "06:00"
end = "20:00"

[warehouse]
id = "WH-F"
name = "fault-test warehouse"
lon = {warehouse[0]!r}
lat = {warehouse[1]!r}
vans = 1

[[stations]]
id = "{STATION[0]}"
name = "Centro Histórico"
lon = {STATION[1]!r}
lat = {STATION[2]!r}
vans = 2
""".replace("'", '"'),
        encoding="utf-8",
    )
    parcel_ids = tuple(f"P{i}" for i in range(1, PARCELS + 1))
    orders_file = root / "orders.csv"
    orders_file.write_text(
        "parcel_id,lon,lat,weight_kg,volume_m3,station\n"
        + "".join(
            f"{pid},{lon!r},{lat!r},{2.0 + i},{0.02 * (i + 1):.2f},{STATION[0]}\n"
            for i, (pid, (lon, lat)) in enumerate(zip(parcel_ids, doors, strict=True))
        ),
        encoding="utf-8",
    )
    plan_file = root / "plan.json"
    done = subprocess.run(
        [
            sys.executable, "-c", "from fleet.cli.app import main; main()",
            "plan", str(orders_file), "--output", str(plan_file), "--site", str(site_file),
            "--van", str(van_file), "--time-limit", "1", "--day", DAY.isoformat(),
            "--workers", "1",
        ],
        env={**os.environ, "FLEET_CACHE_DIR": str(cache_dir)},
        capture_output=True,
        text=True,
        timeout=300,
    )  # fmt: skip
    if done.returncode != 0:
        raise RuntimeError(f"fleet plan failed:\n{done.stdout}\n{done.stderr}")
    site = load_site(site_file)
    homes = {f"{d.id}-{k:02d}": (d.lon, d.lat) for d in site.depots for k in range(1, d.vans + 1)}
    start = datetime.combine(DAY, datetime.min.time(), ZoneInfo(site.timezone)).replace(hour=6)
    return World(
        root=root,
        cache_dir=cache_dir,
        site_file=site_file,
        van_file=van_file,
        orders_file=orders_file,
        plan_file=plan_file,
        homes=homes,
        parcel_ids=parcel_ids,
        start_epoch_s=start.astimezone(UTC).timestamp(),
    )
