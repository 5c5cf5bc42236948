"""An MQTT 3.1.1 broker inside the process (amqtt), for a machine with nothing installed.

::

    async with EmbeddedBroker(port=1883) as broker:
        print(broker.url)        # mqtt://127.0.0.1:1883
        await broker.wait_closed()

It speaks enough MQTT for the whole project (QoS 0/1, retained messages, last wills, ``+``/``#``
filters) but is pure Python: ``docs/broker.md`` gives its measured throughput and the fleet size
past which Mosquitto (``configs/mosquitto/``) is the broker to run. amqtt is used only here.
"""

from __future__ import annotations

import asyncio
import logging
from types import TracebackType
from typing import Any

from amqtt.broker import Broker

from fleet.errors import ControlError

log = logging.getLogger(__name__)
_ANONYMOUS_AUTH = "amqtt.plugins.authentication.AnonymousAuthPlugin"


class _Broker(Broker):  # type: ignore[misc]  # amqtt ships no type hints
    """amqtt with two fixes.

    1. Retained messages go only to a session's own subscriptions: amqtt 0.12, on every
       CONNECT, replays the retained messages matching *every* client's subscriptions to the
       new client (``Broker._client_connected``), so a van would receive the other vans'
       retained connection messages. Here a replay happens only for a filter the session
       itself holds (a SUBSCRIBE adds it before its replay, so that path is kept).
    2. Every accepted connection is closed when its handling ends, however it ends, and at
       shutdown: amqtt leaves some sockets open (its close path can raise before closing).
    """

    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__(config)
        self.open_writers: set[asyncio.StreamWriter] = set()

    async def stream_connected(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, listener_name: str
    ) -> None:
        self.open_writers.add(writer)
        try:
            await super().stream_connected(reader, writer, listener_name)
        finally:
            self.open_writers.discard(writer)
            writer.close()

    def close_connections(self) -> None:
        for writer in list(self.open_writers):
            writer.close()
        self.open_writers.clear()

    async def _publish_retained_messages_for_subscription(
        self, subscription: tuple[str, int], session: Any
    ) -> None:
        holders = self._subscriptions.get(subscription[0], [])
        if any(s.client_id == session.client_id for s, _ in holders):
            await super()._publish_retained_messages_for_subscription(subscription, session)


class EmbeddedBroker:
    """amqtt on ``host:port`` (port 0 picks a free one; read it back from :attr:`port`)."""

    def __init__(self, host: str = "127.0.0.1", port: int = 1883) -> None:
        self.host = host
        self._requested_port = port
        self._port: int | None = None
        self._broker: Any = None
        self._closed = asyncio.Event()

    @property
    def port(self) -> int:
        if self._port is None:
            raise ControlError("the embedded broker is not running")
        return self._port

    @property
    def url(self) -> str:
        return f"mqtt://{self.host}:{self.port}"

    async def start(self) -> None:
        config = {
            "listeners": {
                "default": {"type": "tcp", "bind": f"{self.host}:{self._requested_port}"}
            },
            # Anonymous clients only: the embedded broker is for a single trusted machine.
            # Authentication and per-van ACLs need Mosquitto (docs/broker.md).
            "plugins": {_ANONYMOUS_AUTH: {"allow_anonymous": True}},
        }
        broker = _Broker(config)
        try:
            await broker.start()
        except Exception as exc:  # amqtt raises its own and OSError subclasses
            raise ControlError(
                f"cannot start the embedded broker on {self.host}:{self._requested_port}: {exc}"
            ) from exc
        self._broker = broker
        self._port = self._bound_port(broker)
        self._closed.clear()
        log.info("embedded MQTT broker listening on %s", self.url)

    @staticmethod
    def _bound_port(broker: Any) -> int:
        server = broker._servers["default"].instance  # the asyncio.Server amqtt created
        port: int = server.sockets[0].getsockname()[1]
        return port

    async def stop(self) -> None:
        if self._broker is None:
            return
        broker, self._broker = self._broker, None
        try:
            await broker.shutdown()
        finally:
            broker.close_connections()
            await asyncio.sleep(0)  # let the transports finish closing on this loop
            self._port = None
            self._closed.set()
            log.info("embedded MQTT broker stopped")

    async def wait_closed(self) -> None:
        """Wait until :meth:`stop` is called (from another task)."""
        await self._closed.wait()

    async def __aenter__(self) -> EmbeddedBroker:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()
