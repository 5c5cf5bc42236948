"""The shipped production Mosquitto config and ACL template start a real broker and hold:
a van writes only its own topics, the controller reads every van, nobody gets in anonymously,
and a van's login can claim no client id but its own."""

from __future__ import annotations

import asyncio
import os
import re
from collections.abc import Callable
from pathlib import Path

import aiomqtt
import pytest

from fleet.security.passwords import password_file_line
from tests.support.brokers import MosquittoProcess, free_port

CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "mosquitto"
OPERATORS = {"fleet-controller": "c-secret"}
VANS = {"VAN-A": "a-secret", "VAN-B": "b-secret"}
LOGINS = OPERATORS | VANS


def _production_config(tmp: Path, van_port: int) -> str:
    """configs/mosquitto/mosquitto.conf with paths into ``tmp`` and no TLS listener (the TLS
    side is proven with generated certificates in tests/security)."""
    text = (CONFIGS / "mosquitto.conf").read_text()
    text = re.sub(r"\nlistener 8883\n(?:[a-z_]+ .*\n)+", "\n", text)
    text = text.replace("listener 1883 127.0.0.1", "listener {port} 127.0.0.1")
    text = text.replace("listener 1884 127.0.0.1", f"listener {van_port} 127.0.0.1")
    text = text.replace("/var/lib/mosquitto/", f"{tmp}/")
    text = text.replace("/etc/mosquitto/fleet/", f"{tmp}/")
    settings = [line for line in text.splitlines() if line and not line.startswith("#")]
    assert not any("/etc/" in line or "8883" in line for line in settings), settings
    template = (CONFIGS / "acl.template").read_text()
    head, van_block, rest = re.split(r"\n(?=# -- )", template, maxsplit=2)
    van_block = van_block.split("\n", 1)[1]
    acl = head + "\n" + "".join(van_block.replace("VAN_ID", v) for v in ("VAN-A", "VAN-B")) + rest
    (tmp / "acl").write_text(acl)
    for name, logins in (("passwd", VANS), ("passwd-operators", OPERATORS)):
        lines = "".join(password_file_line(u, p) + "\n" for u, p in logins.items())
        (tmp / name).write_text(lines)
        (tmp / name).chmod(0o600)
    (tmp / "acl").chmod(0o600)
    if os.geteuid() == 0:  # as root Mosquitto drops to 'mosquitto', which cannot read our
        text = "user root\n" + text  # 0600 files; production installs chown them instead
    return text


@pytest.mark.mosquitto
def test_the_production_config_enforces_the_acl_template(
    mosquitto_factory: Callable[..., MosquittoProcess], tmp_path: Path
) -> None:
    van_port = free_port()
    broker = mosquitto_factory(full_config=_production_config(tmp_path, van_port))

    def client(
        user: str | None, identifier: str | None = None, port: int | None = None
    ) -> aiomqtt.Client:
        return aiomqtt.Client(
            broker.host,
            port or (van_port if user in VANS else broker.port),
            username=user,
            password=LOGINS.get(user or ""),
            identifier=identifier,
        )

    async def run() -> list[str]:
        async with asyncio.timeout(20):
            async with (
                client("fleet-controller", "fleet-controller") as controller,
                client("VAN-A") as van_a,
            ):
                # a van claiming the controller's client id gets its own instead
                async with client("VAN-B", "fleet-controller"):
                    pass
                await controller.subscribe("fleet/v1/vans/+/state", qos=1)
                await van_a.subscribe("fleet/v1/vans/VAN-B/order", qos=1)  # not its own
                await van_a.publish("fleet/v1/vans/VAN-B/state", b"forged", qos=1)  # dropped
                await controller.publish("fleet/v1/vans/VAN-B/order", b"for B", qos=1)
                await van_a.publish("fleet/v1/vans/VAN-A/state", b"mine", qos=1)
                got = [bytes((await anext(aiter(controller.messages))).payload)]  # type: ignore[arg-type]
                with pytest.raises(TimeoutError):
                    async with asyncio.timeout(0.5):  # VAN-A must not read VAN-B's order
                        await anext(aiter(van_a.messages))
            with pytest.raises(aiomqtt.MqttError):
                async with client(None):
                    pass
            with pytest.raises(aiomqtt.MqttError):  # a van's password: not on this listener
                async with client("VAN-A", port=broker.port):
                    pass
            return [g.decode() for g in got]

    assert asyncio.run(run()) == ["mine"]
