"""Orders, keys and a VCU+bridge rig over a real pseudo-terminal, for the bridge tests."""

from __future__ import annotations

import asyncio
import functools
import math
import uuid
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiomqtt

from firmware_bridge import wire
from firmware_bridge.bridge import BridgeService, BridgeSettings
from firmware_bridge.link import LinkConfig
from fleet.model import load_van_spec
from fleet.mqtt import BrokerAddress
from fleet.protocol import (
    Edge,
    InstantAction,
    InstantActions,
    InstantActionType,
    Node,
    NodeAction,
    NodeActionType,
    Order,
    SigningKey,
    State,
    StopKind,
    VanTopic,
    decode,
    derive_van_key,
    encode,
    make_header,
    sign,
)
from fleet.protocol.clock import ScaledClock
from sim.vcu import SimulatedVcu, VcuConfig, VcuFaults, VcuMemory, vcu_port
from sim.vehicle import Vehicle

REPO = Path(__file__).resolve().parents[2]
VAN = "WH-TEST-01"
MASTER = bytes(range(32))
KEY = derive_van_key(MASTER, VAN)
LON0, LAT0 = -8.6110, 41.1496
M_PER_DEG = math.radians(1.0) * 6_371_008.8
NOW_S = 1_795_000_000.0
FACTOR = 4.0
LINK = dict(heartbeat_s=0.5, peer_timeout_s=4.0, ack_timeout_s=0.2, hello_interval_s=0.4)


