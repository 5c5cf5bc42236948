"""The full stack: the real broker, controller and bridges around simulated VCUs give the
same KPIs as the fast mode on a small day, lose no message, and play every fault."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from pathlib import Path

import pytest

from firmware_bridge import wire
from firmware_bridge.bridge import DEFAULT_TICK_S, DEFAULT_VCU_GRACE_S
from fleet.control.config import ControllerConfig
from fleet.model import StopKind
from fleet.planning.borrow import Sharing
from fleet.roads import RoadNetwork, load_network
from sim.day import PreparedDay, prepare_day
from sim.fast import FastRun
from sim.full import MAX_HEARTBEAT_S, WALL_SLACK, FullRun, Timing
from sim.full.netlink import CuttableLink
from sim.kpi import Tolerance, compare_kpis, compute_kpis
from sim.scenario import (
    Breakdown,
    ControllerRestart,
    LinkLoss,
    RoadClosure,
    Scenario,
    SerialCorruption,
    load_scenario,
)

SPEEDUP = 600.0


@pytest.fixture(scope="module")
def small(configs_dir: Path) -> Scenario:
    return load_scenario(configs_dir / "scenarios" / "poa_small.toml")


@pytest.fixture(scope="module")
def net(small: Scenario) -> RoadNetwork:
    return load_network(small.site, small.van)


@pytest.fixture(scope="module")
def day(small: Scenario, net: RoadNetwork) -> PreparedDay:
    return prepare_day(small, net=net, max_iterations=300, workers=1)


@pytest.mark.slow
@pytest.mark.parametrize("broker", ["embedded", "mosquitto"])
def test_full_stack_and_fast_mode_agree_on_a_small_day(
    day: PreparedDay, broker: str, request: pytest.FixtureRequest
) -> None:
    url = request.getfixturevalue("mosquitto").url if broker == "mosquitto" else None
    full = FullRun(day, speedup=SPEEDUP, broker_url=url).run()
    fast = FastRun(day).run()
    kf, ks = compute_kpis(full, day.scenario.van), compute_kpis(fast, day.scenario.van)
    assert compare_kpis(ks, kf, Tolerance()) == []
    assert kf.delivered == kf.parcels == 40
    assert (kf.delivered_twice, kf.lost, kf.messages_lost) == (0, 0, 0)
    c = full.counters
    assert c.commands_sent > 0 and c.commands_received >= c.commands_sent
    assert c.states_received > 100
    assert full.wall_s < 60


@pytest.mark.slow
@pytest.mark.parametrize("broker", ["embedded", "mosquitto"])
def test_full_stack_plays_every_fault(
    small: Scenario, net: RoadNetwork, broker: str, request: pytest.FixtureRequest
) -> None:
    url = request.getfixturevalue("mosquitto").url if broker == "mosquitto" else None
    sc = small.with_overrides(vans=10)  # two vans a depot: a broken van's parcels can move
    events = (
        RoadClosure(
            at_s=6 * 3600 + 1800, until_s=9 * 3600, center=(-51.215, -30.035), radius_m=120.0
        ),
        SerialCorruption(
            at_s=6 * 3600 + 1800, van="ST-CENTRO-01", duration_s=1800, frame_error_share=0.1
        ),
        LinkLoss(at_s=7 * 3600, van="ST-MOINHOS-01", duration_s=900),
        ControllerRestart(at_s=7 * 3600 + 2400, down_s=120),
    )
    day = prepare_day(sc, net=net, max_iterations=300, workers=1)
    # the busiest van breaks down with parcels aboard: vans leave their depots at the planned
    # departures (the bridges hold them until then), so just after the first door is reached
    first_door = min(
        s.arrival_s for r in day.plan.routes for s in r.stops() if s.kind is StopKind.DOOR
    )
    breakdown = Breakdown(at_s=first_door + 60.0, van="busiest", recovery_s=1800)
    sc = dataclasses.replace(sc, events=(*events, breakdown))
    day = dataclasses.replace(day, scenario=sc)
    trace = FullRun(day, speedup=SPEEDUP, broker_url=url).run()
    k = compute_kpis(trace, sc.van)
    kinds = [i.kind for i in trace.incidents]
    for kind in (
        "serial_corruption",
        "serial_clean",
        "link_loss",
        "link_restored",
        "controller_restart",
        "recovery",
        "road_reopened",
    ):
        assert kind in kinds
    assert trace.counters.serial_frames_corrupted > 0  # caught by the CRC, and resent
    (b,) = trace.breakdowns
    assert b.parcels
    assert "breakdown" in k.replans_by_cause
    assert trace.closures and trace.closures[0].lines
    # every parcel is accounted for
    assert k.lost == 0 and k.delivered + k.failed == k.parcels
    # Mosquitto keeps a cut-off van's QoS 1 commands for its persistent session and loses
    # none; the embedded broker may drop those for the van whose link was cut, no other.
    # States are QoS 0 (docs/protocol.md): one in flight when a link is cut or the controller
    # restarts may vanish (the next one, a period later, replaces it) — seen once in six runs.
    lost = trace.counters.lost_by_van
    states_lost = k.messages_lost - sum(lost.values())
    if broker == "mosquitto":
        assert lost == {}
    else:
        assert set(lost) <= {"ST-MOINHOS-01"}
    assert states_lost <= 2


@pytest.mark.slow
def test_parcels_a_replan_leaves_out_fail_with_the_controllers_reason(day: PreparedDay) -> None:
    # one van a depot: what the broken-down van carried is recovered to a station with no
    # other van, and the re-plan leaves it out (per-depot sharing: with the whole fleet's,
    # another station's van takes it); the day's report gives the planner's reason (read
    # from the controller before it stops), not "still at a depot"
    first_door = min(
        s.arrival_s for r in day.plan.routes for s in r.stops() if s.kind is StopKind.DOOR
    )
    breakdown = Breakdown(at_s=first_door + 60.0, van="busiest", recovery_s=1800)
    run = dataclasses.replace(day.scenario.run, sharing=Sharing.DEPOT)
    sc = dataclasses.replace(day.scenario, events=(breakdown,), run=run)
    trace = FullRun(dataclasses.replace(day, scenario=sc), speedup=SPEEDUP).run()
    (b,) = trace.breakdowns
    delivered = {d.parcel for d in trace.delivered}
    stranded = [p for p in b.parcels if p not in delivered]
    reasons = {f.parcel: f.reason for f in trace.failed}
    assert stranded
    assert {reasons[p] for p in stranded} == {"not_enough_vans"}


def test_timing_stretches_wall_clock_guards_with_the_clock() -> None:
    t = Timing(600.0, 30.0)
    link = t.link(wire.Role.BRIDGE)
    assert link.heartbeat_s == MAX_HEARTBEAT_S  # 16-bit milliseconds in HELLO
    assert link.peer_timeout_s > link.heartbeat_s
    assert link.ack_timeout_s == pytest.approx(0.05 * 600 * 2)
    vcu = t.vcu()
    assert vcu.tick_s == 10.0 and vcu.telemetry_hz == pytest.approx(2 / 600)
    slow = Timing(0.5, 30.0)  # slower than real time: nothing gets shorter than designed
    assert slow.link(wire.Role.VCU).ack_timeout_s == pytest.approx(0.05)
    base = ControllerConfig()
    cfg = t.controller(base)
    # three state periods plus a wall second of latency (2 × 600 simulated s)
    assert cfg.stale_after_s == pytest.approx(90.0 + 1200.0) and cfg.tick_s == pytest.approx(60.0)
    assert cfg.resend_first_s >= base.resend_first_s


def test_the_bridges_get_their_periods_in_clock_seconds_as_settings() -> None:
    t = Timing(60.0, 30.0)
    assert t.bridge_tick_s == pytest.approx(15.0)  # half the state period
    assert t.vcu_grace_s >= DEFAULT_VCU_GRACE_S * 60.0  # the production grace, in wall seconds
    assert Timing(1.0, 1.0).bridge_tick_s == pytest.approx(DEFAULT_TICK_S * WALL_SLACK)


def test_a_cut_link_resets_its_connections_and_refuses_new_ones_until_restored() -> None:
    async def main() -> None:
        async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            with contextlib.suppress(ConnectionError):
                while data := await reader.read(100):
                    writer.write(data)
                    await writer.drain()
            writer.close()

        async def closed(reader: asyncio.StreamReader) -> bool:
            try:
                return await reader.read(100) == b""
            except ConnectionError:
                return True  # reset

        server = await asyncio.start_server(echo, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        link = CuttableLink("127.0.0.1", port, "test")
        await link.start()
        try:
            async with asyncio.timeout(10):
                r, w = await asyncio.open_connection("127.0.0.1", link.port)
                w.write(b"hello")
                assert await r.readexactly(5) == b"hello"
                link.cut()
                assert await closed(r)  # reset: the far end is gone
                r2, w2 = await asyncio.open_connection("127.0.0.1", link.port)
                assert await closed(r2)  # refused while cut
                link.restore()
                r3, w3 = await asyncio.open_connection("127.0.0.1", link.port)
                w3.write(b"again")
                assert await r3.readexactly(5) == b"again"
                for writer in (w, w2, w3):
                    writer.close()
        finally:
            await link.close()
            server.close()
            await server.wait_closed()

    asyncio.run(main())
