"""The MQTT adapter (fleet.mqtt): bounded incoming queue with a drop count, clear errors,
prompt writes, whole reads, commands handled before their PUBACK, lost links noticed."""

from __future__ import annotations

import ast
import asyncio
import random
import threading
from collections.abc import Callable
from pathlib import Path

import aiomqtt
import paho.mqtt.client as paho
import pytest

from fleet.errors import ConfigError
from fleet.mqtt import BrokerAddress, BrokerError, MqttLink
from tests.support.brokers import BrokerEndpoint, MosquittoProcess, free_port


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


def test_a_killed_broker_ends_receive_wait_lost_and_a_waiting_publish_at_once(
    mosquitto_factory: Callable[..., MosquittoProcess],
) -> None:
    """No operation waits out its timeout for a broker that is gone."""
    proc = mosquitto_factory()

    async def run() -> list[str]:
        async with asyncio.timeout(30):
            link = MqttLink(BrokerAddress(proc.host, proc.port), client_id="k", timeout_s=20)
            async with link:
                await link.subscribe("lost/#", qos=1)
                receiving = asyncio.create_task(link.receive())
                waiting = asyncio.create_task(link.wait_lost())
                await asyncio.sleep(0)
                proc.kill()
                errors = []
                for task in (receiving, waiting):
                    with pytest.raises(BrokerError) as info:
                        await task
                    errors.append(str(info.value))
                with pytest.raises(BrokerError):
                    await link.publish("lost/x", b"late", qos=1)
                assert not link.is_connected
                return errors

    errors = asyncio.run(run())
    assert all("lost the broker at mqtt://127.0.0.1" in e for e in errors), errors


def test_commands_go_to_the_callback_in_order_and_a_failing_one_does_not_end_the_session(
    mosquitto: BrokerEndpoint,
) -> None:
    topic = mosquitto.prefix + "cmd"
    seen: list[bytes] = []
    three = threading.Event()

    def on_message(got_topic: str, payload: bytes) -> None:
        assert got_topic == topic
        seen.append(payload)
        if len(seen) == 3:
            three.set()
        if payload == b"bad":
            raise ValueError("a handler that fails")

    async def run() -> None:
        async with asyncio.timeout(30):
            link = MqttLink(
                BrokerAddress(mosquitto.host, mosquitto.port),
                client_id=f"c-{mosquitto.prefix[5:17]}",
                clean_session=False,
                on_message=on_message,
            )
            async with link, aiomqtt.Client(mosquitto.host, mosquitto.port) as source:
                await link.subscribe(topic, qos=1)
                for payload in (b"one", b"bad", b"three"):
                    await source.publish(topic, payload, qos=1)
                while not three.is_set():
                    await asyncio.sleep(0.01)  # polling a list: no event to await in the callback
                assert link.is_connected

    asyncio.run(run())
    assert seen == [b"one", b"bad", b"three"]


def test_a_refused_login_is_one_clear_error(
    mosquitto_factory: Callable[..., MosquittoProcess], tmp_path: Path
) -> None:
    (tmp_path / "nobody.pw").write_text("")  # no user may log in
    proc = mosquitto_factory(
        # user root: a broker started by root otherwise cannot read pytest's private tmp dir
        full_config="listener {port} 127.0.0.1\nallow_anonymous false\nuser root\n"
        f"password_file {tmp_path / 'nobody.pw'}\n"
    )

    async def run() -> None:
        async with asyncio.timeout(30):
            address = BrokerAddress(proc.host, proc.port, username="van", password="wrong")
            async with MqttLink(address, client_id="refused"):
                pass

    with pytest.raises(
        BrokerError, match=r"cannot connect to the broker at mqtt://van@127\.0\.0\.1"
    ):
        asyncio.run(run())


# ---- login files: one parser for the bridge, the controller and the CLI ------------------

LOGIN = """[mqtt]
host = "broker.example"
port = 1883
username = "WH-PORTO-01"
password = "pw"
"""
TLS = """[tls]
port = 8883
ca_file = "ca.crt"
cert_file = "client.crt"
key_file = "client.key"
"""


def test_a_login_with_tls_is_used_with_tls_when_asked_or_when_present(tmp_path: Path) -> None:
    path = tmp_path / "mqtt.toml"
    path.write_text(LOGIN + TLS)
    plain = BrokerAddress.from_login(path)  # fleet's default: plain unless --tls
    assert (plain.port, plain.tls, plain.username) == (1883, False, "WH-PORTO-01")
    for tls in (True, None):  # None: as the firmware bridge reads its --mqtt-config
        secure = BrokerAddress.from_login(path, tls=tls)
        assert (secure.port, secure.tls, secure.ca_file) == (8883, True, str(tmp_path / "ca.crt"))
        assert str(secure) == "mqtts://WH-PORTO-01@broker.example:8883"


def test_a_login_without_tls_is_plain_unless_tls_is_required(tmp_path: Path) -> None:
    path = tmp_path / "mqtt.toml"
    path.write_text(LOGIN)
    assert not BrokerAddress.from_login(path, tls=None).tls
    with pytest.raises(ConfigError, match=r"mqtt\.toml: \[tls\]: this login has no \[tls\] table"):
        BrokerAddress.from_login(path, tls=True)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (LOGIN.replace('password = "pw"\n', ""), r"\[mqtt\] password: missing"),
        (LOGIN + 'colour = "red"\n', r"\[mqtt\]: unknown key\(s\) colour"),
        (LOGIN.replace("1883", '"1883"'), r"\[mqtt\] port: expected an integer, got '1883'"),
        (LOGIN.replace("1883", "70000"), r"\[mqtt\] port: expected a TCP port 1\.\.65535"),
        (LOGIN + TLS.replace('key_file = "client.key"\n', ""), r"\[tls\] key_file: missing"),
        ("[mqtt\n", "not valid TOML"),
        ('mqtt = "x"\n', r"expected a table \[mqtt\]"),
    ],
)
def test_a_bad_login_file_names_the_file_table_and_key(
    tmp_path: Path, text: str, message: str
) -> None:
    path = tmp_path / "mqtt.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message) as info:
        BrokerAddress.from_login(path, tls=None)
    assert str(path) in str(info.value)


def test_the_mqtt_adapter_and_the_bridge_service_touch_no_private_name_of_another_object() -> None:
    """paho is driven through its documented API only: a patch release cannot break us by
    renaming an internal (issue 16). Only ``self``/``cls`` may have ``_names`` read."""
    root = Path(__file__).resolve().parents[2]
    files = [
        *sorted((root / "fleet" / "mqtt").glob("*.py")),
        root / "firmware_bridge/bridge/service.py",
    ]
    found = []
    for path in files:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if (
                isinstance(node, ast.Attribute)
                and node.attr.startswith("_")
                and not node.attr.startswith("__")
                and not (isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"))
            ):
                found.append(f"{path.relative_to(root)}:{node.lineno}: {ast.unparse(node)}")
            if isinstance(node, ast.ClassDef):  # no subclass of a library's client either
                bases = [ast.unparse(b) for b in node.bases]
                found += [f"{path.name}: class {node.name}({b})" for b in bases if "paho" in b]
    assert not found, found
