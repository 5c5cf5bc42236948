"""The processes of a fault-injection run: ``python -m tests.faults.proc ROLE ...``.

* ``controller`` — the controller service exactly as ``fleet controller run`` builds it
  (road network, real planner for re-plans, SQLite store, signing, MQTT login), on the
  run's shared clock;
* ``bridge`` — one van's firmware bridge (``BridgeService``) with the van's login and key;
* ``vcu`` — one van's simulated vehicle control unit, listening on ``socket://``.

They differ from the shipped commands in one thing only: every process of a run gets the
same ``--start-epoch``, ``--factor`` and ``--anchor`` (the wall instant of the start), so
their accelerated clocks agree to the millisecond — across restarts too. The serial link's
timers and the VCU's tick are given in accelerated seconds scaled by the factor, so that on
the wall they are what they are in production.

Each prints ``ready`` on stdout once serving and writes JSON lines of what the test needs
to check (``--events``): the VCU its e-stops (with the wall time), every drive segment it
applied, each change of its e-stop latch and each reboot (with its odometer: whether the van
moved while latched), the bridge every order update it started and every node it finished
(what came aboard and what was handed over there: the van's own account of each parcel,
kept across the bridge's restarts). ``vcu`` reboots its firmware on SIGUSR1 and raises a
fatal fault (a breakdown) on SIGUSR2.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import logging
import os
import signal
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fleet.protocol.clock import ScaledClock

if TYPE_CHECKING:
    from firmware_bridge import wire
    from firmware_bridge.link import LinkConfig

# Each role imports only what it runs: Python start-up is most of a process's start time.


def scaled_link(role: wire.Role, factor: float) -> LinkConfig:
    """The production link timers (LinkConfig defaults, in wall seconds) in clock seconds."""
    from firmware_bridge.link import LinkConfig

    base = LinkConfig(role, line_baud=0)
    return dataclasses.replace(
        base,
        heartbeat_s=base.heartbeat_s * factor,
        peer_timeout_s=base.peer_timeout_s * factor,
        ack_timeout_s=base.ack_timeout_s * factor,
        hello_interval_s=base.hello_interval_s * factor,
        estop_retry_s=base.estop_retry_s * factor,
    )


class EventLog:
    def __init__(self, path: Path) -> None:
        self._fh = path.open("a", encoding="utf-8", buffering=1)

    def write(self, **fields: Any) -> None:
        self._fh.write(json.dumps({"wall": time.time(), **fields}) + "\n")


def _clock(args: argparse.Namespace) -> ScaledClock:
    return ScaledClock(args.start_epoch, args.factor, args.anchor)


def _ready() -> None:
    print("ready", flush=True)


async def run_controller(args: argparse.Namespace) -> None:
    from fleet.control.config import load_controller_config
    from fleet.control.keys import read_master_key
    from fleet.control.service import ControllerService
    from fleet.control.site_planning import SitePlanning, site_roster
    from fleet.model import load_site, load_van_spec
    from fleet.mqtt import BrokerAddress
    from fleet.protocol import Topics
    from fleet.roads import load_network
    from fleet.store import SqliteStore

    config = load_controller_config(args.config)
    van = load_van_spec(args.van)
    site = load_site(args.site)
    net = load_network(site, van)
    with SqliteStore(args.db) as store:
        service = ControllerService(
            address=BrokerAddress.from_login(args.login),
            store=store,
            config=config,
            van=van,
            roster=site_roster(site),
            clock=_clock(args),
            master_key=read_master_key(args.key),
            planning=SitePlanning(site, van, net, replan_time_limit_s=config.replan_time_limit_s),
            topics=Topics(),
        )
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, service.stop)
        runner = asyncio.create_task(service.run())
        await service.ready.wait()
        _ready()
        await runner


async def run_bridge(args: argparse.Namespace) -> None:
    from firmware_bridge import wire
    from firmware_bridge.bridge import DEFAULT_VCU_GRACE_S, BridgeService, BridgeSettings
    from firmware_bridge.bridge.config import (
        DEFAULT_TELEMETRY_STALE_S,
        load_signing_key,
    )
    from firmware_bridge.bridge.order_book import NodeDone, OrderBook
    from fleet.mqtt import BrokerAddress
    from fleet.protocol import NodeActionType, Order, OrderVerdict, decide_order, decode
    from fleet.protocol.errors import ProtocolError

    login = BrokerAddress.from_login(args.login, tls=None)
    settings = BridgeSettings(
        van_id=args.van_id,
        serial_url=args.serial,
        broker=dataclasses.replace(login, port=args.broker_port or login.port),
        keys=(load_signing_key(args.key),),
        state_dir=args.state_dir,
        baud=0,
        link=scaled_link(wire.Role.BRIDGE, args.factor),
        reconnect_s=0.2 * args.factor,
        keepalive_s=2,
        vcu_grace_s=DEFAULT_VCU_GRACE_S * args.factor,  # the production grace in wall seconds
        telemetry_stale_s=DEFAULT_TELEMETRY_STALE_S * args.factor,  # and the staleness bound
    )
    events = EventLog(args.events)
    service = BridgeService(settings, _clock(args))
    core = service.core
    handle = core.on_order_payload

    def on_order_payload(payload: bytes, now_s: float, *, topic: str = "") -> list[Any]:
        # what the bridge will decide, from the same pure rules, before it decides
        verdict = None
        with contextlib.suppress(ProtocolError):
            incoming = decode(Order, payload, topic=topic)
            verdict = decide_order(
                core.order,
                incoming,
                van_id=core.van_id,
                last_node_sequence_id=core.last_node_seq,
                cancelled=core.cancelled,
            ).verdict
        accepted = core.accepted
        actions = handle(payload, now_s, topic=topic)
        if core.accepted > accepted and verdict in (OrderVerdict.NEW, OrderVerdict.UPDATE):
            assert core.order is not None
            events.write(
                ev="order_applied",
                order_id=core.order.order_id,
                update_id=core.order.order_update_id,
                verdict=verdict.value,
            )
        return actions

    core.on_order_payload = on_order_payload  # type: ignore[method-assign]
    finish = OrderBook.finish

    def finish_logged(book: OrderBook, seq: int, **kwargs: Any) -> NodeDone | None:
        # the van's own account of each parcel: written before the book is saved, so a node
        # finished again after a crash (its book not saved) shows as handed over twice
        done = finish(book, seq, **kwargs)
        if done is not None and book.order is not None:
            node = book.node(seq)
            handed = set(done.unloaded)
            events.write(
                ev="node_finished",
                order_id=book.order.order_id,
                seq=seq,
                loaded=list(done.loaded),
                delivered=[
                    p
                    for a in node.actions
                    if a.action_type is NodeActionType.DELIVER
                    for p in a.parcel_ids
                    if p in handed
                ],
                unloaded=[
                    p
                    for a in node.actions
                    if a.action_type is NodeActionType.UNLOAD
                    for p in a.parcel_ids
                    if p in handed
                ],
            )
        return done

    OrderBook.finish = finish_logged  # type: ignore[assignment,method-assign]
    task = asyncio.current_task()
    assert task is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)

    async def announce() -> None:
        await service.connected.wait()
        _ready()

    announcer = asyncio.create_task(announce())
    with contextlib.suppress(asyncio.CancelledError):
        await service.run()
    announcer.cancel()


async def run_vcu(args: argparse.Namespace) -> None:
    from firmware_bridge import wire
    from fleet.model import load_van_spec
    from sim.vcu import SimulatedVcu, VcuConfig, VcuFaults, make_vehicle, vcu_port

    events = EventLog(args.events)
    spec = load_van_spec(args.van)
    port = vcu_port(f"socket://127.0.0.1:{args.port}")
    vcu = SimulatedVcu(
        port,
        make_vehicle(spec, args.lon, args.lat),
        clock=_clock(args),
        config=VcuConfig(
            baud=0,
            telemetry_hz=10.0 / args.factor,
            tick_s=0.02 * args.factor,
            link=scaled_link(wire.Role.VCU, args.factor),
        ),
        faults=VcuFaults(corrupt=args.corrupt, seed=args.seed),
        on_estop=lambda estop_id: events.write(ev="estop", estop_id=estop_id),
    )
    applied = 0

    def reboot() -> None:
        events.write(
            ev="reboot",
            boots=vcu.boots,
            latched=vcu.memory.estop_latched,
            odometer_m=vcu.vehicle.odometer_m,
            speed_mps=vcu.vehicle.speed_mps,
        )
        vcu.faults = dataclasses.replace(vcu.faults, reboot_at_s=vcu.uptime_s)

    def break_down() -> None:
        events.write(ev="breakdown")
        vcu.faults = dataclasses.replace(vcu.faults, fatal_at_s=vcu.uptime_s)

    latched = vcu.memory.estop_latched

    async def watch() -> None:
        nonlocal applied, latched
        while True:
            await asyncio.sleep(0.02)
            if vcu.memory.estop_latched != latched:
                latched = vcu.memory.estop_latched
                events.write(ev="latch", latched=latched, odometer_m=vcu.vehicle.odometer_m)
            while applied < len(vcu.applied_segments):
                mission_id, first_wp = vcu.applied_segments[applied]
                events.write(ev="segment", mission_id=mission_id, first_wp=first_wp)
                applied += 1

    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGUSR1, reboot)
    loop.add_signal_handler(signal.SIGUSR2, break_down)
    task = asyncio.current_task()
    assert task is not None
    loop.add_signal_handler(signal.SIGTERM, task.cancel)
    watcher = asyncio.create_task(watch())
    assert port.path is not None
    print(f"ready {port.path.rsplit(':', 1)[1]}", flush=True)  # the port it listens on
    try:
        await vcu.run()
    except asyncio.CancelledError:
        pass
    finally:
        watcher.cancel()
        port.close()
        events.write(
            ev="summary",
            boots=vcu.boots,
            odometer_m=vcu.vehicle.odometer_m,
            duplicates_ignored=vcu.duplicates_ignored,
            corrupted=(vcu.rx_noise.corrupted + vcu.tx_noise.corrupted) if vcu.rx_noise else 0,
        )


async def _orphan_guard() -> None:
    """End this process if the test that started it is gone (its parent changes)."""
    parent = os.getppid()
    while os.getppid() == parent:
        await asyncio.sleep(0.5)
    os.kill(os.getpid(), signal.SIGTERM)


async def _with_guard(runner: Any, args: argparse.Namespace) -> None:
    guard = asyncio.create_task(_orphan_guard())
    try:
        await runner(args)
    finally:
        guard.cancel()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.faults.proc")
    sub = parser.add_subparsers(dest="role", required=True)
    for role in ("controller", "bridge", "vcu"):
        p = sub.add_parser(role)
        p.add_argument("--start-epoch", type=float, required=True)
        p.add_argument("--factor", type=float, required=True)
        p.add_argument("--anchor", type=float, required=True)
        p.add_argument("--van", type=Path, required=True, help="van config (TOML)")
        p.add_argument("--events", type=Path)
    c = sub.choices["controller"]
    c.add_argument("--db", type=Path, required=True)
    c.add_argument("--login", type=Path, required=True)
    c.add_argument("--key", type=Path, required=True)
    c.add_argument("--site", type=Path, required=True)
    c.add_argument("--config", type=Path, required=True)
    b = sub.choices["bridge"]
    b.add_argument("--van-id", required=True)
    b.add_argument("--serial", required=True)
    b.add_argument("--login", type=Path, required=True)
    b.add_argument("--broker-port", type=int, default=0)
    b.add_argument("--key", type=Path, required=True)
    b.add_argument("--state-dir", type=Path, required=True)
    v = sub.choices["vcu"]
    v.add_argument("--port", type=int, required=True)
    v.add_argument("--lon", type=float, required=True)
    v.add_argument("--lat", type=float, required=True)
    v.add_argument("--corrupt", type=float, default=0.0)
    v.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    logging.basicConfig(
        level=logging.WARNING, stream=sys.stderr, format="%(asctime)s %(name)s: %(message)s"
    )
    runner = {"controller": run_controller, "bridge": run_bridge, "vcu": run_vcu}[args.role]
    asyncio.run(_with_guard(runner, args))


if __name__ == "__main__":
    main()
