"""The console's link to the fleet: what it reads from the broker, and the live stream out.

:class:`Feed` logs in to the broker (the ``console`` identity of ``fleet broker credentials``:
it may read every van's ``state``, ``connection``, ``factsheet`` and ``order`` and talk to the
controller like the CLI, and may write to no van) and feeds a :class:`FleetView`. The
controller's event log is read the way ``fleet events --follow`` does — subscribe first, then
the history, then the live events — so nothing falls between the two. Actions go to the
controller as control API requests through :class:`fleet.control.client.ControllerClient`,
the CLI's own client, so they pass the same checks.

When the broker goes away the feed reconnects with backoff (0.5 s doubling to 10 s), reads
the events it missed, and carries on; meanwhile the vans' states age and are shown stale.

:class:`Broadcaster` turns the view's changes into one message every ``push_interval_s`` and
hands the same bytes to every connected stream client; a client that falls more than
``CLIENT_QUEUE`` messages behind is cut off (its browser reconnects and gets a fresh snapshot).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import uuid
from collections.abc import Callable

from fleet.console.view import FleetView
from fleet.control.client import ControllerClient
from fleet.errors import ControlError
from fleet.mqtt import BrokerAddress, BrokerError, MqttLink
from fleet.protocol import (
    Connection,
    ConnectionState,
    ControllerConnection,
    DecodeError,
    Factsheet,
    Order,
    State,
    Topics,
    VanTopic,
    decode,
)
from fleet.protocol.clock import Clock
from fleet.protocol.control_api import (
    MAX_ORDERS_ASKED,
    Event,
    EventsBody,
    EventsResult,
    OrdersBody,
    OrdersResult,
    StatusBody,
    StatusResult,
)

log = logging.getLogger(__name__)

BACKOFF_FIRST_S = 0.5
BACKOFF_MAX_S = 10.0
HISTORY_PAGE = 10_000
CLIENT_QUEUE = 64
HEARTBEAT_S = 5.0  # a ping at least this often: the page tells a dead stream from a quiet one


class Feed:
    def __init__(
        self,
        view: FleetView,
        address: BrokerAddress,
        *,
        topics: Topics,
        clock: Clock,
        request_timeout_s: float = 15.0,
        on_change: Callable[[], None] | None = None,
    ) -> None:
        self.view = view
        self.address = address
        self.topics = topics
        self.clock = clock
        self.request_timeout_s = request_timeout_s
        self.client: ControllerClient | None = None
        self.connected = asyncio.Event()
        self.received = 0
        self.bad = 0
        self._on_change = on_change

    async def run(self) -> None:
        """Forever: connect, read, and on a lost broker reconnect with backoff."""
        backoff = BACKOFF_FIRST_S
        while True:
            try:
                await self._session()
            except (BrokerError, ControlError) as exc:
                log.warning("console feed: %s; reconnecting in %.1f s", exc, backoff)
            self.connected.clear()
            self.client = None
            await asyncio.sleep(backoff)
            backoff = min(BACKOFF_MAX_S, backoff * 2)

    async def _session(self) -> None:
        link = MqttLink(
            self.address, client_id=f"console-{uuid.uuid4().hex[:12]}", max_pending=1_000_000
        )
        async with link, contextlib.AsyncExitStack() as stack:
            for kind in (VanTopic.STATE, VanTopic.CONNECTION, VanTopic.FACTSHEET, VanTopic.ORDER):
                await link.subscribe(self.topics.all_vans(kind), qos=1)
            await link.subscribe(self.topics.controller_events, qos=1)
            await link.subscribe(self.topics.controller_connection, qos=1)
            client = ControllerClient(
                self.address,
                topics=self.topics,
                timeout_s=self.request_timeout_s,
                clock=self.clock,
            )
            await stack.enter_async_context(client)
            self.client = client
            held: list[Event] = []
            history = asyncio.create_task(self._history(client, held), name="console-history")
            try:
                while True:
                    batch = await link.receive()
                    now_s = self.clock.time()
                    for topic, payload in batch:
                        self._handle(topic, payload, now_s, held if not history.done() else None)
                    if history.done() and history.exception() is None and held:
                        for event in held:
                            self.view.on_event(event, now_s)
                        held.clear()
                    if self._on_change is not None:
                        self._on_change()
            finally:
                history.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await history

    async def _history(self, client: ControllerClient, held: list[Event]) -> None:
        """The events recorded before we subscribed (and the roster), once the controller
        answers; retried while it does not."""
        delay = BACKOFF_FIRST_S
        while True:
            try:
                status = await client.request(StatusBody())
                after = self.view.last_event_id
                while True:
                    result = await client.request(EventsBody(after_id=after, limit=HISTORY_PAGE))
                    assert isinstance(result, EventsResult)
                    now_s = self.clock.time()
                    for event in result.events:
                        self.view.on_event(event, now_s)
                    if len(result.events) < HISTORY_PAGE:
                        break
                    after = result.events[-1].event_id
                now_s = self.clock.time()
                for event in held:
                    self.view.on_event(event, now_s)
                held.clear()
                if isinstance(status, StatusResult):
                    for van in status.vans:
                        self.view.van(van.van_id).in_service = van.in_service
                    await self._routes(client, [v.van_id for v in status.vans if v.order_id])
                self.connected.set()
                log.info("console: %d event(s) of history read", self.view.last_event_id)
                return
            except (ControlError, BrokerError) as exc:
                log.info("console: controller not answering yet (%s)", exc)
                await asyncio.sleep(delay)
                delay = min(BACKOFF_MAX_S, delay * 2)

    async def _routes(self, client: ControllerClient, van_ids: list[str]) -> None:
        """Each van's latest order from the controller (orders are not retained by the broker):
        its route and parcels are drawn now, not from its next update."""
        for i in range(0, len(van_ids), MAX_ORDERS_ASKED):
            asked = tuple(van_ids[i : i + MAX_ORDERS_ASKED])
            result = await client.request(OrdersBody(van_ids=asked))
            if isinstance(result, OrdersResult):
                now_s = self.clock.time()
                for order in result.orders:
                    self.view.on_order(order, now_s)

    def _handle(self, topic: str, payload: bytes, now_s: float, held: list[Event] | None) -> None:
        self.received += 1
        view = self.view
        try:
            if topic == self.topics.controller_events:
                event = decode(Event, payload, topic=topic)
                if held is not None:
                    held.append(event)
                else:
                    view.on_event(event, now_s)
                return
            if topic == self.topics.controller_connection:
                if payload:
                    view.on_controller(
                        decode(ControllerConnection, payload, topic=topic).connection_state
                    )
                return
            van_id, kind = self.topics.parse_van(topic)
            if kind is VanTopic.STATE:
                state = decode(State, payload, topic=topic)
                if state.van_id == van_id:
                    view.on_state(state, now_s)
            elif kind is VanTopic.CONNECTION:
                if payload:
                    conn = decode(Connection, payload, topic=topic)
                    if conn.van_id == van_id:
                        view.on_connection(van_id, conn.connection_state, now_s)
            elif kind is VanTopic.FACTSHEET:
                if payload:
                    sheet = decode(Factsheet, payload, topic=topic)
                    if sheet.van_id == van_id:
                        view.on_factsheet(van_id, sheet.battery_kwh)
            elif kind is VanTopic.ORDER:
                order = decode(Order, payload, topic=topic)
                if order.van_id == van_id:
                    view.on_order(order, now_s)
        except (DecodeError, ValueError) as exc:
            self.bad += 1
            log.debug("console: ignoring a message on %s: %s", topic, exc)


class Broadcaster:
    """Live stream clients and the messages they get."""

    def __init__(self, view: FleetView, clock: Clock, *, push_interval_s: float = 0.25) -> None:
        self.view = view
        self.clock = clock
        self.push_interval_s = push_interval_s
        self.clients: set[asyncio.Queue[bytes | None]] = set()
        self.sent = 0
        self._lateness_every = max(1, round(5.0 / push_interval_s))

    def connect(self) -> tuple[asyncio.Queue[bytes | None], bytes]:
        """A new client's queue and its first message (the whole picture)."""
        queue: asyncio.Queue[bytes | None] = asyncio.Queue(maxsize=CLIENT_QUEUE)
        self.clients.add(queue)
        return queue, sse(self.view.snapshot(self.clock.time()))

    def disconnect(self, queue: asyncio.Queue[bytes | None]) -> None:
        self.clients.discard(queue)

    def push_once(self) -> None:
        now_s = self.clock.time()
        self.view.tick(now_s)
        delta = self.view.take_delta(now_s)
        if delta is None:
            return
        data = sse(delta)
        for queue in list(self.clients):
            try:
                queue.put_nowait(data)
            except asyncio.QueueFull:
                self.clients.discard(queue)
                with contextlib.suppress(asyncio.QueueEmpty):
                    queue.get_nowait()
                queue.put_nowait(None)  # tells the client's stream to end
        self.sent += 1

    async def run(self) -> None:
        n = 0
        while True:
            await asyncio.sleep(self.push_interval_s)
            n += 1
            if n % self._lateness_every == 0:
                self.view.refresh_lateness(self.clock.time())
            self.push_once()


def sse(message: dict[str, object]) -> bytes:
    """One server-sent event: ``data: <json>`` and a blank line."""
    return b"data: " + json.dumps(message, separators=(",", ":")).encode() + b"\n\n"


__all__ = ["Broadcaster", "ConnectionState", "Feed", "sse"]
