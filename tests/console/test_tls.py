"""HTTPS as for the broker: a certificate from the broker's throwaway CA, trusted by clients
that trust that CA; session cookies are then Secure."""

from __future__ import annotations

import asyncio
import json
import ssl
import urllib.error
import urllib.request
from datetime import UTC, datetime
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fleet.cli.app import app as fleet_app
from fleet.console.auth import Role, User, Users, token_digest
from fleet.console.server import ConsoleServer, ConsoleSettings
from fleet.model.site import Site
from fleet.protocol import Topics
from fleet.protocol.clock import WallClock
from fleet.security.credentials import CredentialsOptions, build_credentials, write_credentials
from tests.security.conftest import site  # noqa: F401 - the fixture

TOKEN = "fct_tls"


def test_the_console_serves_https_with_a_certificate_from_the_brokers_ca(
    site: Site,  # noqa: F811
    tmp_path: Path,
) -> None:
    secrets = tmp_path / "secrets"
    options = CredentialsOptions(tls=True, days=30)
    write_credentials(build_credentials(site, secrets, options, now=datetime.now(UTC)), secrets)
    result = CliRunner().invoke(
        fleet_app,
        [
            "console",
            "cert",
            "--ca",
            str(secrets / "ca"),
            "--host",
            "127.0.0.1",
            "--out",
            str(secrets / "console"),
        ],
    )
    assert result.exit_code == 0, result.output
    cert, key = secrets / "console" / "console.crt", secrets / "console" / "console.key"
    assert oct(key.stat().st_mode & 0o777) == "0o600"
    trust = ssl.create_default_context(cafile=str(secrets / "ca" / "ca.crt"))

    async def play() -> None:
        server = ConsoleServer(
            ConsoleSettings(port=0, tls_cert=cert, tls_key=key),
            address=None,
            topics=Topics(),
            clock=WallClock(),
            site=site,
            map_json=b"{}",
            users=Users([User("dora", Role.DISPATCHER, token_digest(TOKEN))]),
        )
        async with server:
            assert server.url.startswith("https://127.0.0.1:")

            def login() -> tuple[int, str]:
                req = urllib.request.Request(
                    server.url + "/api/login",
                    data=json.dumps({"token": TOKEN}).encode(),
                    headers={"content-type": "application/json"},
                )
                with urllib.request.urlopen(req, context=trust, timeout=10) as r:
                    return r.status, r.headers["set-cookie"]

            status, cookie = await asyncio.to_thread(login)
            assert status == 200 and "Secure" in cookie and "HttpOnly" in cookie

            def untrusted() -> None:
                urllib.request.urlopen(server.url + "/healthz", timeout=10)

            with pytest.raises(urllib.error.URLError, match="CERTIFICATE_VERIFY_FAILED"):
                await asyncio.to_thread(untrusted)

    asyncio.run(asyncio.wait_for(play(), 30))
