"""Both brokers carry what the protocol needs: QoS 1, retained messages and last wills."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import aiomqtt
import pytest

from tests.support.brokers import BrokerEndpoint, MosquittoProcess
from tests.support.netcut import CuttableLink

TIMEOUT_S = 20


async def _next(client: aiomqtt.Client) -> aiomqtt.Message:
    async for message in client.messages:
        return message
    raise AssertionError("the message stream ended")


def test_qos1_messages_arrive_in_order(broker: BrokerEndpoint) -> None:
    async def run() -> list[bytes]:
        async with asyncio.timeout(TIMEOUT_S):
            topic = broker.prefix + "order"
            async with (
                aiomqtt.Client(broker.host, broker.port) as sub,
                aiomqtt.Client(broker.host, broker.port) as pub,
            ):
                await sub.subscribe(topic, qos=1)
                for i in range(50):
                    await pub.publish(topic, str(i).encode(), qos=1)
                return [bytes((await _next(sub)).payload) for _ in range(50)]  # type: ignore[arg-type]

    assert asyncio.run(run()) == [str(i).encode() for i in range(50)]


def test_a_retained_message_reaches_a_late_subscriber(broker: BrokerEndpoint) -> None:
    async def run() -> bytes:
        async with asyncio.timeout(TIMEOUT_S):
            topic = broker.prefix + "connection"
            async with aiomqtt.Client(broker.host, broker.port) as pub:
                await pub.publish(topic, b"ONLINE", qos=1, retain=True)
            async with aiomqtt.Client(broker.host, broker.port) as sub:
                await sub.subscribe(topic, qos=1)
                message = await _next(sub)
                await sub.publish(topic, b"", qos=1, retain=True)  # clear it again
                assert message.retain
                return bytes(message.payload)  # type: ignore[arg-type]

    assert asyncio.run(run()) == b"ONLINE"


def test_a_cut_link_fires_the_last_will(broker: BrokerEndpoint) -> None:
    async def run() -> bytes:
        async with asyncio.timeout(TIMEOUT_S):
            topic = broker.prefix + "will"
            will = aiomqtt.Will(topic, b"CONNECTION_BROKEN", qos=1, retain=False)
            async with (
                CuttableLink(broker.host, broker.port) as link,
                aiomqtt.Client(broker.host, broker.port) as watcher,
            ):
                await watcher.subscribe(topic, qos=1)
                async with aiomqtt.Client("127.0.0.1", link.port, will=will, keepalive=5):
                    link.cut()
                    message = await _next(watcher)
                return bytes(message.payload)  # type: ignore[arg-type]

    assert asyncio.run(run()) == b"CONNECTION_BROKEN"


def test_a_client_gets_only_the_retained_messages_it_subscribed_to(broker: BrokerEndpoint) -> None:
    """amqtt 0.12 replays every client's retained matches to each new client; ours must not."""

    async def run() -> list[str]:
        async with asyncio.timeout(TIMEOUT_S):
            p = broker.prefix
            async with aiomqtt.Client(broker.host, broker.port) as controller:
                await controller.subscribe(p + "vans/+/connection", qos=1)
                await controller.publish(p + "vans/A/connection", b"ONLINE", qos=1, retain=True)
                await _next(controller)
                async with aiomqtt.Client(broker.host, broker.port) as van_b:
                    await van_b.subscribe(p + "vans/B/order", qos=1)
                    await controller.publish(p + "vans/B/order", b"order", qos=1)
                    got = [(await _next(van_b)).topic.value]
                await controller.publish(p + "vans/A/connection", b"", qos=1, retain=True)
                return got

    assert asyncio.run(run()) == [broker.prefix + "vans/B/order"]


@pytest.mark.mosquitto
def test_a_private_mosquitto_can_be_restarted(
    mosquitto_factory: Callable[..., MosquittoProcess],
) -> None:
    proc = mosquitto_factory("persistence false\n")
    endpoint = proc.endpoint()

    async def round_trip() -> bytes:
        async with asyncio.timeout(TIMEOUT_S):
            async with aiomqtt.Client(endpoint.host, endpoint.port) as client:
                await client.subscribe(endpoint.prefix + "x", qos=1)
                await client.publish(endpoint.prefix + "x", b"hi", qos=1)
                return bytes((await _next(client)).payload)  # type: ignore[arg-type]

    assert asyncio.run(round_trip()) == b"hi"
    proc.restart()
    assert asyncio.run(round_trip()) == b"hi"
