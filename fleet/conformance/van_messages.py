"""The commands the van kit sends, built around where the van stands (pure: no I/O, no clock).

The kit's orders lead the van straight ahead from its reported position and heading, in legs
of ``leg_m`` metres, at ``speed_mps`` at most: the van is meant to run with a simulated vehicle
or on a closed test area. The one order (``A``) has six stops: ``n0`` where the van stands (a
``start`` node with a ``load`` of three parcels), deliveries at ``n1`` and ``n2``, then ``n3``,
``n4`` and ``n5`` without work. Its updates release one more stop each; the refusal cases send
variants of it that a van must refuse.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

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
    StopKind,
    encode,
    make_header,
    sign,
)

SENDER = "fleet-conformance"
METRES_PER_DEG_LAT = 111_320.0
STOPS = 6
PARCELS = ("CK-1", "CK-2", "CK-3")
ACTION_S = 1.0  # each stop's work
ARRIVAL_DEVIATION_M = 5.0


@dataclass(frozen=True, slots=True)
class Start:
    """Where the van stands when the kit plans its orders."""

    lon: float
    lat: float
    heading_deg: float


def point_ahead(start: Start, dist_m: float) -> tuple[float, float]:
    """``dist_m`` metres from ``start`` along its heading (flat earth: legs are short)."""
    rad = math.radians(start.heading_deg)
    north_m, east_m = dist_m * math.cos(rad), dist_m * math.sin(rad)
    lat = start.lat + north_m / METRES_PER_DEG_LAT
    lon = start.lon + east_m / (METRES_PER_DEG_LAT * max(0.01, math.cos(math.radians(start.lat))))
    return round(lon, 7), round(lat, 7)


def build_order(
    van_id: str,
    order_id: str,
    start: Start,
    *,
    update_id: int,
    released: int,
    message_id: int,
    now_s: float,
    leg_m: float,
    speed_mps: float,
    stops: int = STOPS,
    with_work: bool = True,
) -> Order:
    """``stops`` stops from ``start``, the first ``released`` of them released."""
    nodes: list[Node] = []
    edges: list[Edge] = []
    for i in range(stops):
        lon, lat = (start.lon, start.lat) if i == 0 else point_ahead(start, i * leg_m)
        actions: tuple[NodeAction, ...] = ()
        if with_work and i == 0:
            actions = (_action("a0", NodeActionType.LOAD, PARCELS),)
        elif with_work and i in (1, 2):
            actions = (_action(f"a{i}", NodeActionType.DELIVER, (PARCELS[i - 1],)),)
        nodes.append(
            Node(
                node_id=f"n{i}",
                sequence_id=2 * i,
                released=i < released,
                kind=StopKind.START if i == 0 else StopKind.DOOR,
                lon=lon,
                lat=lat,
                allowed_deviation_m=ARRIVAL_DEVIATION_M,
                actions=actions,
            )
        )
        if i:
            prev = nodes[i - 1]
            edges.append(
                Edge(
                    edge_id=f"e{i - 1}",
                    sequence_id=2 * i - 1,
                    released=i < released,
                    start_node_id=prev.node_id,
                    end_node_id=f"n{i}",
                    length_m=leg_m,
                    max_speed_mps=speed_mps,
                    trajectory=((prev.lon, prev.lat), (lon, lat)),
                )
            )
    return Order(
        header=make_header(SENDER, message_id, now_s),
        van_id=van_id,
        order_id=order_id,
        order_update_id=update_id,
        nodes=tuple(nodes),
        edges=tuple(edges),
    )


def _action(action_id: str, kind: NodeActionType, parcels: tuple[str, ...]) -> NodeAction:
    return NodeAction(
        action_id=action_id, action_type=kind, parcel_ids=parcels, duration_s=ACTION_S
    )


def moved_node(order: Order, index: int, dist_m: float) -> Order:
    """``order`` with node ``index`` moved ``dist_m`` north (a changed stop)."""
    nodes = list(order.nodes)
    node = nodes[index]
    nodes[index] = node.model_copy(update={"lat": round(node.lat + dist_m / METRES_PER_DEG_LAT, 7)})
    return order.model_copy(update={"nodes": tuple(nodes)})


def with_header(order: Order, *, message_id: int, now_s: float) -> Order:
    return order.model_copy(update={"header": make_header(SENDER, message_id, now_s)})


def instant(
    van_id: str, action_id: str, action: InstantActionType, *, message_id: int, now_s: float
) -> InstantActions:
    return InstantActions(
        header=make_header(SENDER, message_id, now_s),
        van_id=van_id,
        actions=(InstantAction(action_id=action_id, action_type=action, reason="conformance"),),
    )


def tampered(signed: Order | InstantActions) -> bytes:
    """The wire bytes of ``signed`` with one field changed after signing (the MAC kept)."""
    doc = json.loads(encode(signed))
    if isinstance(signed, Order):
        doc["edges"][-1]["max_speed_mps"] = 39.0  # someone raises the speed cap in transit
    else:
        doc["actions"][0]["reason"] = "tampered in transit"
    return json.dumps(doc, separators=(",", ":")).encode("utf-8")


def signed_bytes(message: Order | InstantActions, key: SigningKey) -> bytes:
    if isinstance(message, Order):
        return encode(sign(message, key))
    return encode(sign(message, key))
