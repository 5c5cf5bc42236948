"""Every message survives encode → decode unchanged, and bad payloads are refused clearly."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings

from fleet.protocol import (
    Connection,
    DecodeError,
    Factsheet,
    InstantActions,
    Order,
    State,
    decode,
    encode,
)
from fleet.protocol.messages import Strict
from tests.support import protocol_examples as ex
from tests.support import strategies as sts

TOPIC = "fleet/v1/vans/WH-PORTO-01/order"


def _round_trip(message: Strict) -> None:
    assert decode(type(message), encode(message)) == message


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(sts.orders())
def test_every_order_round_trips(message: Order) -> None:
    _round_trip(message)


@settings(deadline=None)
@given(sts.instant_actions)
def test_every_instant_action_round_trips(message: InstantActions) -> None:
    _round_trip(message)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(sts.states)
def test_every_state_round_trips(message: State) -> None:
    _round_trip(message)


@settings(deadline=None)
@given(sts.connections)
def test_every_connection_round_trips(message: Connection) -> None:
    _round_trip(message)


@settings(deadline=None)
@given(sts.factsheets)
def test_every_factsheet_round_trips(message: Factsheet) -> None:
    _round_trip(message)


def _order_json(**changes: object) -> dict[str, object]:
    doc: dict[str, object] = json.loads(encode(ex.order()))
    doc.update(changes)
    return doc


def test_an_unknown_key_is_refused_naming_it() -> None:
    with pytest.raises(DecodeError, match="priority") as info:
        decode(Order, json.dumps(_order_json(priority=3)), topic=TOPIC)
    assert info.value.reason == "schema"
    assert TOPIC in str(info.value)


def test_a_string_where_a_number_belongs_is_refused() -> None:
    doc = _order_json(order_update_id="3")
    with pytest.raises(DecodeError, match="order_update_id"):
        decode(Order, json.dumps(doc))


def test_non_finite_numbers_are_refused() -> None:
    text = encode(ex.state()).replace(b'"speed_mps":0.0', b'"speed_mps":NaN')
    with pytest.raises(DecodeError, match="speed_mps"):
        decode(State, text)


def test_out_of_range_coordinates_are_refused() -> None:
    doc = json.loads(encode(ex.state()))
    doc["position"]["lat"] = 91.0
    with pytest.raises(DecodeError, match=r"position\.lat"):
        decode(State, json.dumps(doc))


def test_bytes_that_are_not_json_are_malformed() -> None:
    with pytest.raises(DecodeError) as info:
        decode(State, b"\xff\xfe{not json", topic=TOPIC)
    assert info.value.reason == "malformed_json"


def test_a_payload_over_the_limit_is_refused_before_parsing() -> None:
    with pytest.raises(DecodeError, match="exceeds the limit") as info:
        decode(Connection, b" " * 2000 + encode(ex.connection()))
    assert info.value.reason == "oversized"


def test_another_major_version_is_named_as_such() -> None:
    doc = json.loads(encode(ex.state()))
    doc["header"]["version"] = "2.0"
    with pytest.raises(DecodeError, match=r"1\.x") as info:
        decode(State, json.dumps(doc))
    assert info.value.reason == "unsupported_version"


def test_a_newer_minor_version_is_accepted() -> None:
    doc = json.loads(encode(ex.state()))
    doc["header"]["version"] = "1.7"
    assert decode(State, json.dumps(doc)).header.version == "1.7"


def test_an_overlong_parcel_list_is_refused() -> None:
    doc = json.loads(encode(ex.state()))
    doc["load"]["parcel_ids"] = [f"P{i}" for i in range(2001)]
    with pytest.raises(DecodeError, match="parcel_ids"):
        decode(State, json.dumps(doc))


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda d: d["edges"].pop(), "edges"),
        (lambda d: d["nodes"][1].update(sequence_id=4), "sequence_id must be 2"),
        (lambda d: d["edges"][0].update(end_node_id="n3"), "must join"),
        (lambda d: d["nodes"][0].update(released=False), "base is never empty"),
        (lambda d: d["nodes"][3].update(released=True), "prefix"),
        (lambda d: d["edges"][0].update(trajectory=[]), "fewer than 2 trajectory points"),
        (lambda d: d["nodes"][2].update(node_id="n1"), "appears more than once"),
    ],
    ids=[
        "edge-count",
        "sequence",
        "edge-ends",
        "empty-base",
        "gap-in-base",
        "no-geometry",
        "dup-node",
    ],
)
def test_a_badly_shaped_order_is_refused(mutate: object, expected: str) -> None:
    doc = json.loads(encode(ex.order(stops=4, released=2)))
    mutate(doc)  # type: ignore[operator]
    with pytest.raises(DecodeError, match=expected):
        decode(Order, json.dumps(doc))


@pytest.mark.parametrize(
    "moment", ["2026-11-31T10:00:00Z", "2026-13-01T10:00:00Z", "2026-11-23T99:00:00Z"]
)
def test_an_impossible_timestamp_is_refused_at_decode(moment: str) -> None:
    doc = json.loads(encode(ex.state()))
    doc["header"]["timestamp"] = moment
    with pytest.raises(DecodeError, match=r"header\.timestamp") as info:
        decode(State, json.dumps(doc))
    assert info.value.reason == "schema"


def test_an_order_a_state_could_not_report_is_refused() -> None:
    doc = json.loads(encode(ex.order(stops=3, released=1)))
    doc["nodes"][0]["actions"] = [
        {
            "action_id": f"L{k}",
            "action_type": "load",
            "parcel_ids": [f"Q{k}-{i}" for i in range(200)],
            "duration_s": 1.0,
        }
        for k in range(11)
    ]
    with pytest.raises(DecodeError, match="parcels loaded in all"):
        decode(Order, json.dumps(doc))


def test_a_dispatched_plan_with_a_non_finite_number_is_refused() -> None:
    from fleet.protocol.control_api import Request

    request = {
        "header": json.loads(encode(ex.state()))["header"],
        "request_id": "r1",
        "client_id": "cli-1",
        "body": {"command": "dispatch", "plan": {"routes": [{"x": 1e999}]}, "orders_csv": ""},
    }
    with pytest.raises(DecodeError, match="non-finite"):
        decode(Request, json.dumps(request).replace("Infinity", "1e999"))
