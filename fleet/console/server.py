"""Running the console: the feed from the broker, the live stream, and uvicorn, on one loop.

::

    async with ConsoleServer(settings, address=..., topics=..., clock=..., site=..., ...) as c:
        print(c.url)
        await stop.wait()

The same class serves ``fleet console`` (its own process, wall clock) and ``fleet demo
--console`` (inside the simulated day, on the simulation's clock).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

import uvicorn

from fleet.console.app import ConsoleContext, build_app
from fleet.console.auth import Sessions, Users
from fleet.console.gate import Limits
from fleet.console.live import Broadcaster, Feed
from fleet.console.view import FleetView, ViewConfig
from fleet.errors import ConfigError
from fleet.model.site import Site
from fleet.mqtt import BrokerAddress
from fleet.protocol import Topics
from fleet.protocol.clock import Clock

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ConsoleSettings:
    host: str = "127.0.0.1"
    port: int = 8080  # 0: any free port (tests)
    tls_cert: Path | None = None
    tls_key: Path | None = None
    push_interval_s: float = 0.25  # wall seconds between stream messages
    request_timeout_s: float = 15.0  # waiting for the controller's reply to an action
    view: ViewConfig = field(default_factory=ViewConfig)
    limits: Limits = field(default_factory=Limits)

    def __post_init__(self) -> None:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ConfigError("TLS needs both --tls-cert and --tls-key")
        if not 0.05 <= self.push_interval_s <= 10:
            raise ConfigError(f"push interval {self.push_interval_s} s: expected 0.05 to 10 s")


class _Uvicorn(uvicorn.Server):
    """uvicorn without its own signal handling: whoever runs the console owns the signals."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class ConsoleServer:
    def __init__(
        self,
        settings: ConsoleSettings,
        *,
        address: BrokerAddress | None,
        topics: Topics,
        clock: Clock,
        site: Site,
        map_json: bytes,
        users: Users,
        roster: tuple[str, ...] = (),
    ) -> None:
        self.settings = settings
        self.clock = clock
        self.view = FleetView(settings.view, roster)
        self.feed = (
            Feed(
                self.view,
                address,
                topics=topics,
                clock=clock,
                request_timeout_s=settings.request_timeout_s,
            )
            if address is not None
            else None
        )
        self.broadcaster = Broadcaster(self.view, clock, push_interval_s=settings.push_interval_s)
        self.sessions = Sessions()
        tls = settings.tls_cert is not None
        self.ctx = ConsoleContext(
            view=self.view,
            feed=self.feed,
            broadcaster=self.broadcaster,
            users=users,
            sessions=self.sessions,
            clock=clock,
            site=site,
            map_json=map_json,
            secure_cookies=tls,
        )
        self.app = build_app(self.ctx, settings.limits)
        config = uvicorn.Config(
            self.app,
            host=settings.host,
            port=settings.port,
            lifespan="off",
            access_log=False,
            log_level="warning",
            http="httptools",
            ws="none",
            loop="none",
            ssl_certfile=str(settings.tls_cert) if settings.tls_cert else None,
            ssl_keyfile=str(settings.tls_key) if settings.tls_key else None,
            ssl_version=ssl.PROTOCOL_TLS_SERVER,
            timeout_graceful_shutdown=2,
        )
        self._server = _Uvicorn(config)
        self._tasks: list[asyncio.Task[None]] = []
        self.url = ""

    async def __aenter__(self) -> ConsoleServer:
        if self.feed is not None:
            self._tasks.append(asyncio.create_task(self.feed.run(), name="console-feed"))
        self._tasks.append(asyncio.create_task(self.broadcaster.run(), name="console-stream"))
        serve = asyncio.create_task(self._server.serve(), name="console-http")
        self._tasks.append(serve)
        while not self._server.started:
            if serve.done():
                await serve  # raises what stopped it (a port in use, a bad certificate)
                raise ConfigError(
                    f"the console could not listen on {self.settings.host}:{self.settings.port}"
                )
            await asyncio.sleep(0.02)
        sock = self._server.servers[0].sockets[0]
        host, port = sock.getsockname()[:2]
        scheme = "https" if self.settings.tls_cert else "http"
        shown = f"[{host}]" if ":" in host else host
        self.url = f"{scheme}://{shown}:{port}"
        log.info("console at %s", self.url)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._server.should_exit = True
        for queue in list(self.broadcaster.clients):  # end every open stream
            with contextlib.suppress(asyncio.QueueFull):
                queue.put_nowait(None)
        for task in self._tasks[:-1]:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(task, 5.0)
        self._tasks.clear()
