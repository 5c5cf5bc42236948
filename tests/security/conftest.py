"""A site with a handful of vans, its generated credentials, and a Mosquitto that uses them."""

from __future__ import annotations

import os
import socket
import ssl
import struct
import subprocess
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import aiomqtt
import pytest

from fleet.model.site import Site
from fleet.security.credentials import (
    CredentialsOptions,
    build_credentials,
    write_credentials,
)
from tests.security.sites import make_site
from tests.support.brokers import (
    LOOPBACK,
    free_ports,
    mosquitto_binary,
    skip_or_fail,
    wait_for_port,
)


@pytest.fixture
def site(tmp_path: Path) -> Site:
    return make_site(tmp_path)


@dataclass
class SecureBroker:
    """A private Mosquitto started from the config `fleet broker credentials` wrote."""

    secrets: Path
    port: int  # operators: controller, dispatcher, console
    tls_port: int
    van_port: int  # vans with passwords

    def login(self, username: str) -> dict[str, object]:
        with (self.identity_dir(username) / "mqtt.toml").open("rb") as fh:
            return tomllib.load(fh)

    def identity_dir(self, username: str) -> Path:
        if username == "fleet-controller":
            return self.secrets / "controller"
        if username == "fleet-dispatcher":
            return self.secrets / "dispatcher"
        if username == "fleet-console":
            return self.secrets / "console"
        return self.secrets / "vans" / username

    def client(
        self,
        username: str | None,
        *,
        password: str | None = None,
        identifier: str | None = None,
        protocol: aiomqtt.ProtocolVersion = aiomqtt.ProtocolVersion.V311,
        port: int | None = None,
        clean_session: bool | None = None,
    ) -> aiomqtt.Client:
        """A password login on the listener its login file names (``username=None``:
        anonymous, on the operator listener), or on ``port``."""
        if username is not None and password is None:
            mqtt = self.login(username)["mqtt"]
            assert isinstance(mqtt, dict)
            password = str(mqtt["password"])
        if port is None:
            port = self.port if username is None else self.listener_of(username)
        return aiomqtt.Client(
            LOOPBACK,
            port,
            username=username,
            password=password,
            identifier=identifier,
            protocol=protocol,
            clean_session=clean_session,
            timeout=5,
        )

    def listener_of(self, username: str) -> int:
        """The password listener ``username``'s login file names."""
        mqtt = self.login(username)["mqtt"]
        assert isinstance(mqtt, dict)
        port = mqtt["port"]
        assert isinstance(port, int)
        return port

    def tls_client(
        self,
        username: str | None,
        *,
        ca_file: Path | None = None,
        cert_dir: Path | None = None,
        password: str | None = None,
        identifier: str | None = None,
    ) -> aiomqtt.Client:
        """A client on the TLS listener presenting ``username``'s certificate (or none)."""
        own = self.identity_dir(username) if username else None
        certs = cert_dir or own
        tls = aiomqtt.TLSParameters(
            ca_certs=str(ca_file or self.secrets / "ca" / "ca.crt"),
            certfile=str(certs / "client.crt") if certs else None,
            keyfile=str(certs / "client.key") if certs else None,
        )
        return aiomqtt.Client(
            "localhost",
            self.tls_port,
            username=None if password is None else username,
            password=password,
            identifier=identifier,
            tls_params=tls,
            timeout=5,
        )


def _utf8(text: str) -> bytes:
    data = text.encode("utf-8")
    return struct.pack("!H", len(data)) + data


def _remaining_length(n: int) -> bytes:
    out = bytearray()
    while True:
        n, digit = divmod(n, 128)
        out.append(digit | (0x80 if n else 0))
        if not n:
            return bytes(out)


def mqtt_connect_over_tls(
    port: int,
    ca_file: Path,
    cert_dir: Path | None,
    *,
    client_id: str = "probe",
    username: str | None = None,
    password: str | None = None,
) -> int:
    """One MQTT 3.1.1 CONNECT over TLS, by hand, with every socket closed on the way out.

    Returns the CONNACK return code (0 = accepted); a refused handshake raises
    :class:`ssl.SSLError` or :class:`OSError` (the broker's alert or its closing the line).
    Written by hand because a client library that fails mid-handshake may leave its socket
    for the garbage collector, which ``filterwarnings = error`` rightly turns into a failure.
    """
    context = ssl.create_default_context(cafile=str(ca_file))
    if cert_dir is not None:
        context.load_cert_chain(cert_dir / "client.crt", cert_dir / "client.key")
    flags = 0x02  # clean session
    payload = _utf8(client_id)
    if username is not None:
        flags |= 0x80
        payload += _utf8(username)
    if password is not None:
        flags |= 0x40
        payload += _utf8(password)
    variable = _utf8("MQTT") + bytes([4, flags]) + struct.pack("!H", 30)
    body = variable + payload
    packet = b"\x10" + _remaining_length(len(body)) + body
    with (
        socket.create_connection((LOOPBACK, port), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname="localhost") as tls_sock,
    ):
        tls_sock.sendall(packet)
        connack = b""
        while len(connack) < 4:
            chunk = tls_sock.recv(4 - len(connack))
            if not chunk:
                raise ConnectionResetError("the broker closed the connection before CONNACK")
            connack += chunk
    if connack[0] != 0x20:
        raise AssertionError(f"expected a CONNACK, got {connack!r}")
    return connack[3]


def broker_config_for_tests(conf: Path) -> None:
    """Started as root, Mosquitto drops to user 'mosquitto', which cannot read our 0600 files;
    production installs chown them instead (docs/security.md). Tests stay as the current user."""
    if os.geteuid() == 0 and "\nuser root\n" not in conf.read_text(encoding="utf-8"):
        with conf.open("a", encoding="utf-8") as fh:
            fh.write("user root\n")


@pytest.fixture
def secure_broker(site: Site, tmp_path: Path) -> Iterator[SecureBroker]:
    binary = mosquitto_binary()
    if binary is None:
        skip_or_fail("the mosquitto binary is not installed (apt-get install mosquitto)")
        raise AssertionError("unreachable")
    port, tls_port, van_port = free_ports(3)
    options = CredentialsOptions(
        tls=True,
        port=port,
        van_port=van_port,
        tls_port=tls_port,
        tls_listen=LOOPBACK,
        days=30,
    )
    out = tmp_path / "secrets"
    write_credentials(build_credentials(site, out, options, now=datetime.now(UTC)), out)
    conf = out / "broker" / "mosquitto.conf"
    broker_config_for_tests(conf)
    log_path = tmp_path / "mosquitto.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen([binary, "-c", str(conf)], stdout=log, stderr=subprocess.STDOUT)
    try:
        try:
            for listening in (port, tls_port, van_port):
                wait_for_port(LOOPBACK, listening)
        except RuntimeError as exc:
            raise RuntimeError(f"{exc}\n{log_path.read_text(errors='replace')}") from exc
        yield SecureBroker(out, port, tls_port, van_port)
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
