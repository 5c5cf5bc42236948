"""Issue 15 against a Mosquitto started from `fleet broker credentials`: a van's login used as
a dispatcher's is named as such, and the printed broker command works as printed as root."""

from __future__ import annotations

import asyncio
import os
import time

import pytest

from fleet.control.client import ControllerClient
from fleet.errors import ControlError
from fleet.mqtt import BrokerAddress
from fleet.protocol import ConnectionState, ControllerConnection, Topics, encode, make_header
from fleet.protocol.control_api import StatusBody
from tests.security.conftest import SecureBroker


def test_a_vans_login_used_as_a_dispatchers_says_so(secure_broker: SecureBroker) -> None:
    """Before: only "no controller has ever run", with a controller running (Mosquitto grants
    the van's subscription to the controller's topics and then sends it nothing)."""
    address = BrokerAddress.from_login(secure_broker.identity_dir("ST-T1-01") / "mqtt.toml")

    online = ControllerConnection(
        header=make_header("fleet-controller", 1, time.time()),
        connection_state=ConnectionState.ONLINE,
    )

    async def run() -> None:
        async with secure_broker.client("fleet-controller") as controller:
            topic = Topics().controller_connection
            await controller.publish(topic, encode(online), qos=1, retain=True)
        async with ControllerClient(address, timeout_s=3) as client:
            await client.request(StatusBody())

    with pytest.raises(
        ControlError,
        match=r"user 'ST-T1-01' may not read the controller's topics .*dispatcher's login",
    ):
        asyncio.run(run())


def test_the_broker_config_made_as_root_runs_as_root(secure_broker: SecureBroker) -> None:
    """The printed `mosquitto -c` works as printed: the fixture starts it exactly so."""
    conf = (secure_broker.secrets / "broker" / "mosquitto.conf").read_text()
    assert ("\nuser root\n" in conf) is (os.geteuid() == 0)
