"""Client ids on a Mosquitto started from `fleet broker credentials` (issue 15, item 6).

Client ids are one namespace across a broker's listeners: a client that connects with an id in
use throws its holder off and, with a persistent session, takes that session over — and the
orders queued in it, which the ACL then discards. Before the fix a van's password login could
claim any id on the password listener (`fleet-controller`, another van's id). Now a van's
password opens only the van listener, where the broker forces the client id to the van id;
the operators' listener (controller, dispatcher, console) takes no van's password, and keeps
free client ids for concurrent CLIs and the console's two connections.
"""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

import aiomqtt
import pytest

from fleet.console.live import Feed
from fleet.console.view import FleetView, ViewConfig
from fleet.control.client import ControllerClient
from fleet.control.config import ControllerConfig
from fleet.control.keys import MasterKey
from fleet.control.service import ControllerService
from fleet.model import load_van_spec
from fleet.mqtt import BrokerAddress
from fleet.protocol.clock import WallClock
from fleet.protocol.control_api import StatusBody, StatusResult
from fleet.protocol.topics import Topics, VanTopic
from fleet.store import SqliteStore
from tests.control.harness import VAN_FILE
from tests.control.service_support import day_book
from tests.security.conftest import SecureBroker
from tests.security.test_broker_acl import CONTROLLER, DISPATCHER, VAN_A, VAN_B, collect_until, run
from tests.support import plans
from tests.support.protocol_examples import MASTER_SECRET

pytestmark = pytest.mark.mosquitto

T = Topics()
CONSOLE = "fleet-console"


def test_a_vans_password_does_not_open_the_operators_listener_nor_theirs_the_vans(
    secure_broker: SecureBroker,
) -> None:
    async def attempt() -> None:
        for username, port in (
            (VAN_A, secure_broker.port),
            (CONTROLLER, secure_broker.van_port),
            (DISPATCHER, secure_broker.van_port),
        ):
            with pytest.raises(aiomqtt.MqttError, match=r"[Nn]ot authori[sz]ed"):
                async with secure_broker.client(username, identifier=CONTROLLER, port=port):
                    pass

    run(attempt)


@pytest.mark.parametrize("clean_session", [True, False], ids=["clean", "persistent"])
@pytest.mark.parametrize("claimed", [CONTROLLER, VAN_B])
def test_a_van_login_claiming_the_controllers_or_another_vans_client_id_throws_nobody_off(
    secure_broker: SecureBroker, claimed: str, clean_session: bool
) -> None:
    async def attempt() -> None:
        async with (
            secure_broker.client(CONTROLLER, identifier=CONTROLLER) as controller,
            secure_broker.client(VAN_B, identifier=VAN_B, clean_session=False) as van_b,
        ):
            await controller.subscribe(T.all_vans(VanTopic.STATE), qos=1)
            await van_b.subscribe(T.van(VAN_B, VanTopic.ORDER), qos=1)
            for _ in range(3):  # "repeatedly", as a reconnecting thief would
                async with secure_broker.client(
                    VAN_A, identifier=claimed, clean_session=clean_session
                ) as thief:
                    await thief.publish(T.van(VAN_A, VanTopic.STATE), b"A", qos=1)
            # both are still connected, subscribed, and hear each other
            await van_b.publish(T.van(VAN_B, VanTopic.STATE), b"B still here", qos=1)
            got = await collect_until(controller, T.van(VAN_B, VanTopic.STATE))
            assert got[-1] == (T.van(VAN_B, VanTopic.STATE), b"B still here")
            assert set(got[:-1]) <= {(T.van(VAN_A, VanTopic.STATE), b"A")}
            await controller.publish(T.van(VAN_B, VanTopic.ORDER), b"B's route", qos=1)
            assert await collect_until(van_b, T.van(VAN_B, VanTopic.ORDER)) == [
                (T.van(VAN_B, VanTopic.ORDER), b"B's route")
            ]

    run(attempt)


