"""The controller's tuning, read strictly from ``configs/controller.toml``."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from fleet.model.toml_table import Table
from fleet.protocol.topics import CLIENT_ID_PATTERN


@dataclass(frozen=True, slots=True)
class ControllerConfig:
    name: str = "fleet-controller"
    release_ahead_stops: int = 2
    stale_after_s: float = 10.0
    offline_replan_after_s: float = 120.0
    fatal_grace_s: float = 60.0
    resend_first_s: float = 2.0
    resend_max_s: float = 30.0
    resend_give_up_s: float = 300.0
    estop_resend_s: float = 0.5
    flush_interval_s: float = 1.0
    tick_s: float = 0.25
    replan_time_limit_s: float = 10.0
    # issue 14 (docs/controller.md, "Safety and recovery")
    gps_tolerance_m: float = 50.0  # a stop is finished only within its deviation plus this
    order_lost_after_s: float = 5.0  # states without the order it holds: the van lost it
    cancel_confirm_s: float = 10.0  # a cancelled van's confirmation is awaited this long
    confirm_by_departure_s: float = 120.0  # an order unconfirmed this long past its departure
    max_messages_per_van_per_s: float = 20.0
    burst_messages_per_van: int = 40
    max_pending_messages: int = 100_000


def load_controller_config(path: Path) -> ControllerConfig:
    """Read ``[controller]`` and ``[limits]``; every wrong key fails with file, table and key."""
    root = Table.root(path)
    c = root.table("controller")
    lim = root.table("limits")
    config = ControllerConfig(
        name=c.string("name"),
        release_ahead_stops=c.integer("release_ahead_stops", "stops", ge=1, le=1000),
        stale_after_s=c.number("stale_after_s", "s", gt=0),
        offline_replan_after_s=c.number("offline_replan_after_s", "s", ge=0),
        fatal_grace_s=c.number("fatal_grace_s", "s", ge=0),
        resend_first_s=c.number("resend_first_s", "s", gt=0),
        resend_max_s=c.number("resend_max_s", "s", gt=0),
        resend_give_up_s=c.number("resend_give_up_s", "s", gt=0),
        estop_resend_s=c.number("estop_resend_s", "s", gt=0),
        flush_interval_s=c.number("flush_interval_s", "s", gt=0),
        tick_s=c.number("tick_s", "s", gt=0, le=10),
        replan_time_limit_s=c.number("replan_time_limit_s", "s", gt=0),
        gps_tolerance_m=c.number("gps_tolerance_m", "m", ge=0, default=50.0),
        order_lost_after_s=c.number("order_lost_after_s", "s", gt=0, default=5.0),
        cancel_confirm_s=c.number("cancel_confirm_s", "s", gt=0, default=10.0),
        confirm_by_departure_s=c.number("confirm_by_departure_s", "s", ge=0, default=120.0),
        max_messages_per_van_per_s=lim.number("max_messages_per_van_per_s", "messages/s", gt=0),
        burst_messages_per_van=lim.integer("burst_messages_per_van", "messages", ge=1),
        max_pending_messages=lim.integer("max_pending_messages", "messages", ge=100),
    )
    c.finish()
    lim.finish()
    root.finish()
    if config.resend_max_s < config.resend_first_s:
        raise c.error("resend_max_s", "must be >= resend_first_s")
    if not re.fullmatch(CLIENT_ID_PATTERN, config.name):
        raise c.error("name", f"must match {CLIENT_ID_PATTERN} (it is an MQTT client id)")
    return config