def aio(fn: Callable[..., Coroutine[Any, Any, None]]) -> Callable[..., None]:
    """Run an async test body in a fresh event loop (each body has its own timeout too)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> None:
        asyncio.run(fn(*args, **kwargs))

    return wrapper


def north(m: float) -> tuple[float, float]:
    return (LON0, LAT0 + m / M_PER_DEG)


def line_order(
    *,
    stops: int = 4,
    released: int = 2,
    spacing_m: float = 30.0,
    order_id: str = "O-1",
    update_id: int = 0,
    message_id: int = 1,
    now_s: float = NOW_S,
    van_id: str = VAN,
    dwell_s: float = 1.0,
) -> Order:
    """Stops every ``spacing_m`` metres due north; each edge has 3 trajectory points."""
    nodes = []
    edges = []
    for i in range(stops):
        lon, lat = north(i * spacing_m)
        nodes.append(
            Node(
                node_id=f"n{i}",
                sequence_id=2 * i,
                released=i < released,
                kind=StopKind.DEPOT if i == 0 else StopKind.DOOR,
                lon=lon,
                lat=lat,
                actions=(
                    NodeAction(
                        action_id=f"a{i}",
                        action_type=NodeActionType.LOAD if i == 0 else NodeActionType.DELIVER,
                        parcel_ids=tuple(f"P{j}" for j in range(1, stops))
                        if i == 0
                        else (f"P{i}",),
                        duration_s=dwell_s,
                    ),
                ),
            )
        )
        if i:
            mid = north((i - 0.5) * spacing_m)
            edges.append(
                Edge(
                    edge_id=f"e{i}",
                    sequence_id=2 * i - 1,
                    released=i < released,
                    start_node_id=f"n{i - 1}",
                    end_node_id=f"n{i}",
                    length_m=spacing_m,
                    max_speed_mps=8.0,
                    trajectory=(north((i - 1) * spacing_m), mid, (lon, lat)),
                )
            )
    order = Order(
        header=make_header("controller", message_id, now_s),
        van_id=van_id,
        order_id=order_id,
        order_update_id=update_id,
        nodes=tuple(nodes),
        edges=tuple(edges),
    )
    return order


def long_edge_order() -> Order:
    """A 3-stop order, all released, whose first edge has a 100-point road geometry."""
    order = line_order(stops=3, released=3)
    long_edge = order.edges[0].model_copy(
        update={"trajectory": tuple(north(i * 30 / 99) for i in range(100))}
    )
    return Order.model_validate(
        {**order.model_dump(), "edges": (long_edge, order.edges[1])}, strict=False
    )


def released_more(order: Order, released: int, *, message_id: int, now_s: float) -> Order:
    return line_order(
        stops=len(order.nodes),
        released=released,
        order_id=order.order_id,
        update_id=order.order_update_id + 1,
        message_id=message_id,
        now_s=now_s,
    )


def instant(
    kind: InstantActionType, *, message_id: int, now_s: float, action_id: str = ""
) -> InstantActions:
    return InstantActions(
        header=make_header("controller", message_id, now_s),
        van_id=VAN,
        actions=(InstantAction(action_id=action_id or f"I-{message_id}", action_type=kind),),
    )


@dataclass
class Rig:
    """A simulated VCU on a pty, the bridge on the other end, and a controller-side client."""

    vcu: SimulatedVcu
    bridge: BridgeService
    client: aiomqtt.Client
    clock: ScaledClock
    prefix: str
    states: list[State] = field(default_factory=list)
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    message_id: int = 100

    def topic(self, kind: VanTopic) -> str:
        return f"{self.prefix}fleet/v1/vans/{VAN}/{kind.value}"

    def next_id(self) -> int:
        self.message_id += 1
        return self.message_id

    async def publish_order(self, order: Order, key: SigningKey | None = KEY) -> None:
        payload = encode(sign(order, key) if key else order)
        await self.client.publish(self.topic(VanTopic.ORDER), payload, qos=1)

    async def publish_instant(self, kind: InstantActionType, key: SigningKey | None = KEY) -> None:
        msg = instant(kind, message_id=self.next_id(), now_s=self.clock.time())
        payload = encode(sign(msg, key) if key else msg)
        await self.client.publish(self.topic(VanTopic.INSTANT), payload, qos=1)

    async def poll(self, what: Callable[[], bool], timeout_s: float = 30.0) -> None:
        """For bridge internals that have no event of their own (spool length)."""
        async with asyncio.timeout(timeout_s):
            while not what():
                await asyncio.sleep(0.02)

    async def until(self, what: Callable[[], bool], timeout_s: float = 30.0) -> None:
        async with asyncio.timeout(timeout_s):
            while not what():
                self.changed.clear()
                await self.changed.wait()

    @property
    def last(self) -> State:
        return self.states[-1]


@asynccontextmanager
async def rig(
    host: str,
    port: int,
    tmp: Path,
    *,
    prefix: str = "",
    faults: VcuFaults | None = None,
    baud: int = 115200,
    spool_max: int = 10_000,
    bridge_port: int = 0,
    soc_pct: float = 100.0,
    telemetry_hz: float = 10.0,
    telemetry_stale_s: float = 0.5 * FACTOR,
    state_dir: Path | None = None,
    now_s: float = NOW_S,
    memory: VcuMemory | None = None,
) -> AsyncIterator[Rig]:
    """``bridge_port``: where the bridge connects (a cuttable forwarder), default ``port``.

    Times are the rig's clock seconds (``FACTOR`` times wall time): the bridge reports the
    VCU's telemetry stale after ``telemetry_stale_s`` (0.5 s of wall time by default, so that
    a loaded test machine does not make it flap)."""
    prefix = prefix or f"test/{uuid.uuid4().hex[:10]}/"
    clock = ScaledClock(now_s, FACTOR)
    spec = load_van_spec(REPO / "configs" / "van.toml")
    port_ = vcu_port("pty")
    vcu = SimulatedVcu(
        port_,
        Vehicle(spec, lon=LON0, lat=LAT0, soc_pct=soc_pct),
        clock=clock,
        config=VcuConfig(
            baud=baud,
            telemetry_hz=telemetry_hz,
            link=LinkConfig(wire.Role.VCU, line_baud=baud, **LINK),
        ),
        faults=faults,
        memory=memory,
    )
    assert port_.path is not None
    settings = BridgeSettings(
        van_id=VAN,
        serial_url=port_.path,
        broker=BrokerAddress(host=host, port=bridge_port or port),
        keys=(KEY,),
        state_dir=state_dir or tmp / "bridge-state",
        topic_prefix=prefix,
        client_id=f"bridge-{uuid.uuid4().hex[:8]}",
        baud=baud,
        link=LinkConfig(wire.Role.BRIDGE, line_baud=baud, **LINK),
        spool_max_messages=spool_max,
        max_command_age_s=600.0,
        reconnect_s=0.5 * FACTOR,
        telemetry_stale_s=telemetry_stale_s,
    )
    bridge = BridgeService(settings, clock)
    vcu_task = asyncio.create_task(vcu.run(), name="vcu")
    try:
        async with aiomqtt.Client(host, port, identifier=f"ctl-{uuid.uuid4().hex[:8]}") as client:
            r = Rig(vcu, bridge, client, clock, prefix)
            await client.subscribe(r.topic(VanTopic.STATE), qos=0)

            async def listen() -> None:
                async for message in client.messages:
                    if isinstance(message.payload, bytes):
                        r.states.append(decode(State, message.payload))
                        r.changed.set()

            listener = asyncio.create_task(listen(), name="controller listener")
            try:
                async with bridge:
                    await r.until(lambda: bool(r.states) and r.last.position is not None)
                    yield r
            finally:
                listener.cancel()
    finally:
        vcu_task.cancel()
        with suppress(asyncio.CancelledError):
            await vcu_task
        port_.close()
