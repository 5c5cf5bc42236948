"""The dispatcher's end of the controller's topics: one request, one reply; the event stream.

::

    async with ControllerClient(BrokerAddress.parse("mqtt://127.0.0.1:1883")) as client:
        result = await client.request(StatusBody())
        async for event in client.events():
            ...
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncIterator
from types import TracebackType

from fleet.errors import ControlError
from fleet.mqtt import BrokerAddress, BrokerError, MqttLink, SubscriptionRefused
from fleet.protocol import (
    ConnectionState,
    ControllerConnection,
    DecodeError,
    Topics,
    decode,
    encode,
    make_header,
)
from fleet.protocol.clock import Clock, WallClock
from fleet.protocol.control_api import Event, Reply, ReplyResult, Request, RequestBody

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT_S = 30.0
STATUS_GRACE_S = 0.5  # how long to wait for the controller's retained connection message


class ControllerClient:
    def __init__(
        self,
        address: BrokerAddress,
        *,
        topics: Topics | None = None,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        clock: Clock | None = None,
    ) -> None:
        self.address = address
        self.topics = topics or Topics()
        self.timeout_s = timeout_s
        self.clock = clock or WallClock()
        self.client_id = f"cli-{uuid.uuid4().hex[:16]}"
        self._link = MqttLink(address, client_id=self.client_id, max_pending=100_000)
        self._pending: dict[str, asyncio.Future[Reply]] = {}
        self._events: asyncio.Queue[Event] | None = None
        self._controller: ConnectionState | None = None
        self._controller_heard = asyncio.Event()
        self._reader: asyncio.Task[None] | None = None
        self._seq = 0

    async def __aenter__(self) -> ControllerClient:
        await self._link.__aenter__()
        try:
            await self._link.subscribe(self.topics.controller_reply(self.client_id), qos=1)
            await self._link.subscribe(self.topics.controller_connection, qos=1)
        except SubscriptionRefused as exc:
            await self._link.__aexit__(None, None, None)
            raise ControlError(
                f"{exc}; a dispatcher command needs a dispatcher's login (`fleet broker "
                "credentials` makes one per dispatcher), not a van's or the console's"
            ) from None
        except BrokerError:
            await self._link.__aexit__(None, None, None)
            raise
        self._reader = asyncio.create_task(self._read(), name="controller-client-reader")
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, BrokerError):
                await self._reader
        await self._link.__aexit__(exc_type, exc, tb)

    async def _read(self) -> None:
        reply_topic = self.topics.controller_reply(self.client_id)
        while True:
            try:
                batch = await self._link.receive()
            except BrokerError as exc:
                for future in self._pending.values():
                    if not future.done():
                        future.set_exception(exc)
                raise
            for topic, payload in batch:
                try:
                    if topic == reply_topic:
                        reply = decode(Reply, payload, topic=topic)
                        waiting = self._pending.get(reply.request_id)
                        if waiting is not None and not waiting.done():
                            waiting.set_result(reply)
                    elif topic == self.topics.controller_connection and payload:
                        message = decode(ControllerConnection, payload, topic=topic)
                        self._controller = message.connection_state
                        self._controller_heard.set()
                    elif topic == self.topics.controller_events and self._events is not None:
                        self._events.put_nowait(decode(Event, payload, topic=topic))
                except DecodeError as exc:
                    log.warning("ignoring a message the controller should not send: %s", exc)

    async def _check_controller(self) -> None:
        # asyncio.timeout, not asyncio.wait_for: on Python 3.11 wait_for swallows a
        # cancellation that arrives together with the result (see request())
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(STATUS_GRACE_S):
                await self._controller_heard.wait()
        if self._controller is None:
            login = ""
            if self.address.username:
                # Mosquitto grants a subscription its ACL forbids and then sends nothing: a
                # van's login looks exactly like a broker no controller ever ran on
                login = (
                    f"; or user {self.address.username!r} may not read the controller's topics "
                    "(a dispatcher command needs a dispatcher's login from `fleet broker "
                    "credentials`, not a van's)"
                )
            raise ControlError(
                f"no controller has ever run on {self.address} (start one with "
                f"`fleet controller run`){login}"
            )
        if self._controller is not ConnectionState.ONLINE:
            raise ControlError(
                f"the controller on {self.address} is {self._controller.value} "
                "(start it with `fleet controller run`)"
            )

    async def request(self, body: RequestBody, *, timeout_s: float | None = None) -> ReplyResult:
        """Send one request; the controller's error becomes a :class:`ControlError`."""
        await self._check_controller()
        self._seq += 1
        request_id = f"{self.client_id}.{self._seq}"
        request = Request(
            header=make_header(self.client_id, self._seq, self.clock.time()),
            request_id=request_id,
            client_id=self.client_id,
            body=body,
        )
        future: asyncio.Future[Reply] = asyncio.get_running_loop().create_future()
        self._pending[request_id] = future
        await self._link.publish(self.topics.controller_request, encode(request), qos=1)
        limit_s = self.timeout_s if timeout_s is None else timeout_s
        try:
            # Not asyncio.wait_for: on Python 3.11 it returns the reply when the reply and a
            # cancellation (Ctrl-C) arrive in one turn of the loop, and the cancellation is
            # lost — `fleet status --watch` then refreshed on until the 3 s backstop.
            async with asyncio.timeout(limit_s):
                reply = await future
        except TimeoutError as exc:
            raise ControlError(
                f"no reply from the controller on {self.address} within {limit_s:g} s"
            ) from exc
        finally:
            self._pending.pop(request_id, None)
        if not reply.ok:
            raise ControlError(reply.error)
        if reply.result is None:
            raise ControlError("the controller replied without a result")
        return reply.result

    async def subscribe_events(self) -> None:
        """Start collecting the event stream (before fetching history, so nothing falls
        between the two)."""
        if self._events is None:
            self._events = asyncio.Queue()
            await self._link.subscribe(self.topics.controller_events, qos=1)

    async def events(self) -> AsyncIterator[Event]:
        """Every event the controller records from the subscription on, as it happens."""
        await self.subscribe_events()
        assert self._events is not None
        while True:
            yield await self._events.get()