@pytest.mark.parametrize("clean_session", [True, False], ids=["clean", "persistent"])
def test_van_bs_queued_orders_survive_a_van_login_claiming_its_client_id(
    secure_broker: SecureBroker, clean_session: bool
) -> None:
    """Before: the thief's clean session wiped B's session, or its persistent one took it over
    and the ACL discarded the queued order; either way B never got it."""

    async def attempt() -> None:
        async with secure_broker.client(VAN_B, identifier=VAN_B, clean_session=False) as van_b:
            await van_b.subscribe(T.van(VAN_B, VanTopic.ORDER), qos=1)
        async with secure_broker.client(CONTROLLER, identifier=CONTROLLER) as controller:
            await controller.publish(T.van(VAN_B, VanTopic.ORDER), b"B's route", qos=1)
            async with secure_broker.client(
                VAN_A, identifier=VAN_B, clean_session=clean_session
            ) as thief:
                await thief.subscribe(T.van(VAN_A, VanTopic.ORDER), qos=1)
                await controller.publish(T.van(VAN_A, VanTopic.ORDER), b"marker", qos=1)
                assert await collect_until(thief, T.van(VAN_A, VanTopic.ORDER)) == [
                    (T.van(VAN_A, VanTopic.ORDER), b"marker")
                ]
        # B comes back to its own session, with its order still queued there
        async with secure_broker.client(VAN_B, identifier=VAN_B, clean_session=False) as van_b:
            assert await collect_until(van_b, T.van(VAN_B, VanTopic.ORDER)) == [
                (T.van(VAN_B, VanTopic.ORDER), b"B's route")
            ]

    run(attempt)


def test_the_controller_concurrent_dispatcher_clis_and_the_console_all_work_together(
    secure_broker: SecureBroker, tmp_path: Path
) -> None:
    """The real controller, two dispatcher clients and the console's feed (two connections
    on one login) at once on the operators' listener, while a van's login claims the
    controller's client id: every request is answered."""
    secrets = secure_broker.secrets

    async def attempt() -> None:
        controller_login = BrokerAddress.from_login(secrets / "controller" / "mqtt.toml")
        dispatcher_login = BrokerAddress.from_login(secrets / "dispatcher" / "mqtt.toml")
        console_login = BrokerAddress.from_login(secrets / "console" / "mqtt.toml")
        assert controller_login.port == dispatcher_login.port == console_login.port
        assert controller_login.port == secure_broker.port
        with SqliteStore(tmp_path / "fleet.db") as store:
            service = ControllerService(
                address=controller_login,
                store=store,
                config=ControllerConfig(name=CONTROLLER),
                van=load_van_spec(VAN_FILE),
                roster=plans.ROSTER,
                clock=WallClock(),
                master_key=MasterKey(MASTER_SECRET),
                planning=day_book(),
                topics=T,
            )
            serving = asyncio.create_task(service.run(), name="controller")
            feed = Feed(FleetView(ViewConfig()), console_login, topics=T, clock=WallClock())
            console = asyncio.create_task(feed.run(), name="console")
            try:
                await service.ready.wait()
                async with (
                    ControllerClient(dispatcher_login, timeout_s=5) as first,
                    ControllerClient(dispatcher_login, timeout_s=5) as second,
                ):
                    assert first.client_id != second.client_id
                    async with secure_broker.client(VAN_A, identifier=CONTROLLER):
                        pass
                    replies = await asyncio.gather(
                        first.request(StatusBody()), second.request(StatusBody())
                    )
                    assert all(isinstance(r, StatusResult) for r in replies)
                    await feed.connected.wait()  # its status and history were answered
                    assert feed.client is not None
                    assert isinstance(await feed.client.request(StatusBody()), StatusResult)
                    assert isinstance(await first.request(StatusBody()), StatusResult)
            finally:
                console.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await console
                service.stop()
                await serving

    run(attempt)
