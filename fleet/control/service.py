"""The controller service: the core, wired to the broker, the store and a clock.

One asyncio task receives messages in batches and feeds them to the core; another ticks the
core's clock; dispatcher requests and re-plans run as their own tasks, with the slow parts
(reading and verifying a plan, planning) in worker threads so that van traffic never waits.
After each batch the core's decisions are applied in a fixed order: **write** the changes in
one transaction, **then** sign and publish the commands (emergency stops first), then
publish the recorded events. A crash between the two steps loses nothing: unconfirmed orders
are re-sent on restart, and the van ignores an update it already has.

If the broker goes away the service reconnects with backoff and re-sends everything
unconfirmed; the store is never touched by the link's state.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import time
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from datetime import date
from typing import Protocol

from fleet.control.config import ControllerConfig
from fleet.control.core import CheckedPlan, ControllerCore, Output, ReplanRequest
from fleet.control.decisions import send_order, settle_replan
from fleet.control.intake import decode_request, who_asked
from fleet.control.keys import MasterKey, Signer
from fleet.control.limits import RateLimiter
from fleet.errors import ControlError, FleetError
from fleet.model import Parcel, VanSpec
from fleet.mqtt import BrokerAddress, BrokerError, MqttLink, Will
from fleet.protocol import (
    Connection,
    ConnectionState,
    ControllerConnection,
    DecodeError,
    Factsheet,
    Order,
    ProtocolError,
    State,
    Topics,
    VanTopic,
    decode,
    encode,
    format_timestamp,
    make_header,
)
from fleet.protocol.clock import Clock
from fleet.protocol.control_api import (
    AcknowledgeBody,
    AddParcelsBody,
    CancelParcelsBody,
    CancelVansBody,
    CommandResult,
    DispatchBody,
    Event,
    EventsBody,
    EventsResult,
    InstantBody,
    OrdersBody,
    OrdersResult,
    ReplanBody,
    Reply,
    ReplyResult,
    Request,
    StatusBody,
)
from fleet.store import Changes, EventRecord, Store

log = logging.getLogger(__name__)

RECONNECT_FIRST_S = 0.5
RECONNECT_MAX_S = 10.0
MAX_BATCH = 2000
REMEMBERED_REQUESTS = 1000


# Once start-up is frozen the cyclic collector runs on the controller's own schedule (a full
# collection from the tick loop) instead of after every 700 allocations.
GC_EVERY_S = 60.0
GC_AFTER_ALLOCATIONS = 200_000  # sooner if this many objects were made since the last one


def settle_heap() -> None:
    """Call once start-up is done, just before serving: hand garbage collection to the service.

    What start-up made (modules, the road network, the restored fleet) lives as long as the
    process: frozen, out of the collector's reach, so a collection walks only what came since
    (measured: ~100 ms -> ~19 ms per full collection with 3,000 vans' states). The controller
    makes little cyclic garbage (paho's per-message callback lookup: 6 objects a message, so
    at 1,000 states/s ``GC_AFTER_ALLOCATIONS`` is reached every ~33 s), yet the automatic
    collector kept walking every van's latest state: under 1,000 states/s it paused the event loop
    1-10 ms several times a second, the longest waits an order's round trip met. With
    automatic collection off, :class:`ControllerService` collects every ``GC_EVERY_S``, or
    sooner after ``GC_AFTER_ALLOCATIONS`` (``docs/controller.md``, "Load").
    """
    gc.collect()
    gc.freeze()
    gc.disable()


class Planning(Protocol):
    """What the controller needs from the planner, bound to one site, van and road network."""

    def load_dispatch(self, body: DispatchBody) -> CheckedPlan:
        """Read the plan and its orders file from a dispatch request and verify it."""
        ...

    def parse_parcels(self, body: AddParcelsBody, day: date) -> list[Parcel]:
        """Urgent parcels from an orders file; a bad row is an error naming it."""
        ...

    def replan(self, request: ReplanRequest) -> CheckedPlan:
        """A new plan from the fleet as it is, verified."""
        ...


class _Stop(Exception):
    """Raised inside the task group to leave it when the service is asked to stop."""


class ControllerService:
    def __init__(
        self,
        *,
        address: BrokerAddress,
        store: Store,
        config: ControllerConfig,
        van: VanSpec,
        roster: Mapping[str, tuple[float, float]],
        clock: Clock,
        master_key: MasterKey,
        planning: Planning,
        topics: Topics | None = None,
    ) -> None:
        self.address = address
        self.store = store
        self.config = config
        self.clock = clock
        self.topics = topics or Topics()
        self.planning = planning
        self.signer = Signer(config.name, master_key, store.reserve_message_ids)
        self.limiter = RateLimiter(config.max_messages_per_van_per_s, config.burst_messages_per_van)
        self.core = ControllerCore(
            config=config, van=van, roster=roster, snapshot=store.load(), now_s=clock.time()
        )
        self._link: MqttLink | None = None
        self._stop = asyncio.Event()
        self._ready = asyncio.Event()
        self._background: set[asyncio.Task[None]] = set()
        self._replies: OrderedDict[str, Reply] = OrderedDict()
        self._message_seq = 0
        self._send_lock = asyncio.Lock()  # keeps batches of commands in decision order
        self._store_lock = asyncio.Lock()  # one write at a time, in decision order
        self._decided = asyncio.Event()  # van messages led to decisions not yet flushed
        self._van_root = f"{self.topics.root}/vans/"
        self._next_gc = time.monotonic() + GC_EVERY_S

    # ------------------------------------------------------------------ lifetime
    @property
    def ready(self) -> asyncio.Event:
        """Set while connected and subscribed."""
        return self._ready

    def stop(self) -> None:
        self._stop.set()

    async def run(self) -> None:
        """Serve until :meth:`stop`; reconnect to the broker whenever it goes away."""
        delay_s = RECONNECT_FIRST_S
        try:
            while not self._stop.is_set():
                try:
                    await self._serve()
                    return
                except BrokerError as exc:
                    self._ready.clear()
                    self._link = None
                    log.warning("broker link: %s; reconnecting in %.1f s", exc, delay_s)
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._stop.wait(), self.clock.to_wall_s(delay_s))
                    delay_s = min(RECONNECT_MAX_S, delay_s * 2)
        finally:
            for task in list(self._background):
                task.cancel()
            await asyncio.gather(*self._background, return_exceptions=True)
            # What is decided is written even if it could not be sent: it goes out next time.
            self._commit(self.core.drain())

    def _connection_payload(self, state: ConnectionState) -> bytes:
        self._message_seq += 1
        message = ControllerConnection(
            header=make_header(self.config.name, self._message_seq, self.clock.time()),
            connection_state=state,
        )
        return encode(message)

    async def _serve(self) -> None:
        topics = self.topics
        will = Will(
            topics.controller_connection,
            self._connection_payload(ConnectionState.CONNECTION_BROKEN),
        )
        async with MqttLink(
            self.address,
            client_id=self.config.name,
            will=will,
            max_pending=self.config.max_pending_messages,
        ) as link:
            await link.subscribe(topics.all_vans(VanTopic.STATE), qos=0)
            await link.subscribe(topics.all_vans(VanTopic.CONNECTION), qos=1)
            await link.subscribe(topics.all_vans(VanTopic.FACTSHEET), qos=1)
            await link.subscribe(topics.controller_request, qos=1)
            await link.publish(
                topics.controller_connection,
                self._connection_payload(ConnectionState.ONLINE),
                retain=True,
            )
            self._link = link
            self.core.on_link_up(self.clock.time())
            await self._flush()
            self._ready.set()
            log.info("controller %s serving on %s", self.config.name, self.address)
            try:
                async with asyncio.TaskGroup() as group:
                    group.create_task(self._receive_loop(link), name="receive")
                    group.create_task(self._flush_loop(), name="flush")
                    group.create_task(self._tick_loop(), name="tick")
                    group.create_task(self._wait_stop(), name="stop")
            except* _Stop:
                pass
            except* BrokerError as group_error:
                raise group_error.exceptions[0] from None
            self._ready.clear()
            await self._flush()
            with contextlib.suppress(BrokerError):
                await link.publish(
                    topics.controller_connection,
                    self._connection_payload(ConnectionState.OFFLINE),
                    retain=True,
                )
            self._link = None

    async def _wait_stop(self) -> None:
        await self._stop.wait()
        raise _Stop

    # ------------------------------------------------------------------ loops
    async def _receive_loop(self, link: MqttLink) -> None:
        """Van traffic never waits for the store: what a batch decides is written and sent
        by :meth:`_flush_loop` while the next batch is already being read."""
        while True:
            batch = await link.receive(MAX_BATCH)
            now_s = self.clock.time()
            for topic, payload in batch:
                self._handle(topic, payload, now_s)
            if self.core.has_output():
                self._decided.set()

    async def _flush_loop(self) -> None:
        """Flush after the receive loop's batches; decisions made while a write is under way
        go out together in the next one."""
        while True:
            await self._decided.wait()
            self._decided.clear()
            await self._flush()

    async def _tick_loop(self) -> None:
        while True:
            await self.clock.sleep(self.config.tick_s)
            now_s = self.clock.time()
            for van_id, dropped in self.limiter.take_dropped().items():
                self.core.on_throttled(van_id, dropped, now_s)
            link = self._link
            if link is not None and link.dropped:
                self.core.counters["incoming_queue_full"] += link.dropped
                self.core.on_bad_message(
                    self.topics.root, "queue_full", f"{link.dropped} messages dropped", None, now_s
                )
                link.dropped = 0
            self.core.tick(now_s)
            await self._flush()
            self._collect_garbage()

    def _collect_garbage(self) -> None:
        """The scheduled collection, when :func:`settle_heap` turned automatic collection off."""
        if gc.isenabled():
            return
        now = time.monotonic()
        if now >= self._next_gc or gc.get_count()[0] >= GC_AFTER_ALLOCATIONS:
            gc.collect()
            self._next_gc = now + GC_EVERY_S

    # ------------------------------------------------------------------ incoming
    def _handle(self, topic: str, payload: bytes, now_s: float) -> None:
        if topic.startswith(self._van_root):
            self._handle_van(topic, payload, now_s)
        elif topic == self.topics.controller_request:
            self._spawn(self._handle_request(payload), "request")
        else:
            self.core.on_bad_message(topic, "wrong_topic", "not a topic we subscribed", None, now_s)

    def _handle_van(self, topic: str, payload: bytes, now_s: float) -> None:
        core = self.core
        try:
            van_id, kind = self.topics.parse_van(topic)
        except ProtocolError as exc:
            core.on_bad_message(topic, exc.reason, exc.detail, None, now_s)
            return
        if not payload and kind is not VanTopic.STATE:
            return  # a retained message being cleared
        if not core.knows_van(van_id):
            core.on_bad_message(
                topic, "unknown_van", f"{van_id!r} is not in the fleet", None, now_s
            )
            return
        if not self.limiter.allow(van_id, now_s):
            return
        try:
            if kind is VanTopic.STATE:
                state = decode(State, payload, topic=topic)
                self._check_van(state.van_id, van_id)
                core.on_state(van_id, state, now_s, payload)
            elif kind is VanTopic.CONNECTION:
                connection = decode(Connection, payload, topic=topic)
                self._check_van(connection.van_id, van_id)
                core.on_connection(van_id, connection, now_s)
            elif kind is VanTopic.FACTSHEET:
                factsheet = decode(Factsheet, payload, topic=topic)
                self._check_van(factsheet.van_id, van_id)
                core.on_factsheet(van_id, factsheet, now_s)
            else:
                core.on_bad_message(
                    topic, "wrong_topic", "vans do not send commands", van_id, now_s
                )
        except ProtocolError as exc:
            core.on_bad_message(topic, exc.reason, exc.detail, van_id, now_s)

    @staticmethod
    def _check_van(in_body: str, in_topic: str) -> None:
        if in_body != in_topic:
            raise DecodeError(
                "wrong_van", f"message about van {in_body!r} on van {in_topic!r}'s topic"
            )

    # ------------------------------------------------------------------ requests
    async def _handle_request(self, payload: bytes) -> None:
        """Every request gets a reply, an error one if it is malformed or its command fails
        for any reason; the task never dies with an exception (docs/controller.md)."""
        topic = self.topics.controller_request
        try:
            request = await decode_request(payload, topic)
        except DecodeError as exc:
            self.core.on_bad_message(topic, exc.reason, exc.detail, None, self.clock.time())
            await self._reply_to_undecodable(payload, exc)
            return
        reply = self._replies.get(request.request_id)
        if reply is None:
            try:
                result = await self._execute(request)
                reply = self._reply(request.request_id, ok=True, result=result)
            except FleetError as exc:
                reply = self._reply(request.request_id, ok=False, error=str(exc))
            except Exception as exc:  # a defect: answered, logged, and the service goes on
                log.exception("request %s (%s) failed", request.request_id, request.body.command)
                error = f"the controller could not carry out {request.body.command}: "
                reply = self._reply(
                    request.request_id, ok=False, error=error + f"{type(exc).__name__}: {exc}"
                )
            self._replies[request.request_id] = reply
            if len(self._replies) > REMEMBERED_REQUESTS:
                self._replies.popitem(last=False)
        await self._flush()
        await self._publish(self.topics.controller_reply(request.client_id), encode(reply))

    async def _reply_to_undecodable(self, payload: bytes, error: DecodeError) -> None:
        """Answer a request we cannot read, if it says at least who asked."""
        asked = who_asked(payload)
        if asked is None:
            return
        client_id, request_id = asked
        try:
            reply = self._reply(request_id, ok=False, error=str(error))
            topic = self.topics.controller_reply(client_id)
        except (ValueError, ProtocolError):
            return
        with contextlib.suppress(ProtocolError):
            await self._publish(topic, encode(reply))

    def _reply(
        self, request_id: str, *, ok: bool, result: ReplyResult | None = None, error: str = ""
    ) -> Reply:
        self._message_seq += 1
        return Reply(
            header=make_header(self.config.name, self._message_seq, self.clock.time()),
            request_id=request_id[:64] if request_id else "unknown",
            ok=ok,
            error=error[:30000],
            result=result,
        )

    async def _execute(self, request: Request) -> ReplyResult:
        body = request.body
        core = self.core
        if isinstance(body, DispatchBody):
            checked = await asyncio.to_thread(self.planning.load_dispatch, body)
            message = core.dispatch(checked, self.clock.time())
            return CommandResult(
                message=message, affected=tuple(r.van_id for r in checked.plan.routes)
            )
        if isinstance(body, AddParcelsBody):
            day = core.day
            if day is None:
                raise ControlError("no plan has been dispatched yet: plan and dispatch first")
            parcels = await asyncio.to_thread(self.planning.parse_parcels, body, day)
            message = core.add_parcels(parcels, self.clock.time())
            return CommandResult(message=message, affected=tuple(p.id for p in parcels))
        if isinstance(body, StatusBody):
            return core.status(body.van_ids, self.clock.time())
        if isinstance(body, CancelParcelsBody):
            message = core.cancel_parcels(body.parcel_ids, self.clock.time())
            return CommandResult(message=message, affected=body.parcel_ids)
        if isinstance(body, CancelVansBody):
            core.cancel_vans(body.van_ids, self.clock.time())
            await self._flush()
            outcomes = await self._cancel_outcomes(body.van_ids)
            return CommandResult(
                message="; ".join(text for _, text in outcomes.values()),
                affected=tuple(v for v, (confirmed, _) in outcomes.items() if confirmed),
            )
        if isinstance(body, ReplanBody):
            message = core.request_replan(body.reason, self.clock.time())
            return CommandResult(message=message)
        if isinstance(body, InstantBody):
            targets = core.all_van_ids() if body.all_vans else list(body.van_ids)
            if not targets:
                raise ControlError("name at least one van (or all vans)")
            sent = core.instant(body.action, targets, self.clock.time(), reason="dispatcher")
            return CommandResult(
                message=f"{body.action.value} sent to {len(sent)} van(s)", affected=tuple(sent)
            )
        if isinstance(body, AcknowledgeBody):
            message = core.acknowledge(
                body.alert,
                body.by,
                self.clock.time(),
                van_id=body.van_id,
                parcel_id=body.parcel_id,
            )
            return CommandResult(message=message)
        if isinstance(body, OrdersBody):
            return OrdersResult(orders=tuple(core.latest_orders(body.van_ids)))
        if isinstance(body, EventsBody):
            records = self.store.events(
                after_id=body.after_id,
                limit=body.limit,
                van_id=body.van_id,
                parcel_id=body.parcel_id,
            )
            return EventsResult(events=tuple(self._event_message(e) for e in records))
        raise ControlError(f"unknown command {body!r}")

    async def _cancel_outcomes(self, van_ids: Sequence[str]) -> dict[str, tuple[bool, str]]:
        """Wait until each cancelled van confirmed its cancel or ``cancel_confirm_s`` passed
        (the core settles it on its tick), then say what happened to each."""
        limit_s = self.config.cancel_confirm_s + 4 * self.config.tick_s
        deadline_s = self.clock.time() + limit_s
        while True:
            outcomes = {v: self.core.cancel_outcome(v) for v in van_ids}
            if all(o is not None for o in outcomes.values()) or self.clock.time() >= deadline_s:
                break
            await self.clock.sleep(self.config.tick_s)  # the core's tick settles them
        return {
            v: o if o is not None else (False, f"{v}: cancel not settled within {limit_s:g} s")
            for v, o in outcomes.items()
        }

    # ------------------------------------------------------------------ outgoing
    def _commit(self, out: Output) -> list[EventRecord]:
        return self.store.commit(out.changes) if out.changes else []

    async def _commit_off_loop(self, out: Output) -> list[EventRecord]:
        """Write in a worker thread (SQLite releases the GIL), one batch at a time and in
        decision order, so that van traffic keeps flowing while the store writes. Vans about
        to get their first command have their message ids reserved in the same trip."""
        now_s = self.clock.time()
        first_time = [s.van_id for s in out.sends if not self.signer.ready(s.van_id, now_s)]
        if not out.changes and not first_time:
            return []
        writing = False
        try:
            async with self._store_lock:
                writing = True
                return await asyncio.to_thread(
                    self._commit_and_prepare, out.changes, first_time, now_s
                )
        except asyncio.CancelledError:
            # Stopped while waiting for the store: what was drained is written all the same
            # (once the worker thread has it, it finishes the write on its own).
            if not writing and out.changes:
                self.store.commit(out.changes)
            raise

    def _commit_and_prepare(
        self, changes: Changes, first_time: list[str], now_s: float
    ) -> list[EventRecord]:
        events = self.store.commit(changes) if changes else []
        self.signer.prepare(first_time, now_s)
        return events

    async def _flush(self) -> None:
        """Write what the core decided, then send it (urgent first), then start re-plans."""
        out = self.core.drain()
        events = await self._commit_off_loop(out)
        link = self._link
        now_s = self.clock.time()
        if link is not None and (out.sends or events):
            async with self._send_lock:
                for send in send_order(out.sends):
                    kind = VanTopic.ORDER if isinstance(send.message, Order) else VanTopic.INSTANT
                    topic = self.topics.van(send.van_id, kind)
                    message_id, payload = self.signer.sign(send.message, now_s)
                    self.core.command_signed(send.van_id, send.message, message_id)
                    sent_s = self.clock.time()
                    await link.publish_soon(topic, payload, qos=1)
                    if isinstance(send.message, Order):
                        self.core.order_published(send.van_id, send.message, sent_s)
                for event in events:
                    payload = encode(self._event_message(event))
                    await link.publish_soon(self.topics.controller_events, payload, qos=1)
        for request in out.replans:
            self._spawn(self._replan(request), f"replan {request.replan_id}")

    async def _publish(self, topic: str, payload: bytes) -> None:
        link = self._link
        if link is not None:
            await link.publish_soon(topic, payload, qos=1)

    def _event_message(self, event: EventRecord) -> Event:
        return Event(
            header=make_header(self.config.name, event.event_id, event.time_s),
            event_id=event.event_id,
            time=format_timestamp(event.time_s),
            kind=event.kind,
            van_id=event.van_id,
            parcel_id=event.parcel_id,
            detail=event.detail,
            data=dict(list(event.data.items())[:64]),
        )

    async def _replan(self, request: ReplanRequest) -> None:
        outcome: CheckedPlan | Exception
        try:
            outcome = await asyncio.to_thread(self.planning.replan, request)
        except Exception as exc:  # settled as a failed re-plan
            outcome = exc
        settle_replan(self.core, request, outcome, self.clock.time())
        await self._flush()

    def _spawn(self, coro: object, name: str) -> None:
        task: asyncio.Task[None] = asyncio.create_task(coro, name=name)  # type: ignore[arg-type]
        self._background.add(task)
        task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._background.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("task %s failed", task.get_name(), exc_info=task.exception())
