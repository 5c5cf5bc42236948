"""The van's motion and energy as a pure, steppable object (contract section 5).

:class:`Vehicle` follows queued waypoints at no more than the segment's speed cap and the
van's top speed, accelerating and braking within the limits of :class:`fleet.model.VanSpec`,
stops exactly at stop points (and dwells there) and at the end of what it was given, drains
``consumption_kwh_per_km`` for every metre so a full charge lasts ``range_km``, counts an
odometer, moves its cargo door, charges while standing (``start_charging``: towards a target
at up to ``charging_power_kw``; it does not drive off while charging), and carries fault
flags. ``step(dt_s)`` advances it; it never
reads a clock, so the simulated VCU steps it in (scaled) real time and the simulator's fast
mode steps it as fast as it likes. Long cruising steps are taken in one go; braking and
acceleration are integrated in steps of at most :data:`MAX_STEP_S`.

Braking uses ``service_decel = 0.6 × max_decel`` for planned stops and speed-cap changes, and
``max_decel`` for an emergency stop.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from enum import Enum

from firmware_bridge.wire import DoorState, DriveState
from fleet.model import VanSpec

EARTH_RADIUS_M = 6_371_008.8
MAX_STEP_S = 0.1  # integration step while accelerating or braking
CRUISE_STEP_S = 5.0  # longest single step while cruising far from any constraint
SERVICE_DECEL_SHARE = 0.6
ARRIVE_EPS_M = 0.05
BATTERY_LOW_PCT = 10.0
DOOR_MOVE_S = 3.0
# A minimal-risk stop pulls up at a stop point of the mission if one lies within this distance
# beyond the braking distance; otherwise at the roadside where braking ends (in this simulator
# every point of a road is a legal roadside stopping point).
SAFE_PLACE_LOOKAHEAD_M = 30.0


def distance_m(lon1: float, lat1: float, lon2: float, lat2: float) -> float:
    """Distance on a local flat approximation of the sphere (exact enough below a few km)."""
    k = math.radians(1.0) * EARTH_RADIUS_M
    dx = (lon2 - lon1) * k * math.cos(math.radians((lat1 + lat2) / 2))
    dy = (lat2 - lat1) * k
    return math.hypot(dx, dy)


def bearing_deg(lon1: float, lat1: float, lon2: float, lat2: float) -> float:
    """Clockwise from north, 0 ≤ b < 360."""
    dx = (lon2 - lon1) * math.cos(math.radians((lat1 + lat2) / 2))
    dy = lat2 - lat1
    return math.degrees(math.atan2(dx, dy)) % 360.0


@dataclass(frozen=True, slots=True)
class Waypoint:
    lon: float
    lat: float
    index: int  # number within the mission
    cap_mps: float  # speed cap on the way to this waypoint
    stop: bool = False  # stop here (and dwell)
    dwell_s: float = 0.0


class EventKind(Enum):
    WAYPOINT = "waypoint"  # a waypoint was passed or reached
    ARRIVED = "arrived"  # standing at a stop point or at the end of the queued waypoints
    DWELL_DONE = "dwell_done"
    DOOR_OPEN = "door_open"
    DOOR_CLOSED = "door_closed"
    BATTERY_LOW = "battery_low"
    BATTERY_EMPTY = "battery_empty"
    CHARGE_DONE = "charge_done"  # a charge reached its target (or was ended)
    STOPPED = "stopped"  # came to a standstill after a stop, e-stop or fault


@dataclass(frozen=True, slots=True)
class VehicleEvent:
    kind: EventKind
    wp: int | None = None


class Vehicle:
    """One van's body: position, speed, battery, odometer, door, faults."""

    def __init__(
        self,
        spec: VanSpec,
        *,
        lon: float,
        lat: float,
        heading_deg: float = 0.0,
        soc_pct: float = 100.0,
        odometer_m: float = 0.0,
    ) -> None:
        self.spec = spec
        self.lon = lon
        self.lat = lat
        self.heading_deg = heading_deg % 360.0
        self.speed_mps = 0.0
        self.energy_kwh = spec.battery_kwh * min(100.0, max(0.0, soc_pct)) / 100.0
        self.odometer_m = odometer_m
        self.door = DoorState.CLOSED
        self.last_wp: int | None = None
        self.paused = False
        self.estopped = False
        self.fatal = False
        self.held = False  # a minimal-risk stop: standing at a safe place until released
        self._hold_at_wp: int | None = None  # driving on to this stop point, then held
        self._route: deque[Waypoint] = deque()
        self._dwell_left_s = 0.0
        self._door_left_s = 0.0
        self._cap_mps = spec.top_speed_mps
        self._battery_low_told = self.soc_pct < BATTERY_LOW_PCT
        self._moving_reported = False
        self.service_decel_mps2 = spec.max_decel_mps2 * SERVICE_DECEL_SHARE
        self._charge_to_kwh: float | None = None  # charging towards this, standing
        self._charge_kw = 0.0

    # ---- state ------------------------------------------------------------------------

    @property
    def soc_pct(self) -> float:
        return 100.0 * self.energy_kwh / self.spec.battery_kwh

    @property
    def remaining_range_km(self) -> float:
        return self.energy_kwh / self.spec.consumption_kwh_per_km

    @property
    def battery_empty(self) -> bool:
        return self.energy_kwh <= 0.0

    @property
    def charging(self) -> bool:
        return self._charge_to_kwh is not None

    @property
    def queued(self) -> int:
        """Waypoints still ahead."""
        return len(self._route)

    @property
    def dwelling(self) -> bool:
        return self._dwell_left_s > 0.0

    @property
    def state(self) -> DriveState:
        if self.fatal or self.battery_empty:
            return DriveState.FAULT
        if self.estopped:
            return DriveState.ESTOPPED
        if self.paused:
            return DriveState.PAUSED
        if self.held or self._hold_at_wp is not None:
            return DriveState.HOLDING  # a minimal-risk stop: on its way to it, or made
        if self.dwelling:
            return DriveState.DWELLING
        if self.charging and self.speed_mps == 0.0 and self._route:
            return DriveState.HOLDING  # segments wait for the charge to end
        if self._route:
            return DriveState.DRIVING
        if self.speed_mps > 0:
            return DriveState.DRIVING
        return DriveState.HOLDING if self.last_wp is not None else DriveState.IDLE

    def can_move(self) -> bool:
        return not (
            self.fatal
            or self.battery_empty
            or self.estopped
            or self.paused
            or self.held
            or self.dwelling
            or self.charging  # the cable is in
            or self.door is not DoorState.CLOSED
        )

    def start_charging(self, target_pct: float, power_kw: float) -> bool:
        """Charge towards ``target_pct`` at ``power_kw`` (capped at the van's charging
        power); refused (False) while moving or faulted. A target at or below the state of
        charge ends charging at once."""
        if self.speed_mps > 0.0 or self.fatal:
            return False
        target_kwh = self.spec.battery_kwh * min(100.0, max(0.0, target_pct)) / 100.0
        power = min(power_kw, self.spec.charging_power_kw) if power_kw > 0 else 0.0
        if target_kwh <= self.energy_kwh or power <= 0.0:
            self._charge_to_kwh = None
            return True
        self._charge_to_kwh = target_kwh
        self._charge_kw = power
        return True

    def _charge(self, h: float, events: list[VehicleEvent]) -> None:
        target = self._charge_to_kwh
        if target is None or h <= 0.0:
            return
        self.energy_kwh = min(target, self.energy_kwh + self._charge_kw * h / 3600.0)
        if self.energy_kwh >= target - 1e-9:
            self._charge_to_kwh = None
            if self.soc_pct >= BATTERY_LOW_PCT:
                self._battery_low_told = False
            events.append(VehicleEvent(EventKind.CHARGE_DONE, self.last_wp))

    # ---- commands ---------------------------------------------------------------------

    def append(
        self,
        points: Iterable[tuple[float, float]],
        *,
        first_index: int,
        speed_cap_mps: float,
        stop_at_end: bool = False,
        dwell_s: float = 0.0,
    ) -> None:
        """Queue waypoints numbered from ``first_index``; the last one may be a stop point."""
        pts = list(points)
        cap = max(0.0, min(speed_cap_mps, self.spec.top_speed_mps))
        for i, (lon, lat) in enumerate(pts):
            last = i == len(pts) - 1
            self._route.append(
                Waypoint(
                    lon, lat, first_index + i, cap, stop_at_end and last, dwell_s if last else 0.0
                )
            )

    def clear_route(self) -> None:
        """Drop every queued waypoint; the van brakes to a standstill where it is."""
        self._route.clear()
        self._dwell_left_s = 0.0
        self.last_wp = None
        if self._hold_at_wp is not None:  # the stop point it was heading for is gone
            self._hold_at_wp = None
            self.held = True

    def stop_at_next_safe_place(self, lookahead_m: float = SAFE_PLACE_LOOKAHEAD_M) -> int | None:
        """A minimal-risk stop: stand at the next safe place and hold there until
        :meth:`release_hold`. The next safe place is the next stop point of the mission (or
        the end of the queued waypoints) if it lies within the braking distance at service
        deceleration plus ``lookahead_m``; else the roadside where a controlled stop ends.
        Returns the waypoint the van stops at, or None (roadside, or standing already)."""
        if self.held or self._hold_at_wp is not None:
            return self._hold_at_wp
        if self.speed_mps == 0.0 or self.dwelling or not self._route:
            self.held = True  # standing (or braking with nothing ahead): here is the place
            return None
        braking_m = self.speed_mps**2 / (2 * self.service_decel_mps2)
        d = 0.0
        lon, lat = self.lon, self.lat
        for i, wp in enumerate(self._route):
            d += distance_m(lon, lat, wp.lon, wp.lat)
            lon, lat = wp.lon, wp.lat
            if d > braking_m + lookahead_m:
                break
            if wp.stop or i == len(self._route) - 1:
                self._hold_at_wp = wp.index
                return wp.index
        self.held = True
        return None

    def release_hold(self) -> None:
        self.held = False
        self._hold_at_wp = None

    def reset_mission(self) -> None:
        self.clear_route()

    def pause(self) -> None:
        self.paused = True

    def resume(self) -> None:
        self.paused = False

    def emergency_stop(self) -> None:
        self.estopped = True

    def release_estop(self) -> None:
        self.estopped = False

    def set_fatal(self) -> None:
        self.fatal = True

    def open_door(self) -> bool:
        """Start opening; refused (False) while moving or faulted."""
        if self.speed_mps > 0.0 or self.fatal:
            return False
        if self.door in (DoorState.CLOSED, DoorState.CLOSING):
            self.door = DoorState.OPENING
            self._door_left_s = DOOR_MOVE_S
        return True

    def close_door(self) -> bool:
        if self.fatal:
            return False
        if self.door in (DoorState.OPEN, DoorState.OPENING):
            self.door = DoorState.CLOSING
            self._door_left_s = DOOR_MOVE_S
        return True

    # ---- motion -------------------------------------------------------------------------

    def step(self, dt_s: float) -> list[VehicleEvent]:
        """Advance ``dt_s`` seconds; returns what happened, in order."""
        if dt_s < 0:
            raise ValueError(f"dt_s must be ≥ 0, got {dt_s}")
        events: list[VehicleEvent] = []
        left = dt_s
        while left > 1e-9:
            if self.charging:
                # standing still on the cable: only the door and a dwell run meanwhile
                h = self._advance(min(left, self._charge_left_s()), events)
                self._charge(h, events)
            else:
                h = self._advance(left, events)
            left -= h
        return events

    def _charge_left_s(self) -> float:
        assert self._charge_to_kwh is not None
        return max(1e-6, (self._charge_to_kwh - self.energy_kwh) / self._charge_kw * 3600.0)

    def _advance(self, max_h: float, events: list[VehicleEvent]) -> float:
        h = min(max_h, MAX_STEP_S)
        if self._door_left_s > 0.0:
            h = min(h, self._door_left_s)
            self._door_left_s -= h
            if self._door_left_s <= 1e-9:
                self._door_left_s = 0.0
                if self.door is DoorState.OPENING:
                    self.door = DoorState.OPEN
                    events.append(VehicleEvent(EventKind.DOOR_OPEN))
                elif self.door is DoorState.CLOSING:
                    self.door = DoorState.CLOSED
                    events.append(VehicleEvent(EventKind.DOOR_CLOSED))
        if self._dwell_left_s > 0.0 and not (self.paused or self.estopped):
            h = min(h, self._dwell_left_s)
            self._dwell_left_s -= h
            if self._dwell_left_s <= 1e-9:
                self._dwell_left_s = 0.0
                events.append(VehicleEvent(EventKind.DWELL_DONE, self.last_wp))
            return h
        if not self.can_move() or not self._route:
            self._brake(h, events)
            return h
        return self._drive(max_h, h, events)

    def _brake(self, h: float, events: list[VehicleEvent]) -> None:
        """Slow to a standstill along the current heading (or the route, if any)."""
        if self.speed_mps <= 0.0:
            return
        decel = self.spec.max_decel_mps2 if self.estopped else self.service_decel_mps2
        v0 = self.speed_mps
        v1 = max(0.0, v0 - decel * h)
        t_move = h if v1 > 0 else v0 / decel
        ds = (v0 + v1) / 2 * t_move
        if self._route:
            self._move_along(ds, events)
        else:
            k = ds / (math.radians(1.0) * EARTH_RADIUS_M)
            hd = math.radians(self.heading_deg)
            self.lat += k * math.cos(hd)
            self.lon += k * math.sin(hd) / max(1e-6, math.cos(math.radians(self.lat)))
            self._account(ds, events)
        self.speed_mps = v1
        if v1 == 0.0:
            events.append(VehicleEvent(EventKind.STOPPED, self.last_wp))

    def _constraints(self, horizon_m: float) -> list[tuple[float, float]]:
        """(distance ahead, speed allowed there) for stops and cap changes within the horizon."""
        out: list[tuple[float, float]] = []
        d = 0.0
        lon, lat = self.lon, self.lat
        cap = self._route[0].cap_mps
        for i, wp in enumerate(self._route):
            if wp.cap_mps < cap:
                # entering a slower part: be at its cap where it starts (the previous waypoint)
                out.append((d, wp.cap_mps))
            cap = wp.cap_mps
            d += distance_m(lon, lat, wp.lon, wp.lat)
            lon, lat = wp.lon, wp.lat
            if wp.stop or i == len(self._route) - 1:
                out.append((d, 0.0))
                break
            if d > horizon_m:
                break
        return out

    def _drive(self, max_h: float, h: float, events: list[VehicleEvent]) -> float:
        spec = self.spec
        dec = self.service_decel_mps2
        head = self._route[0]
        cap = min(head.cap_mps, spec.top_speed_mps)
        v = self.speed_mps
        horizon = spec.top_speed_mps**2 / (2 * dec) + spec.top_speed_mps * CRUISE_STEP_S + 1.0
        constraints = self._constraints(horizon)
        # cruising at the cap with every constraint far away: one long exact step
        if abs(v - cap) < 1e-9 and v > 0:
            free_m = min(
                (d - (v * v - vc * vc) / (2 * dec) - 1.0 for d, vc in constraints),
                default=math.inf,
            )
            if free_m > v * h:
                h = min(max_h, CRUISE_STEP_S, free_m / v)
                self._move_along(v * h, events)
                return h
        v_end = min(cap, v + spec.max_accel_mps2 * h)
        stop_d: float | None = None
        for d, vc in constraints:
            k = vc * vc + 2 * dec * d - dec * h * v
            safe = (-dec * h + math.sqrt((dec * h) ** 2 + 4 * max(0.0, k))) / 2
            v_end = min(v_end, safe)
            if vc == 0.0 and stop_d is None:
                stop_d = d
        v_end = max(v_end, max(0.0, v - spec.max_decel_mps2 * h))
        ds = (v + v_end) / 2 * h
        if stop_d is not None and (ds >= stop_d - ARRIVE_EPS_M or (v_end < 0.05 and stop_d < 0.5)):
            # arrive exactly at the stop point
            self._move_along(stop_d + 1.0, events, stop_at_stop=True)
            return h
        self.speed_mps = v_end
        self._move_along(ds, events)
        return h

    def _move_along(
        self, ds: float, events: list[VehicleEvent], *, stop_at_stop: bool = False
    ) -> None:
        travelled = 0.0
        while ds > 1e-12 and self._route:
            wp = self._route[0]
            d = distance_m(self.lon, self.lat, wp.lon, wp.lat)
            if d > 1e-9:
                self.heading_deg = bearing_deg(self.lon, self.lat, wp.lon, wp.lat)
            if ds < d:
                f = ds / d
                self.lon += (wp.lon - self.lon) * f
                self.lat += (wp.lat - self.lat) * f
                travelled += ds
                break
            self.lon, self.lat = wp.lon, wp.lat
            travelled += d
            ds -= d
            self._route.popleft()
            self.last_wp = wp.index
            events.append(VehicleEvent(EventKind.WAYPOINT, wp.index))
            if wp.stop or not self._route:
                if stop_at_stop or self.speed_mps < 0.5:
                    self.speed_mps = 0.0
                    self._dwell_left_s = wp.dwell_s if wp.stop else 0.0
                    events.append(VehicleEvent(EventKind.ARRIVED, wp.index))
                    if self._hold_at_wp == wp.index:
                        self._hold_at_wp = None
                        self.held = True
                break
        self._account(travelled, events)

    def _account(self, ds: float, events: list[VehicleEvent]) -> None:
        if ds <= 0:
            return
        self.odometer_m += ds
        was_empty = self.battery_empty
        self.energy_kwh = max(0.0, self.energy_kwh - ds / 1000.0 * self.spec.consumption_kwh_per_km)
        if not self._battery_low_told and self.soc_pct < BATTERY_LOW_PCT:
            self._battery_low_told = True
            events.append(VehicleEvent(EventKind.BATTERY_LOW))
        if self.battery_empty and not was_empty:
            events.append(VehicleEvent(EventKind.BATTERY_EMPTY))
