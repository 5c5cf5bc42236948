"""Issue 15 at the controller: every malformed request answered, nothing stored half-way, a
re-plan that cannot be applied is an event, and a request never holds the event loop."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import aiomqtt

from fleet.control.client import ControllerClient
from fleet.control.core import CheckedPlan, ReplanRequest
from fleet.model import Parcel, ParcelId
from fleet.mqtt import BrokerAddress
from fleet.protocol import decode, make_header
from fleet.protocol.control_api import (
    DispatchBody,
    EventsBody,
    EventsResult,
    ReplanBody,
    Reply,
    StatusBody,
    StatusResult,
)
from tests.control.service_support import PlanBook, running_controller
from tests.support import plans
from tests.support.brokers import BrokerEndpoint

CLIENT = "hardening-cli"


def _request(body: dict[str, object], request_id: str = "r1") -> bytes:
    header = make_header(CLIENT, 1, time.time()).model_dump(mode="json")
    return json.dumps(
        {"header": header, "request_id": request_id, "client_id": CLIENT, "body": body}
    ).encode()


async def _raw_ask(broker: BrokerEndpoint, payload: bytes, timeout_s: float = 10.0) -> Reply:
    topics = broker.topics
    async with aiomqtt.Client(broker.host, broker.port, identifier=f"{CLIENT}-raw") as client:
        await client.subscribe(topics.controller_reply(CLIENT), qos=1)
        await client.publish(topics.controller_request, payload, qos=1)
        async with asyncio.timeout(timeout_s):
            async for message in client.messages:
                assert isinstance(message.payload, bytes)
                return decode(Reply, message.payload)
    raise AssertionError("no reply")


def test_every_malformed_request_gets_an_error_reply_and_the_service_serves_on(
    mosquitto: BrokerEndpoint, tmp_path: Path
) -> None:
    deep = "[" * 100_000 + "]" * 100_000
    cases = {
        # the controller's task used to die on these: no reply, the CLI waited its timeout
        "events after an id beyond 64 bits": _request(
            {"command": "events", "after_id": 99999999999999999999999}
        ),
        "a plan nested 100,000 deep": _request({"command": "dispatch", "orders_csv": "x"})[:-2]
        + f', "plan": {{"x": {deep}}}}}}}'.encode(),
        "a node id of 2**80": _request(
            {"command": "dispatch", "orders_csv": "x", "plan": {"node": 2**80}}
        ),
        "a status of a wildcard van": _request({"command": "status", "van_ids": ["A/+/#"]}),
    }

    async def run() -> dict[str, Reply]:
        replies = {}
        async with running_controller(mosquitto, tmp_path / "fleet.db", PlanBook()) as service:
            for i, (name, payload) in enumerate(cases.items()):
                replies[name] = await _raw_ask(
                    mosquitto, payload.replace(b'"r1"', f'"r{i}"'.encode())
                )
            address = BrokerAddress(mosquitto.host, mosquitto.port)
            async with ControllerClient(address, topics=mosquitto.topics) as client:
                status = await client.request(StatusBody())
            assert isinstance(status, StatusResult)
            assert service.core.counters["rejected_schema"] >= 3
        return replies

    replies = asyncio.run(run())
    for name, reply in replies.items():
        assert not reply.ok, name
        assert reply.error, name


class _Exploding(PlanBook):
    def load_dispatch(self, body: DispatchBody) -> CheckedPlan:
        raise OverflowError("Python int too large to convert to C int")


def test_a_defect_in_a_command_is_an_error_reply_not_a_dead_task(
    mosquitto: BrokerEndpoint, tmp_path: Path
) -> None:
    async def run() -> Reply:
        async with running_controller(mosquitto, tmp_path / "fleet.db", _Exploding()):
            return await _raw_ask(
                mosquitto, _request({"command": "dispatch", "orders_csv": "", "plan": {}})
            )

    reply = asyncio.run(run())
    assert not reply.ok
    assert "OverflowError" in reply.error and "dispatch" in reply.error


def test_a_plan_with_an_id_outside_the_rule_is_refused_and_nothing_is_stored(
    mosquitto: BrokerEndpoint, tmp_path: Path
) -> None:
    """Before: the plan and the parcel were stored, no order went out, and dispatching again
    said "already dispatched; nothing sent again"."""
    bad = ("P1", "P2", "P3", "PEDIDO-ção-1")
    parcels = [
        Parcel(ParcelId(pid), p.lon, p.lat, p.weight_kg, p.volume_m3)
        for pid, p in zip(bad, plans.parcels(), strict=True)
    ]
    routes = [plans.line_haul_route(ids=bad)]
    book = PlanBook({"day": (plans.plan(routes), parcels)})

    async def run() -> tuple[Reply, Reply, int]:
        async with running_controller(mosquitto, tmp_path / "fleet.db", book) as service:
            payload = _request({"command": "dispatch", "orders_csv": "", "plan": {"name": "day"}})
            first = await _raw_ask(mosquitto, payload)
            again = await _raw_ask(mosquitto, payload.replace(b'"r1"', b'"r2"'))
            return first, again, len(service.store.load().parcels)

    first, again, stored = asyncio.run(run())
    assert not first.ok and "PEDIDO" in first.error and "nothing stored" in first.error
    assert not again.ok and "already dispatched" not in again.error
    assert stored == 0


def test_a_replan_the_core_cannot_apply_is_a_replan_failed_event(
    mosquitto: BrokerEndpoint, tmp_path: Path
) -> None:
    """Before: the task died, no event, and every later re-plan queued behind it forever."""
    book = PlanBook({"day": (plans.plan(), plans.parcels())})

    def broken(request: ReplanRequest) -> object:
        return object()  # not a plan: the core cannot apply it

    book.replanner = broken  # type: ignore[assignment]

    async def run() -> list[str]:
        async with running_controller(mosquitto, tmp_path / "fleet.db", book):
            address = BrokerAddress(mosquitto.host, mosquitto.port)
            async with ControllerClient(address, topics=mosquitto.topics) as client:
                await client.request(DispatchBody(plan={"name": "day"}, orders_csv=""))
                kinds: list[str] = []
                async with asyncio.timeout(20):
                    for i in range(2):  # the second one is not stuck behind the first
                        await client.request(ReplanBody(reason="test"))
                        while kinds.count("replan_failed") <= i:
                            result = await client.request(EventsBody(limit=1000))
                            assert isinstance(result, EventsResult)
                            kinds = [e.kind for e in result.events]
                            await asyncio.sleep(0.05)  # polled over MQTT
                return kinds

    kinds = asyncio.run(run())
    assert kinds.count("replan_failed") == 2
