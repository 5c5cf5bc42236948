"""The van: an L4 light electric truck, and its limits."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from fleet.model.toml_table import Table


@dataclass(frozen=True, slots=True)
class VanSpec:
    """Limits and performance of one van model. Units are in the names."""

    name: str
    range_km: float  # on a full charge
    top_speed_kmh: float
    payload_kg: float
    cargo_volume_m3: float
    battery_kwh: float  # usable capacity
    consumption_kwh_per_km: float
    range_reserve_pct: float  # never planned below this share of a full charge
    charging_power_kw: float  # at the warehouse and the stations
    max_accel_mps2: float
    max_decel_mps2: float
    # service times
    door_stop_s: float  # fixed time at a delivery address
    per_parcel_s: float  # added per parcel handed over
    station_unload_s: float  # leg 1: unloading one consignment at a station
    depot_load_s: float  # loading the van before each trip
    # a rescue trip (docs/plan.md, "Breakdowns"): another van meets a broken-down van where
    # it stands and takes its load over: this fixed time, plus this per parcel moved
    transfer_s: float = 600.0
    transfer_per_parcel_s: float = 10.0

    def transfer_time_s(self, parcels: int) -> float:
        """Time to move ``parcels`` from a broken-down van into the rescuing van."""
        return self.transfer_s + parcels * self.transfer_per_parcel_s

    @property
    def usable_range_km(self) -> float:
        """Distance that may be planned on one full charge, after the reserve."""
        return self.range_km * (1.0 - self.range_reserve_pct / 100.0)

    @property
    def top_speed_mps(self) -> float:
        return self.top_speed_kmh / 3.6

    @property
    def energy_per_m_kwh(self) -> float:
        return self.consumption_kwh_per_km / 1000.0

    def charge_time_s(self, energy_kwh: float) -> float:
        """Time at the depot charger to put ``energy_kwh`` back in the battery."""
        return max(0.0, energy_kwh) / self.charging_power_kw * 3600.0


# Range implied by battery / consumption may differ from the stated range by this share.
RANGE_CONSISTENCY_TOLERANCE = 0.02


def load_van_spec(path: Path) -> VanSpec:
    """Read ``[van]`` and ``[service]`` from ``path``; every wrong key fails with its name
    (``transfer_s`` and ``transfer_per_parcel_s`` may be left out: 600 s and 10 s)."""
    root = Table.root(path)
    van = root.table("van")
    service = root.table("service")
    spec = VanSpec(
        name=van.string("name"),
        range_km=van.number("range_km", "km", gt=0),
        top_speed_kmh=van.number("top_speed_kmh", "km/h", gt=0, le=130),
        payload_kg=van.number("payload_kg", "kg", gt=0),
        cargo_volume_m3=van.number("cargo_volume_m3", "m³", gt=0),
        battery_kwh=van.number("battery_kwh", "kWh", gt=0),
        consumption_kwh_per_km=van.number("consumption_kwh_per_km", "kWh/km", gt=0),
        range_reserve_pct=van.number("range_reserve_pct", "%", ge=0, lt=100),
        charging_power_kw=van.number("charging_power_kw", "kW", gt=0),
        max_accel_mps2=van.number("max_accel_mps2", "m/s²", gt=0, le=10),
        max_decel_mps2=van.number("max_decel_mps2", "m/s²", gt=0, le=10),
        door_stop_s=service.number("door_stop_s", "s", ge=0),
        per_parcel_s=service.number("per_parcel_s", "s", ge=0),
        station_unload_s=service.number("station_unload_s", "s", ge=0),
        depot_load_s=service.number("depot_load_s", "s", ge=0),
        transfer_s=service.number("transfer_s", "s", ge=0, default=600.0),
        transfer_per_parcel_s=service.number("transfer_per_parcel_s", "s", ge=0, default=10.0),
    )
    van.finish()
    service.finish()
    root.finish()
    implied_km = spec.battery_kwh / spec.consumption_kwh_per_km
    if abs(implied_km - spec.range_km) > RANGE_CONSISTENCY_TOLERANCE * spec.range_km:
        raise van.error(
            "consumption_kwh_per_km",
            f"battery_kwh / consumption_kwh_per_km gives {implied_km:.1f} km, "
            f"but range_km is {spec.range_km:g} km (they must agree within "
            f"{RANGE_CONSISTENCY_TOLERANCE:.0%})",
        )
    return spec
