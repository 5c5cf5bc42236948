"""The console's broker identity: it reads every van, and commands none (real Mosquitto).

A refused publish is silent in MQTT 3.1.1, so each "cannot" ends with an allowed marker on
the same path (as in tests/security/test_broker_acl.py).
"""

from __future__ import annotations

import asyncio

import pytest

from fleet.protocol.topics import Topics, VanTopic
from fleet.security.acl import Identity, Role, grants
from fleet.security.credentials import CONSOLE_USERNAME
from tests.security.conftest import SecureBroker, secure_broker, site  # noqa: F401 - fixtures
from tests.security.test_broker_acl import collect_until, run

T = Topics()
VAN_A = "ST-T1-01"
CONTROLLER = "fleet-controller"


def test_the_console_grants_read_vans_and_write_only_the_request_topic() -> None:
    got = grants(Identity(CONSOLE_USERNAME, Role.CONSOLE))
    writes = [g.topic for g in got if "write" in g.access]
    assert writes == [T.controller_request]
    reads = {g.topic for g in got if g.access == "read"}
    for kind in (VanTopic.STATE, VanTopic.CONNECTION, VanTopic.FACTSHEET, VanTopic.ORDER):
        assert T.all_vans(kind) in reads
    assert T.all_vans(VanTopic.INSTANT) not in reads


@pytest.mark.mosquitto
def test_the_console_reads_states_and_orders_and_cannot_command_a_van(
    secure_broker: SecureBroker,  # noqa: F811
) -> None:
    async def attempt() -> None:
        async with (
            secure_broker.client(CONTROLLER) as controller,
            secure_broker.client(CONSOLE_USERNAME) as console,
            secure_broker.client(VAN_A) as van_a,
        ):
            await console.subscribe(T.all_vans(VanTopic.STATE), qos=1)
            await console.subscribe(T.all_vans(VanTopic.ORDER), qos=1)
            await van_a.subscribe(T.van(VAN_A, VanTopic.INSTANT), qos=1)
            await controller.subscribe(T.controller_request, qos=1)
            await asyncio.sleep(0.1)
            await controller.publish(T.van(VAN_A, VanTopic.ORDER), b"order", qos=1)
            await van_a.publish(T.van(VAN_A, VanTopic.STATE), b"state", qos=1)
            assert await collect_until(console, T.van(VAN_A, VanTopic.STATE)) == [
                (T.van(VAN_A, VanTopic.ORDER), b"order"),
                (T.van(VAN_A, VanTopic.STATE), b"state"),
            ]
            # straight to the van: refused; through the controller: carried
            await console.publish(T.van(VAN_A, VanTopic.INSTANT), b"estop", qos=1)
            await console.publish(T.controller_request, b"estop A", qos=1)
            assert await collect_until(controller, T.controller_request) == [
                (T.controller_request, b"estop A")
            ]
            await controller.publish(T.van(VAN_A, VanTopic.INSTANT), b"signed", qos=1)
            assert await collect_until(van_a, T.van(VAN_A, VanTopic.INSTANT)) == [
                (T.van(VAN_A, VanTopic.INSTANT), b"signed")
            ]

    run(attempt)
