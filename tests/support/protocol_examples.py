"""Small named protocol messages for tests (vary them with ``model_copy(update=...)``)."""

from __future__ import annotations

from fleet.protocol import (
    Battery,
    Connection,
    ConnectionState,
    Edge,
    Factsheet,
    InstantAction,
    InstantActions,
    InstantActionType,
    Load,
    Node,
    NodeAction,
    NodeActionType,
    Order,
    State,
    StopKind,
    VanPosition,
    make_header,
)

NOW_S = 1_795_000_000.0  # 2026-11-18T11:06:40Z
VAN = "WH-PORTO-01"
MASTER_SECRET = bytes(range(32))

# A depot and three doors along a street in Porto, lon/lat.
_POINTS = [(-8.6110, 41.1496), (-8.6100, 41.1500), (-8.6090, 41.1505), (-8.6080, 41.1510)]


def order(
    *,
    van_id: str = VAN,
    order_id: str = "O-1",
    update_id: int = 0,
    stops: int = 4,
    released: int = 2,
    message_id: int = 1,
    now_s: float = NOW_S,
) -> Order:
    """A depot then ``stops - 1`` door stops, the first ``released`` of them released."""
    nodes: list[Node] = []
    edges: list[Edge] = []
    for i in range(stops):
        lon, lat = _POINTS[i % len(_POINTS)]
        lon += 0.004 * (i // len(_POINTS))
        is_depot = i == 0
        nodes.append(
            Node(
                node_id=f"n{i}",
                sequence_id=2 * i,
                released=i < released,
                kind=StopKind.DEPOT if is_depot else StopKind.DOOR,
                ref="WH-PORTO" if is_depot else "",
                lon=lon,
                lat=lat,
                actions=(
                    NodeAction(
                        action_id=f"a{i}",
                        action_type=NodeActionType.LOAD if is_depot else NodeActionType.DELIVER,
                        parcel_ids=tuple(f"P{j}" for j in range(1, stops))
                        if is_depot
                        else (f"P{i}",),
                        duration_s=900.0 if is_depot else 80.0,
                    ),
                ),
            )
        )
        if i:
            prev = nodes[i - 1]
            edges.append(
                Edge(
                    edge_id=f"e{i}",
                    sequence_id=2 * i - 1,
                    released=i < released,
                    start_node_id=prev.node_id,
                    end_node_id=f"n{i}",
                    length_m=120.0 * i,
                    max_speed_mps=13.9,
                    trajectory=((prev.lon, prev.lat), (lon, lat)),
                )
            )
    return Order(
        header=make_header("controller", message_id, now_s),
        van_id=van_id,
        order_id=order_id,
        order_update_id=update_id,
        nodes=tuple(nodes),
        edges=tuple(edges),
    )


def release_more(current: Order, released: int, *, message_id: int = 2) -> Order:
    """The next update of ``current``: ``released`` nodes released, everything else kept."""
    nodes = tuple(
        n.model_copy(update={"released": i < released}) for i, n in enumerate(current.nodes)
    )
    edges = tuple(
        e.model_copy(update={"released": i + 1 < released}) for i, e in enumerate(current.edges)
    )
    return Order.model_validate(
        {
            **current.model_dump(exclude={"nodes", "edges", "header", "signature"}),
            "header": current.header.model_copy(update={"message_id": message_id}),
            "order_update_id": current.order_update_id + 1,
            "nodes": nodes,
            "edges": edges,
        },
        strict=False,
    )


def instant(
    action: InstantActionType = InstantActionType.PAUSE,
    *,
    van_id: str = VAN,
    action_id: str = "I-1",
    message_id: int = 1,
    now_s: float = NOW_S,
) -> InstantActions:
    return InstantActions(
        header=make_header("controller", message_id, now_s),
        van_id=van_id,
        actions=(InstantAction(action_id=action_id, action_type=action),),
    )


def state(
    *, van_id: str = VAN, message_id: int = 1, now_s: float = NOW_S, **fields: object
) -> State:
    base = State(
        header=make_header(van_id, message_id, now_s),
        van_id=van_id,
        position=VanPosition(lon=-8.611, lat=41.1496, heading_deg=90.0),
        battery=Battery(soc_pct=80.0, remaining_range_m=128_000.0),
        load=Load(load_kg=0.0, volume_m3=0.0),
    )
    return base.model_copy(update=fields) if fields else base


def connection(
    state_: ConnectionState = ConnectionState.ONLINE, *, van_id: str = VAN, message_id: int = 1
) -> Connection:
    return Connection(
        header=make_header(van_id, message_id, NOW_S), van_id=van_id, connection_state=state_
    )


def factsheet(*, van_id: str = VAN) -> Factsheet:
    return Factsheet(
        header=make_header(van_id, 1, NOW_S),
        van_id=van_id,
        model="L4 light truck",
        firmware_version="test-1",
        protocol_versions=("1.0",),
        top_speed_mps=60 / 3.6,
        payload_kg=1000.0,
        cargo_volume_m3=24.0,
        battery_kwh=48.0,
        range_m=160_000.0,
        max_order_nodes=2000,
        max_order_bytes=1024 * 1024,
        instant_actions=tuple(InstantActionType),
    )
