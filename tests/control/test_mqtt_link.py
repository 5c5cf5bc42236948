"""The MQTT adapter (fleet.mqtt): bounded incoming queue with a drop count, clear errors,
prompt writes, whole reads, commands handled before their PUBACK, lost links noticed."""

from __future__ import annotations

import asyncio
import random
import threading

import aiomqtt
import paho.mqtt.client as paho
import pytest

from fleet.errors import ConfigError
from fleet.mqtt import BrokerAddress, BrokerError, MqttLink
from tests.support.brokers import BrokerEndpoint, free_port


def test_a_full_incoming_queue_drops_and_counts_instead_of_growing(broker: BrokerEndpoint) -> None:
    async def run() -> tuple[int, int]:
        async with asyncio.timeout(30):
            topic = broker.prefix + "flood"
            link = MqttLink(
                BrokerAddress(broker.host, broker.port),
                client_id=f"q-{broker.prefix[5:17]}",
                max_pending=10,
            )
            async with link, aiomqtt.Client(broker.host, broker.port) as flood:
                await link.subscribe(topic, qos=1)
                for i in range(100):  # nobody reads the link meanwhile
                    await flood.publish(topic, str(i).encode(), qos=1)
                await flood.publish(topic, b"last", qos=1)
                while link.dropped + 10 < 101:  # the broker is still delivering
                    await asyncio.sleep(0.01)  # polling a counter: no event to await
                kept = await link.receive(max_batch=1000)
                return len(kept), link.dropped

    kept, dropped = asyncio.run(run())
    assert kept == 10 and dropped == 91


def test_an_unreachable_broker_is_one_clear_error() -> None:
    async def run() -> None:
        async with (
            asyncio.timeout(30),
            MqttLink(BrokerAddress("127.0.0.1", free_port()), client_id="x"),
        ):
            pass

    with pytest.raises(
        BrokerError, match=r"cannot connect to the broker at mqtt://127\.0\.0\.1:\d+"
    ):
        asyncio.run(run())


@pytest.mark.parametrize("url", ["http://x", "mqtt://", "mqtt://host:notaport"])
def test_a_bad_broker_url_names_what_is_expected(url: str) -> None:
    with pytest.raises(ConfigError, match="broker URL"):
        BrokerAddress.parse(url)


def test_broker_urls_with_users_and_tls_ports() -> None:
    plain = BrokerAddress.parse("mqtt://fleet-dispatcher:s%40cret@broker.example")
    assert (plain.host, plain.port, plain.username, plain.password) == (
        "broker.example",
        1883,
        "fleet-dispatcher",
        "s@cret",
    )
    assert str(plain) == "mqtt://fleet-dispatcher@broker.example:1883"  # never the password
    assert BrokerAddress.parse("mqtts://b").port == 8883


def test_publish_soon_is_on_the_wire_before_the_caller_next_awaits(
    broker: BrokerEndpoint,
) -> None:
    """An order must not sit in the client's queue while the controller signs the next one:
    the event loop is kept busy (blocked) after publish_soon, and the message still arrives."""
    topic = broker.prefix + "prompt"
    subscribed, arrived = threading.Event(), threading.Event()
    watcher = paho.Client(paho.CallbackAPIVersion.VERSION2)
    watcher.on_subscribe = lambda *_: subscribed.set()
    watcher.on_message = lambda *_: arrived.set()
    watcher.connect(broker.host, broker.port)
    watcher.subscribe(topic, qos=1)
    watcher.loop_start()
    try:
        assert subscribed.wait(10)

        async def run() -> bool:
            async with asyncio.timeout(30):
                link = MqttLink(
                    BrokerAddress(broker.host, broker.port), client_id=f"p-{broker.prefix[5:17]}"
                )
                async with link:
                    await link.publish_soon(topic, b"order", qos=1)
                    on_time = arrived.wait(10)  # blocks the loop: nothing else may write for us
                    for _ in range(3):  # paho's (un)register callbacks settle
                        await asyncio.sleep(0)
                    # nothing left to write: the socket is not watched for writing (a loop
                    # watching an always-writable socket spins at 100 % CPU)
                    assert not link.watches_for_writing
                    return on_time

        assert asyncio.run(run()), "the message waited in the client for the loop's next turn"
    finally:
        watcher.loop_stop()
        watcher.disconnect()


def test_a_burst_read_ahead_in_chunks_arrives_whole_and_in_order(broker: BrokerEndpoint) -> None:
    """The link reads every packet that has arrived per readiness event: packets of every
    size, and one far larger than a socket buffer, arrive intact and in order."""
    rng = random.Random(7)
    payloads = [rng.randbytes(rng.randint(1, 3000)) for _ in range(1500)]
    payloads.insert(700, rng.randbytes(600_000))

    async def run() -> list[bytes]:
        async with asyncio.timeout(60):
            topic = broker.prefix + "burst"
            link = MqttLink(
                BrokerAddress(broker.host, broker.port), client_id=f"r-{broker.prefix[5:17]}"
            )
            async with link, aiomqtt.Client(broker.host, broker.port) as source:
                await link.subscribe(topic, qos=1)
                for p in payloads:
                    await source.publish(topic, p, qos=1)
                got: list[bytes] = []
                while len(got) < len(payloads):
                    got += [payload for _, payload in await link.receive(max_batch=5000)]
                return got

    assert asyncio.run(run()) == payloads
