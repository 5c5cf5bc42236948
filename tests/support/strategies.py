"""Hypothesis strategies that build valid protocol messages (round trips and fuzzing)."""

from __future__ import annotations

from hypothesis import strategies as st

from fleet.protocol import (
    MAX_MESSAGE_ID,
    ActionState,
    ActionStatus,
    Battery,
    Connection,
    ConnectionState,
    Edge,
    EdgeState,
    ErrorLevel,
    ErrorReference,
    Factsheet,
    Header,
    InstantAction,
    InstantActions,
    InstantActionType,
    Load,
    Node,
    NodeAction,
    NodeActionType,
    NodeState,
    Order,
    State,
    StopKind,
    VanError,
    VanPosition,
    format_timestamp,
)

_ID_CHARS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-"
van_ids = st.text(_ID_CHARS, min_size=1, max_size=64)
idents = st.text(_ID_CHARS + ".:", min_size=1, max_size=64)
_visible = st.text(st.characters(min_codepoint=33, max_codepoint=126), min_size=1, max_size=31)
# printable ASCII, 1..64, inner spaces allowed, none at either end
parcel_ids = _visible | st.tuples(_visible, _visible).map(" ".join)
texts = st.text(max_size=80)
lons = st.floats(-180.0, 180.0, allow_nan=False)
lats = st.floats(-90.0, 90.0, allow_nan=False)
timestamps = st.floats(0.0, 4_000_000_000.0).map(format_timestamp)


def _fin(lo: float, hi: float) -> st.SearchStrategy[float]:
    return st.floats(lo, hi, allow_nan=False, allow_infinity=False)


headers = st.builds(
    Header,
    message_id=st.integers(0, MAX_MESSAGE_ID),
    timestamp=timestamps,
    version=st.sampled_from(["1.0", "1.1", "1.23"]),
    sender=idents,
)


@st.composite
def orders(draw: st.DrawFn) -> Order:
    count = draw(st.integers(1, 6))
    released = draw(st.integers(1, count))
    nodes = []
    for i in range(count):
        kind = draw(st.sampled_from(StopKind))
        transfer = kind is StopKind.TRANSFER
        # a transfer node names the van it loads from and holds only transfer_load actions
        kinds = (
            [NodeActionType.TRANSFER_LOAD]
            if transfer
            else [k for k in NodeActionType if k is not NodeActionType.TRANSFER_LOAD]
        )
        nodes.append(
            Node(
                node_id=f"n{i}",
                sequence_id=2 * i,
                released=i < released,
                kind=kind,
                ref=draw(st.text(_ID_CHARS, min_size=1 if transfer else 0, max_size=20)),
                lon=draw(lons),
                lat=draw(lats),
                allowed_deviation_m=draw(_fin(0, 1000)),
                planned_arrival=draw(st.none() | timestamps),
                planned_departure=draw(st.none() | timestamps),
                actions=tuple(
                    NodeAction(
                        action_id=f"a{i}.{k}",
                        action_type=draw(st.sampled_from(kinds)),
                        parcel_ids=tuple(draw(st.lists(parcel_ids, max_size=3))),
                        duration_s=draw(_fin(0, 86_400)),
                        target_soc_pct=draw(st.none() | _fin(0, 100)),
                    )
                    for k in range(draw(st.integers(0, 2)))
                ),
            )
        )
    edges = [
        Edge(
            edge_id=f"e{i}",
            sequence_id=2 * i + 1,
            released=i + 1 < released,
            start_node_id=f"n{i}",
            end_node_id=f"n{i + 1}",
            length_m=draw(_fin(0, 1_000_000)),
            max_speed_mps=draw(_fin(0.1, 40)),
            trajectory=tuple(
                draw(
                    st.lists(
                        st.tuples(lons, lats), min_size=2 if i + 1 < released else 0, max_size=5
                    )
                )
            ),
        )
        for i in range(count - 1)
    ]
    return Order(
        header=draw(headers),
        van_id=draw(van_ids),
        order_id=draw(idents),
        order_update_id=draw(st.integers(0, 2**31)),
        nodes=tuple(nodes),
        edges=tuple(edges),
    )


instant_actions = st.builds(
    InstantActions,
    header=headers,
    van_id=van_ids,
    actions=st.lists(
        st.builds(
            InstantAction,
            action_id=idents,
            action_type=st.sampled_from(InstantActionType),
            reason=texts,
        ),
        min_size=1,
        max_size=8,
    ).map(tuple),
)

states = st.builds(
    State,
    header=headers,
    van_id=van_ids,
    order_id=st.none() | idents,
    order_update_id=st.integers(0, 2**31),
    last_node_id=st.none() | idents,
    last_node_sequence_id=st.none() | st.integers(0, 4000),
    node_states=st.lists(
        st.builds(
            NodeState, node_id=idents, sequence_id=st.integers(0, 4000), released=st.booleans()
        ),
        max_size=3,
    ).map(tuple),
    edge_states=st.lists(
        st.builds(
            EdgeState, edge_id=idents, sequence_id=st.integers(0, 4000), released=st.booleans()
        ),
        max_size=3,
    ).map(tuple),
    driving=st.booleans(),
    paused=st.booleans(),
    emergency_stop=st.booleans(),
    door_open=st.booleans(),
    position=st.none()
    | st.builds(VanPosition, lon=lons, lat=lats, heading_deg=st.floats(0, 359.99)),
    speed_mps=_fin(0, 100),
    odometer_m=_fin(0, 1e10),
    battery=st.builds(
        Battery, soc_pct=_fin(0, 100), remaining_range_m=_fin(0, 1e7), charging=st.booleans()
    ),
    load=st.builds(
        Load,
        load_kg=_fin(0, 1e5),
        volume_m3=_fin(0, 1000),
        parcel_ids=st.lists(parcel_ids, max_size=4).map(tuple),
    ),
    action_states=st.lists(
        st.builds(
            ActionState,
            action_id=idents,
            action_type=st.sampled_from([t.value for t in NodeActionType]),
            status=st.sampled_from(ActionStatus),
            result_description=texts,
            failed_parcel_ids=st.lists(parcel_ids, max_size=2).map(tuple),
        ),
        max_size=3,
    ).map(tuple),
    errors=st.lists(
        st.builds(
            VanError,
            error_type=idents,
            level=st.sampled_from(ErrorLevel),
            description=texts,
            references=st.lists(
                st.builds(ErrorReference, key=idents, value=st.text(max_size=40)), max_size=2
            ).map(tuple),
        ),
        max_size=2,
    ).map(tuple),
)

connections = st.builds(
    Connection,
    header=headers,
    van_id=van_ids,
    connection_state=st.sampled_from(ConnectionState),
)

factsheets = st.builds(
    Factsheet,
    header=headers,
    van_id=van_ids,
    model=st.text(min_size=1, max_size=64),
    firmware_version=st.text(min_size=1, max_size=64),
    protocol_versions=st.lists(st.sampled_from(["1.0", "1.1"]), min_size=1, max_size=2).map(tuple),
    top_speed_mps=_fin(0.1, 40),
    payload_kg=_fin(0.1, 1e5),
    cargo_volume_m3=_fin(0.1, 1000),
    battery_kwh=_fin(0.1, 1e4),
    range_m=_fin(1, 1e7),
    max_order_nodes=st.integers(2, 2000),
    max_order_bytes=st.integers(1024, 16 * 1024 * 1024),
    instant_actions=st.lists(st.sampled_from(InstantActionType), min_size=1, max_size=6).map(tuple),
)
