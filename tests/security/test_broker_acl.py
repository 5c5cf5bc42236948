"""The generated password file, ACL and TLS listener, proved against a real Mosquitto.

Each test starts its own broker from the config `fleet broker credentials` wrote. A refused
publish is silent in MQTT 3.1.1 (the broker still acknowledges it), so every "cannot" test
ends with an allowed message on the same path: once that marker arrives, anything the broker
let through before it would have arrived too.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiomqtt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from fleet.protocol.topics import Topics, VanTopic
from fleet.security import tls
from tests.security.conftest import SecureBroker, mqtt_connect_over_tls

pytestmark = pytest.mark.mosquitto

TIMEOUT_S = 20
T = Topics()
VAN_A, VAN_B = "ST-T1-01", "ST-T1-02"
CONTROLLER, DISPATCHER = "fleet-controller", "fleet-dispatcher"


def run(coro: Callable[[], Awaitable[None]]) -> None:
    async def bounded() -> None:
        async with asyncio.timeout(TIMEOUT_S):
            await coro()

    asyncio.run(bounded())


async def collect_until(client: aiomqtt.Client, marker_topic: str) -> list[tuple[str, bytes]]:
    """Every (topic, payload) received up to and including the first on ``marker_topic``."""
    got: list[tuple[str, bytes]] = []
    async for message in client.messages:
        payload = message.payload
        assert isinstance(payload, bytes | bytearray)
        got.append((str(message.topic), bytes(payload)))
        if str(message.topic) == marker_topic:
            return got
    raise AssertionError("the message stream ended before the marker")


# -- who may log in ---------------------------------------------------------------------------


def test_an_anonymous_client_cannot_connect(secure_broker: SecureBroker) -> None:
    async def attempt() -> None:
        with pytest.raises(aiomqtt.MqttCodeError) as refused:
            async with secure_broker.client(None):
                pass
        assert "authori" in str(refused.value).lower()

    run(attempt)


def test_a_wrong_password_or_another_vans_password_is_refused(
    secure_broker: SecureBroker,
) -> None:
    mqtt_b = secure_broker.login(VAN_B)["mqtt"]
    assert isinstance(mqtt_b, dict)

    async def attempt() -> None:
        for username, password in ((VAN_A, "not-the-password"), (VAN_A, str(mqtt_b["password"]))):
            with pytest.raises(aiomqtt.MqttCodeError):
                async with secure_broker.client(username, password=password):
                    pass

    run(attempt)


def test_every_generated_identity_can_log_in(secure_broker: SecureBroker) -> None:
    async def attempt() -> None:
        for username in (CONTROLLER, DISPATCHER, "WH-TEST-01", VAN_A, VAN_B, "ST-T2-01"):
            async with secure_broker.client(username) as client:
                await client.publish("fleet/v1/nowhere", b"", qos=1)

    run(attempt)


# -- what a van may do ------------------------------------------------------------------------


def test_a_van_cannot_publish_another_vans_state(secure_broker: SecureBroker) -> None:
    async def attempt() -> None:
        async with (
            secure_broker.client(CONTROLLER) as controller,
            secure_broker.client(VAN_A) as van_a,
        ):
            await controller.subscribe(T.all_vans(VanTopic.STATE), qos=1)
            for kind in (VanTopic.STATE, VanTopic.CONNECTION, VanTopic.FACTSHEET):
                await van_a.publish(T.van(VAN_B, kind), b"forged by A", qos=1)
            await van_a.publish(T.van(VAN_A, VanTopic.STATE), b"A's own", qos=1)
            got = await collect_until(controller, T.van(VAN_A, VanTopic.STATE))
        assert got == [(T.van(VAN_A, VanTopic.STATE), b"A's own")]

    run(attempt)


def test_a_van_cannot_read_another_vans_orders_or_instant_actions(
    secure_broker: SecureBroker,
) -> None:
    async def attempt() -> None:
        async with (
            secure_broker.client(CONTROLLER) as controller,
            secure_broker.client(VAN_A) as van_a,
        ):
            for topic in (
                T.van(VAN_B, VanTopic.ORDER),
                T.van(VAN_B, VanTopic.INSTANT),
                T.all_vans(VanTopic.ORDER),
                "fleet/#",
                "#",
            ):
                await van_a.subscribe(topic, qos=1)
            await controller.publish(T.van(VAN_B, VanTopic.ORDER), b"B's order", qos=1)
            await controller.publish(T.van(VAN_B, VanTopic.INSTANT), b"B's estop", qos=1)
            await van_a.subscribe(T.van(VAN_A, VanTopic.ORDER), qos=1)
            await controller.publish(T.van(VAN_A, VanTopic.ORDER), b"A's order", qos=1)
            got = await collect_until(van_a, T.van(VAN_A, VanTopic.ORDER))
        assert {topic for topic, _ in got} == {T.van(VAN_A, VanTopic.ORDER)}
        assert all(payload == b"A's order" for _, payload in got)

    run(attempt)


def test_a_van_cannot_read_another_vans_state(secure_broker: SecureBroker) -> None:
    async def attempt() -> None:
        async with (
            secure_broker.client(CONTROLLER) as controller,
            secure_broker.client(VAN_A) as van_a,
            secure_broker.client(VAN_B) as van_b,
        ):
            await van_a.subscribe(T.all_vans(VanTopic.STATE), qos=1)
            await van_a.subscribe(T.van(VAN_A, VanTopic.INSTANT), qos=1)
            await van_b.publish(T.van(VAN_B, VanTopic.STATE), b"B is here", qos=1)
            await controller.publish(T.van(VAN_A, VanTopic.INSTANT), b"marker", qos=1)
            got = await collect_until(van_a, T.van(VAN_A, VanTopic.INSTANT))
        assert got == [(T.van(VAN_A, VanTopic.INSTANT), b"marker")]

    run(attempt)


def test_a_van_cannot_command_itself_or_another_van(secure_broker: SecureBroker) -> None:
    async def attempt() -> None:
        async with (
            secure_broker.client(CONTROLLER) as controller,
            secure_broker.client(VAN_A) as van_a,
            secure_broker.client(VAN_B) as van_b,
        ):
            await van_a.subscribe(T.van(VAN_A, VanTopic.ORDER), qos=1)
            await van_a.subscribe(T.van(VAN_A, VanTopic.INSTANT), qos=1)
            await van_b.publish(T.van(VAN_A, VanTopic.INSTANT), b"from B", qos=1)
            await van_b.publish(T.van(VAN_A, VanTopic.ORDER), b"from B", qos=1)
            await van_a.publish(T.van(VAN_A, VanTopic.ORDER), b"from A itself", qos=1)
            await controller.publish(T.van(VAN_A, VanTopic.INSTANT), b"controller", qos=1)
            got = await collect_until(van_a, T.van(VAN_A, VanTopic.INSTANT))
        assert got == [(T.van(VAN_A, VanTopic.INSTANT), b"controller")]

    run(attempt)


def test_a_van_cannot_impersonate_the_controller_or_a_dispatcher(
    secure_broker: SecureBroker,
) -> None:
    async def attempt() -> None:
        async with (
            secure_broker.client(CONTROLLER) as controller,
            secure_broker.client(DISPATCHER) as dispatcher,
            secure_broker.client(VAN_A) as van_a,
        ):
            await controller.subscribe("fleet/v1/controller/#", qos=1)
            await dispatcher.subscribe(T.controller_events, qos=1)
            await dispatcher.subscribe(T.controller_reply("cli-1"), qos=1)
            await van_a.publish(T.controller_request, b"forged request", qos=1)
            await van_a.publish(T.controller_events, b"forged event", qos=1)
            await van_a.publish(T.controller_reply("cli-1"), b"forged reply", qos=1)
            await van_a.publish(T.controller_connection, b"OFFLINE", qos=1, retain=True)
            await dispatcher.publish(T.controller_request, b"real request", qos=1)
            to_controller = await collect_until(controller, T.controller_request)
            await controller.publish(T.controller_reply("cli-1"), b"real reply", qos=1)
            to_dispatcher = await collect_until(dispatcher, T.controller_reply("cli-1"))
        assert to_controller == [(T.controller_request, b"real request")]
        assert to_dispatcher == [(T.controller_reply("cli-1"), b"real reply")]

    run(attempt)


# -- what the dispatcher may do ---------------------------------------------------------------


def test_the_dispatcher_talks_to_the_controller_but_never_to_a_van(
    secure_broker: SecureBroker,
) -> None:
    async def attempt() -> None:
        async with (
            secure_broker.client(CONTROLLER) as controller,
            secure_broker.client(DISPATCHER) as dispatcher,
            secure_broker.client(VAN_A) as van_a,
        ):
            await van_a.subscribe(T.van(VAN_A, VanTopic.INSTANT), qos=1)
            await dispatcher.subscribe(T.all_vans(VanTopic.STATE), qos=1)
            await dispatcher.subscribe(T.controller_reply("cli-7"), qos=1)
            await controller.subscribe(T.controller_request, qos=1)
            # straight to the van: refused
            await dispatcher.publish(T.van(VAN_A, VanTopic.INSTANT), b"estop", qos=1)
            await dispatcher.publish(T.van(VAN_A, VanTopic.ORDER), b"order", qos=1)
            await van_a.publish(T.van(VAN_A, VanTopic.STATE), b"A state", qos=1)
            # through the controller: carried
            await dispatcher.publish(T.controller_request, b"estop A", qos=1)
            assert await collect_until(controller, T.controller_request) == [
                (T.controller_request, b"estop A")
            ]
            await controller.publish(T.van(VAN_A, VanTopic.INSTANT), b"signed estop", qos=1)
            assert await collect_until(van_a, T.van(VAN_A, VanTopic.INSTANT)) == [
                (T.van(VAN_A, VanTopic.INSTANT), b"signed estop")
            ]
            await controller.publish(T.controller_reply("cli-7"), b"done", qos=1)
            assert await collect_until(dispatcher, T.controller_reply("cli-7")) == [
                (T.controller_reply("cli-7"), b"done")
            ]

    run(attempt)


def test_the_controller_reads_every_vans_state_and_commands_every_van(
    secure_broker: SecureBroker,
) -> None:
    vans = ("WH-TEST-01", VAN_A, VAN_B, "ST-T2-01")

    async def attempt() -> None:
        async with secure_broker.client(CONTROLLER) as controller:
            await controller.subscribe(T.all_vans(VanTopic.STATE), qos=1)
            await controller.subscribe(T.all_vans(VanTopic.CONNECTION), qos=1)
            for van in vans:
                async with secure_broker.client(van) as client:
                    await client.subscribe(T.van(van, VanTopic.ORDER), qos=1)
                    await client.publish(T.van(van, VanTopic.CONNECTION), b"ONLINE", qos=1)
                    await client.publish(T.van(van, VanTopic.STATE), van.encode(), qos=1)
                    got = await collect_until(controller, T.van(van, VanTopic.STATE))
                    assert got == [
                        (T.van(van, VanTopic.CONNECTION), b"ONLINE"),
                        (T.van(van, VanTopic.STATE), van.encode()),
                    ]
                    await controller.publish(T.van(van, VanTopic.ORDER), b"go", qos=1)
                    assert await collect_until(client, T.van(van, VanTopic.ORDER)) == [
                        (T.van(van, VanTopic.ORDER), b"go")
                    ]

    run(attempt)


# -- TLS --------------------------------------------------------------------------------------


def test_a_van_connects_over_tls_with_its_certificate_and_is_that_van_only(
    secure_broker: SecureBroker,
) -> None:
    mqtt_b = secure_broker.login(VAN_B)["mqtt"]
    assert isinstance(mqtt_b, dict)

    async def attempt() -> None:
        async with (
            secure_broker.client(CONTROLLER) as controller,
            # A's certificate with B's username and password: the certificate decides.
            secure_broker.tls_client(VAN_A, password=str(mqtt_b["password"])) as van_a_as_b,
        ):
            await controller.subscribe(T.all_vans(VanTopic.STATE), qos=1)
            await van_a_as_b.publish(T.van(VAN_B, VanTopic.STATE), b"forged", qos=1)
            await van_a_as_b.publish(T.van(VAN_A, VanTopic.STATE), b"A over TLS", qos=1)
            got = await collect_until(controller, T.van(VAN_A, VanTopic.STATE))
        assert got == [(T.van(VAN_A, VanTopic.STATE), b"A over TLS")]

    run(attempt)


def test_a_client_without_a_certificate_cannot_connect_over_tls(
    secure_broker: SecureBroker,
) -> None:
    mqtt_a = secure_broker.login(VAN_A)["mqtt"]
    assert isinstance(mqtt_a, dict)
    ca = secure_broker.secrets / "ca" / "ca.crt"
    # the probe itself works: A's certificate is accepted
    assert mqtt_connect_over_tls(secure_broker.tls_port, ca, secure_broker.identity_dir(VAN_A)) == 0
    # no certificate, even with A's valid username and password: the TLS handshake is
    # refused before any MQTT is read (an alert, or the line closed, depending on timing)
    with pytest.raises((ssl.SSLError, ConnectionError)):
        mqtt_connect_over_tls(
            secure_broker.tls_port, ca, None, username=VAN_A, password=str(mqtt_a["password"])
        )


def test_a_certificate_from_another_ca_cannot_connect_over_tls(
    secure_broker: SecureBroker, tmp_path: Path
) -> None:
    now = datetime.now(UTC)
    rogue_ca = tls.make_ca("rogue", now, days=30)
    rogue = tls.issue_client_cert(rogue_ca, VAN_A, now, days=30)  # right name, wrong issuer
    rogue_dir = tmp_path / "rogue"
    rogue_dir.mkdir()
    (rogue_dir / "client.crt").write_bytes(rogue.cert_pem)
    (rogue_dir / "client.key").write_bytes(rogue.key_pem)
    with pytest.raises((ssl.SSLError, ConnectionError)):
        mqtt_connect_over_tls(
            secure_broker.tls_port, secure_broker.secrets / "ca" / "ca.crt", rogue_dir
        )


def test_an_expired_certificate_cannot_connect_over_tls(
    secure_broker: SecureBroker, tmp_path: Path
) -> None:
    ca_dir = secure_broker.secrets / "ca"
    ca = tls.CertificateAuthority(
        "Testville",
        x509.load_pem_x509_certificate((ca_dir / "ca.crt").read_bytes()),
        _ec_key((ca_dir / "ca.key").read_bytes()),
    )
    long_ago = datetime.now(UTC) - timedelta(days=60)
    expired = tls.issue_client_cert(ca, VAN_A, long_ago, days=30)
    old_dir = tmp_path / "expired"
    old_dir.mkdir()
    (old_dir / "client.crt").write_bytes(expired.cert_pem)
    (old_dir / "client.key").write_bytes(expired.key_pem)
    with pytest.raises((ssl.SSLError, ConnectionError)):
        mqtt_connect_over_tls(secure_broker.tls_port, ca_dir / "ca.crt", old_dir)


def test_a_van_refuses_a_broker_its_ca_did_not_sign(
    secure_broker: SecureBroker, tmp_path: Path
) -> None:
    other_ca = tls.make_ca("elsewhere", datetime.now(UTC), days=30)
    ca_file = tmp_path / "other-ca.crt"
    ca_file.write_bytes(other_ca.cert_pem)
    with pytest.raises(ssl.SSLCertVerificationError):
        mqtt_connect_over_tls(secure_broker.tls_port, ca_file, secure_broker.identity_dir(VAN_A))


def _ec_key(pem: bytes) -> ec.EllipticCurvePrivateKey:
    key = serialization.load_pem_private_key(pem, password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    return key


def test_a_van_cannot_take_over_another_vans_session_over_tls(
    secure_broker: SecureBroker,
) -> None:
    async def attempt() -> None:
        async with (
            secure_broker.client(CONTROLLER) as controller,
            secure_broker.tls_client(VAN_B) as van_b,
        ):
            await controller.subscribe(T.all_vans(VanTopic.STATE), qos=1)
            # A claims B's client id; the broker replaces it with A's own username
            async with secure_broker.tls_client(VAN_A, identifier=VAN_B) as van_a:
                await van_a.publish(T.van(VAN_A, VanTopic.STATE), b"A", qos=1)
                await van_b.publish(T.van(VAN_B, VanTopic.STATE), b"B still here", qos=1)
                got = await collect_until(controller, T.van(VAN_B, VanTopic.STATE))
        assert (T.van(VAN_B, VanTopic.STATE), b"B still here") in got

    run(attempt)
