"""The controller service end to end over a real broker (embedded and Mosquitto)."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from pathlib import Path

import aiomqtt
import pytest

from fleet.control.client import ControllerClient
from fleet.control.config import ControllerConfig
from fleet.errors import ControlError
from fleet.mqtt import BrokerAddress
from fleet.protocol import InstantActionType, VanTopic, encode
from fleet.protocol.control_api import (
    CancelParcelsBody,
    CancelVansBody,
    CommandResult,
    DispatchBody,
    EventsBody,
    EventsResult,
    InstantBody,
    OrdersBody,
    OrdersResult,
    StatusBody,
    StatusResult,
)
from fleet.store import Changes, EventRecord
from tests.control.service_support import day_book, running_controller
from tests.support import plans
from tests.support import protocol_examples as ex
from tests.support.brokers import BrokerEndpoint
from tests.support.mqtt_van import MqttVan
from tests.support.protocol_van import ProtocolVan

TIMEOUT_S = 60


def _van(broker: BrokerEndpoint, van_id: str) -> MqttVan:
    lon, lat = plans.ROSTER[van_id]
    return MqttVan(
        ProtocolVan(van_id, lon=lon, lat=lat),
        broker.host,
        broker.port,
        broker.topics,
        ex.MASTER_SECRET,
    )


async def _drive_to_end(van: MqttVan, timeout_s: float = 20.0) -> None:
    """Drive as far as released, wait for more to be released, until the order is done."""
    async with asyncio.timeout(timeout_s):
        while True:
            order = van.van.order
            if order is not None and van.van.reached == len(order.nodes) - 1:
                return
            if not await van.drive(1):
                van.changed.clear()
                await van.changed.wait()


async def _status(client: ControllerClient) -> StatusResult:
    result = await client.request(StatusBody())
    assert isinstance(result, StatusResult)
    return result


async def _until(
    predicate: object, client: ControllerClient, timeout_s: float = 10.0
) -> StatusResult:
    async with asyncio.timeout(timeout_s):
        while True:
            status = await _status(client)
            if predicate(status):  # type: ignore[operator]
                return status
            await asyncio.sleep(0.05)  # polling the controller over MQTT: no event to await


def test_a_plan_is_dispatched_signed_driven_and_delivered(
    broker: BrokerEndpoint, tmp_path: Path
) -> None:
    async def run() -> None:
        async with asyncio.timeout(TIMEOUT_S):
            address = BrokerAddress(broker.host, broker.port)
            async with (
                running_controller(broker, tmp_path / "fleet.db", day_book()),
                _van(broker, "WH-PORTO-01") as line_haul,
                _van(broker, "ST-A-01") as last_mile,
                ControllerClient(address, topics=broker.topics) as client,
            ):
                await client.subscribe_events()
                result = await client.request(DispatchBody(plan={"name": "day"}, orders_csv=""))
                assert isinstance(result, CommandResult) and "2 orders" in result.message
                await _drive_to_end(line_haul)
                await _drive_to_end(last_mile)
                status = await _until(
                    lambda s: (
                        s.parcels_by_status.get("delivered") == 4
                        and {v.van_id: v.mode.value for v in s.vans}["ST-A-01"] == "idle"
                    ),
                    client,
                )
                by_van = {v.van_id: v for v in status.vans}
                assert by_van["ST-A-01"].order_confirmed
                assert by_van["ST-A-02"].mode.value == "unknown"
                assert line_haul.rejected_details == [] and last_mile.rejected_details == []
                assert line_haul.foreign == [] and last_mile.foreign == []
                events = await client.request(EventsBody(parcel_id="P1"))
                assert isinstance(events, EventsResult)
                assert [e.kind for e in events.events] == [
                    "parcel_loaded",
                    "parcel_at_station",
                    "parcel_loaded",
                    "parcel_delivered",
                ]
                streamed = []
                async for event in client.events():
                    streamed.append(event.kind)
                    if event.kind == "order_finished":
                        break
                assert "order_sent" in streamed
                # the latest order of each van that holds one (a console started mid-day)
                latest = await client.request(OrdersBody(van_ids=("ST-A-01", "ST-A-02")))
                assert isinstance(latest, OrdersResult)
                assert [o.van_id for o in latest.orders] == ["ST-A-01"]
                held = last_mile.van.order
                assert held is not None
                got = latest.orders[0]
                assert (got.order_id, got.order_update_id) == (
                    held.order_id,
                    held.order_update_id,
                )
                assert got.nodes == held.nodes

    asyncio.run(run())


def test_bad_messages_are_counted_and_never_fatal(broker: BrokerEndpoint, tmp_path: Path) -> None:
    async def run() -> StatusResult:
        async with asyncio.timeout(TIMEOUT_S):
            address = BrokerAddress(broker.host, broker.port)
            topics = broker.topics
            async with (
                running_controller(broker, tmp_path / "fleet.db", day_book()),
                aiomqtt.Client(broker.host, broker.port) as rogue,
                ControllerClient(address, topics=topics) as client,
            ):
                state_topic = topics.van("ST-A-01", VanTopic.STATE)
                good = encode(ex.state(van_id="ST-A-01"))
                await rogue.publish(state_topic, b"{not json", qos=1)
                await rogue.publish(state_topic, json.dumps({"header": 1}).encode(), qos=1)
                await rogue.publish(topics.van("NOPE-99", VanTopic.STATE), good, qos=1)
                await rogue.publish(
                    topics.van("ST-A-02", VanTopic.STATE), good, qos=1
                )  # ST-A-01's state
                await rogue.publish(state_topic, b" " * 300_000, qos=1)
                await rogue.publish(topics.root + "/vans/ST-A-01/telemetry/x", good, qos=1)
                await rogue.publish(state_topic, good, qos=1)
                return await _until(lambda s: s.counters.get("states", 0) >= 1, client)

    counters = asyncio.run(run()).counters
    assert counters["rejected_malformed_json"] == 1
    assert counters["rejected_schema"] == 1
    assert counters["rejected_unknown_van"] == 1
    assert counters["rejected_wrong_van"] == 1
    assert counters["rejected_oversized"] == 1
    assert counters["states"] == 1


def test_a_flooding_van_is_throttled_and_the_others_still_count(
    broker: BrokerEndpoint, tmp_path: Path
) -> None:
    async def run() -> StatusResult:
        async with asyncio.timeout(TIMEOUT_S):
            topics = broker.topics
            async with (
                running_controller(broker, tmp_path / "fleet.db", day_book()),
                aiomqtt.Client(broker.host, broker.port) as flood,
                aiomqtt.Client(broker.host, broker.port) as calm,
                ControllerClient(BrokerAddress(broker.host, broker.port), topics=topics) as client,
            ):
                # stamped now: a state beyond the clock-skew bounds is refused (docs/limits.md)
                now_s = time.time()
                noisy = encode(ex.state(van_id="ST-A-02", now_s=now_s))
                for _ in range(300):
                    await flood.publish(topics.van("ST-A-02", VanTopic.STATE), noisy, qos=0)
                calm_state = encode(ex.state(van_id="ST-A-01", now_s=now_s))
                await calm.publish(topics.van("ST-A-01", VanTopic.STATE), calm_state, qos=1)
                return await _until(  # every message processed or throttled
                    lambda s: s.counters.get("states", 0) + s.counters.get("throttled", 0) >= 301,
                    client,
                )

    status = asyncio.run(run())
    # burst 40 then 20/s: however slowly the broker delivers the 300, most are dropped
    assert status.counters["throttled"] >= 100
    assert {v.van_id for v in status.vans if v.last_seen} == {"ST-A-01", "ST-A-02"}


def test_dispatcher_commands_reach_the_van_and_errors_come_back(
    broker: BrokerEndpoint, tmp_path: Path
) -> None:
    async def run() -> None:
        async with asyncio.timeout(TIMEOUT_S):
            async with (
                running_controller(broker, tmp_path / "fleet.db", day_book()),
                _van(broker, "ST-A-02") as van,
                ControllerClient(
                    BrokerAddress(broker.host, broker.port), topics=broker.topics
                ) as client,
            ):
                await client.request(
                    InstantBody(action=InstantActionType.EMERGENCY_STOP, all_vans=True)
                )
                await van.wait_for(lambda: van.van.emergency_stop)
                await client.request(
                    InstantBody(action=InstantActionType.RESUME, van_ids=("ST-A-02",))
                )
                await van.wait_for(lambda: not van.van.emergency_stop)
                with pytest.raises(ControlError, match="unknown parcel"):
                    await client.request(CancelParcelsBody(parcel_ids=("NOPE",)))
                with pytest.raises(ControlError, match="unknown van"):
                    await client.request(
                        InstantBody(action=InstantActionType.PAUSE, van_ids=("NOPE-01",))
                    )
                with pytest.raises(ControlError, match="no plan named"):
                    await client.request(DispatchBody(plan={"name": "other"}, orders_csv=""))
                assert van.rejected == []

    asyncio.run(run())


def test_the_cli_is_told_when_no_controller_runs(broker: BrokerEndpoint) -> None:
    async def run() -> None:
        async with asyncio.timeout(TIMEOUT_S):
            async with ControllerClient(
                BrokerAddress(broker.host, broker.port), topics=broker.topics
            ) as client:
                with pytest.raises(ControlError, match="no controller has ever run"):
                    await client.request(StatusBody())

    asyncio.run(run())


def test_van_states_are_processed_while_a_store_write_is_under_way(
    broker: BrokerEndpoint, tmp_path: Path
) -> None:
    """The receive loop hands a batch's decisions to the flush task and reads on: a write
    that takes long (here: held until the states are counted) never holds van traffic up."""

    async def run() -> int:
        async with asyncio.timeout(TIMEOUT_S):
            topics = broker.topics
            async with (
                running_controller(broker, tmp_path / "fleet.db", day_book()) as service,
                aiomqtt.Client(broker.host, broker.port) as van,
            ):
                store = service.store
                gate, writing = threading.Event(), threading.Event()
                commit = store.commit

                def slow_commit(changes: Changes) -> list[EventRecord]:
                    writing.set()
                    assert gate.wait(TIMEOUT_S)
                    return commit(changes)

                store.commit = slow_commit  # type: ignore[method-assign]
                try:
                    state_topic = topics.van("ST-A-01", VanTopic.STATE)
                    await van.publish(state_topic, b"{not json", qos=1)  # an event: a write
                    while not writing.is_set():
                        await asyncio.sleep(0.01)  # a flag set in a worker thread
                    for k in range(1, 6):
                        good = encode(ex.state(van_id="ST-A-01", message_id=k))
                        await van.publish(state_topic, good, qos=1)
                    while service.core.counters["states"] < 5:
                        await asyncio.sleep(0.01)  # polling a counter: no event to await
                    return service.core.counters["states"]
                finally:
                    gate.set()

    assert asyncio.run(run()) == 5


def test_cancel_van_answers_once_the_van_confirmed_and_sends_it_home(
    broker: BrokerEndpoint, tmp_path: Path
) -> None:
    """C10 through the service: the reply to cancel_vans waits for the van's confirmation
    (or cancel_confirm_s), then names what happened; the van is sent home."""
    config = ControllerConfig(
        name=f"ctl-{broker.prefix.split('/')[1]}", release_ahead_stops=1, cancel_confirm_s=2.0
    )

    async def run() -> None:
        async with asyncio.timeout(TIMEOUT_S):
            address = BrokerAddress(broker.host, broker.port)
            async with (
                running_controller(broker, tmp_path / "fleet.db", day_book(), config=config),
                _van(broker, "WH-PORTO-01") as van,
                ControllerClient(address, topics=broker.topics) as client,
            ):
                await van.report()
                await client.request(DispatchBody(plan={"name": "day"}, orders_csv=""))
                await van.wait_for(lambda: van.van.order is not None)
                await van.drive(1)  # loaded at the warehouse
                result = await client.request(CancelVansBody(van_ids=("WH-PORTO-01",)))
                assert isinstance(result, CommandResult)
                assert result.affected == ("WH-PORTO-01",)
                assert "cancel confirmed by the van" in result.message
                assert "home with 4 parcel(s)" in result.message
                await van.wait_for(lambda: (van.van.order or ex.order()).order_id.endswith(".h1"))
                assert van.van.cancelled is False and van.rejected == []
                # a van that is not there: the reply says so after cancel_confirm_s
                result = await client.request(CancelVansBody(van_ids=("ST-A-02",)))
                assert isinstance(result, CommandResult) and result.affected == ()
                assert "not confirmed within 2 s" in result.message

    asyncio.run(run())
