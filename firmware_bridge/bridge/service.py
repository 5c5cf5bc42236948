"""The bridge process: the serial link, one MQTT session (:class:`fleet.mqtt.MqttLink`, the
project's one MQTT adapter), a 1 Hz ticker and a publisher, all around :class:`BridgeCore`.

``async with BridgeService(settings, clock) as bridge: await bridge.wait_closed()`` — or
``await bridge.run()`` — runs until cancelled. Named tasks in one task group:
``serial`` (inside :class:`SerialLink`), ``mqtt`` (connect, subscribe; reconnect every
``reconnect_s``), ``publisher`` (spooled messages first, in order, then live ones),
``ticker`` (every ``tick_s``, and at the core's next deadline: the periodic state, stale
telemetry, held segments). MQTT with TCP_NODELAY, short timeouts
(``keepalive_s``, ``mqtt_timeout_s``), QoS 1 commands, a retained ``connection`` with a last
will of CONNECTION_BROKEN, a retained factsheet.

Commands are handled where they arrive: inside the MQTT socket's read callback, in arrival
order, before their QoS 1 PUBACK goes out (``MqttLink(on_message=...)``), not one queue hop
and two task switches later. An emergency stop is on the serial line before the state that
reports it is built.

The order book is restored from ``--state-dir/order-book.json`` when the service is made and
written there (:mod:`firmware_bridge.bridge.statefile`: temp file, fsync, rename, fsync of
the directory) whenever the core asks (:class:`SaveBook`), before the state that reports the
change; an unreadable file is logged, moved aside and reported in state, and the bridge
starts without an order.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from concurrent.futures import Future
from pathlib import Path

from firmware_bridge import wire
from firmware_bridge.bridge.config import BridgeSettings
from firmware_bridge.bridge.core import (
    Action,
    BridgeCore,
    DiscardSerial,
    EmergencyStopSerial,
    PublishState,
    SaveBook,
    SaveCounters,
    SendSerial,
)
from firmware_bridge.bridge.order_book import OrderBookError
from firmware_bridge.bridge.spool import Spool
from firmware_bridge.bridge.statefile import (
    StateFileError,
    StateWriter,
    move_aside,
    read_json,
)
from firmware_bridge.errors import LinkError, SpoolError
from firmware_bridge.link import (
    BadFrame,
    Delivered,
    Discarded,
    EstopAcked,
    LinkDown,
    LinkEvent,
    LinkUp,
    Received,
    Rejected,
    SerialLink,
    VersionMismatch,
    url_opener,
)
from fleet.mqtt import BrokerError, MqttLink, Will
from fleet.protocol import (
    PROTOCOL_VERSION,
    CommandVerifier,
    Connection,
    ConnectionState,
    Factsheet,
    InstantActionType,
    Topics,
    VanTopic,
    encode,
    make_header,
)
from fleet.protocol.clock import Clock

log = logging.getLogger(__name__)

COUNTERS_FILE = "replay-counters.json"
BOOK_FILE = "order-book.json"
OUTBOX_MAX = 256


def load_counters(path: Path) -> dict[str, int]:
    try:
        data = read_json(path)
    except StateFileError as exc:
        raise SpoolError(f"{path}: cannot read the anti-replay counters: {exc}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict) or not all(
        isinstance(k, str) and isinstance(v, int) for k, v in data.items()
    ):
        raise SpoolError(f"{path}: expected an object of command kind → message id")
    return {str(k): int(v) for k, v in data.items()}


def merge_counters(saved: dict[str, int], counters: dict[str, int]) -> dict[str, int]:
    """The counters to save: a counter never goes down (``docs/bridge.md``, "Commands")."""
    merged = dict(saved)
    for kind, value in counters.items():
        merged[kind] = max(value, merged.get(kind, value))
    return merged


class BridgeService:
    def __init__(self, settings: BridgeSettings, clock: Clock) -> None:
        self.settings = settings
        self.clock = clock
        self.topics = Topics(settings.topic_prefix)
        # the only two topics this bridge subscribes to
        self._order_topic = self.topics.van(settings.van_id, VanTopic.ORDER)
        self._instant_topic = self.topics.van(settings.van_id, VanTopic.INSTANT)
        settings.state_dir.mkdir(parents=True, exist_ok=True)
        self._counters_path = settings.state_dir / COUNTERS_FILE
        self._counters_saved = load_counters(self._counters_path)
        self.writer = StateWriter()
        verifier = CommandVerifier(
            settings.van_id,
            settings.keys,
            max_age_s=settings.max_command_age_s,
            last_message_ids=self._counters_saved,
        )
        self.core = BridgeCore(
            settings.van_id,
            verifier,
            state_period_s=settings.state_period_s,
            vcu_grace_s=settings.vcu_grace_s,
            telemetry_stale_s=settings.telemetry_stale_s,
        )
        self._book_path = settings.state_dir / BOOK_FILE
        self._restore_book()
        self.spool = Spool(settings.state_dir / "spool", max_messages=settings.spool_max_messages)
        self.link = SerialLink(
            url_opener(settings.serial_url),
            config=settings.link,
            clock=clock,
            on_event=self._on_link_event,
            baud=settings.baud,
            name=f"bridge {settings.van_id}",
        )
        self._client: MqttLink | None = None
        self.connected = asyncio.Event()
        # states to publish, each with the state-file write it must wait for
        self._outbox: deque[tuple[str, bytes, Future[None] | None]] = deque()
        self._outbox_wake = asyncio.Event()
        self._tickets: dict[int, str] = {}
        self._estop_tags: dict[int, str] = {}
        self._tasks: asyncio.TaskGroup | None = None
        self._runner: asyncio.Task[None] | None = None
        self.states_published = 0
        self.mqtt_sessions = 0  # connections made to the broker so far
        self._command_arrived_ns = 0  # when the command being handled arrived (monotonic ns)

    # ---- lifetime -------------------------------------------------------------------------

    async def __aenter__(self) -> BridgeService:
        self._runner = asyncio.create_task(self.run(), name=f"bridge {self.settings.van_id}")
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._runner is not None:
            self._runner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._runner

    async def run(self) -> None:
        try:
            async with self.link, asyncio.TaskGroup() as tg:
                tg.create_task(self._mqtt_loop(), name="mqtt")
                tg.create_task(self._publisher(), name="publisher")
                tg.create_task(self._ticker(), name="ticker")
        finally:
            self.writer.close()  # what was asked is written before the bridge ends

    def _restore_book(self) -> None:
        path = self._book_path
        van = self.settings.van_id
        try:
            data = read_json(path)
            if data is None:
                log.info("van %s: no saved order book in %s: starting empty", van, path)
                return
            self.core.restore(data, where=str(path))
        except (StateFileError, OrderBookError) as exc:
            aside = move_aside(path, str(int(self.clock.time() * 1000)))
            where = f"moved aside to {aside.name}" if aside else "could not be moved aside"
            detail = f"{exc}; {where}; started without an order"
            log.error("van %s: saved order book unreadable: %s", van, detail)
            self.core.restore_failed(f"saved order book unreadable: {detail}")

    def _save_book(self) -> None:
        self.writer.put_json(self._book_path, self.core.book_document())

    # ---- actions --------------------------------------------------------------------------

    def _apply(self, actions: list[Action]) -> None:
        for action in actions:
            if isinstance(action, SendSerial):
                try:
                    self._tickets[self.link.send(action.message)] = action.tag
                except LinkError as exc:
                    self._apply(self.core.on_send_failed(action.tag, str(exc)))
            elif isinstance(action, EmergencyStopSerial):
                estop_id = self.link.emergency_stop()
                written_ns = time.monotonic_ns()
                self.core.estop_sent(estop_id)
                self._estop_tags[estop_id] = action.tag
                # wall-clock cost of our own handling (CLOCK_MONOTONIC, as other processes
                # on the machine read it), for the operator and for benchmarks/serial_link.py
                log.info(
                    "van %s: emergency stop %d handed to the serial line %.3f ms after its "
                    "command arrived (monotonic ns: arrived %d, written %d)",
                    self.settings.van_id,
                    estop_id,
                    (written_ns - self._command_arrived_ns) / 1e6,
                    self._command_arrived_ns,
                    written_ns,
                )
            elif isinstance(action, DiscardSerial):
                self.link.discard_pending()
            elif isinstance(action, PublishState):
                topic = self.topics.van(self.settings.van_id, VanTopic.STATE)
                self._publish(topic, encode(action.state))
            elif isinstance(action, SaveBook):
                self._save_book()
            elif isinstance(action, SaveCounters):
                merged = merge_counters(self._counters_saved, action.counters)
                if merged != self._counters_saved:
                    self._counters_saved = merged
                    self.writer.put_json(self._counters_path, merged)

    def _on_link_event(self, event: LinkEvent) -> None:
        now = self.clock.time()
        core = self.core
        if isinstance(event, Received):
            msg = event.message
            if isinstance(msg, wire.Telemetry):
                self._apply(core.on_telemetry(msg, now))
            elif isinstance(msg, wire.FaultReport):
                self._apply(core.on_fault_report(msg, now))
        elif isinstance(event, Delivered):
            for ticket in event.tickets:
                tag = self._tickets.pop(ticket, None)
                if tag is not None:
                    self._apply(core.on_delivered(tag))
        elif isinstance(event, Rejected):
            tag = self._tickets.pop(event.ticket, None)
            log.warning(
                "van %s: the VCU refused %s for good (%s)",
                self.settings.van_id,
                event.message.TYPE.name,
                event.reason.name,
            )
            if tag is not None:
                self._apply(core.on_send_failed(tag, f"refused by the VCU ({event.reason.name})"))
        elif isinstance(event, Discarded):
            tag = self._tickets.pop(event.ticket, None)
            if tag is not None:
                self._apply(core.on_send_failed(tag, "link lost", link_lost=True))
        elif isinstance(event, EstopAcked):
            tag = self._estop_tags.pop(event.estop_id, None)
            if tag is not None:
                self._apply(core.on_delivered(tag))
        elif isinstance(event, LinkUp):
            log.info("van %s: VCU link up", self.settings.van_id)
            self._apply(core.on_link_up())
        elif isinstance(event, LinkDown):
            log.error("van %s: VCU link down: %s", self.settings.van_id, event.reason)
            self._apply(core.on_link_down(event.reason, now))
        elif isinstance(event, VersionMismatch):
            self._apply(core.on_version_mismatch(event.peer_min, event.peer_max, now))
        elif isinstance(event, BadFrame):
            self._apply(core.on_bad_frame(event.fault, now))

    # ---- MQTT ------------------------------------------------------------------------------

    def _message(self, kind: VanTopic, state: ConnectionState | None = None) -> bytes:
        s = self.settings
        now = self.clock.time()
        header = make_header(s.van_id, self.core.next_message_id(now), now)
        self._apply(self.core.save_if_changed())  # the message id reservation, if it grew
        if state is not None:
            return encode(Connection(header=header, van_id=s.van_id, connection_state=state))
        p = s.profile
        return encode(
            Factsheet(
                header=header,
                van_id=s.van_id,
                model=p.model,
                firmware_version=p.firmware_version,
                protocol_versions=(PROTOCOL_VERSION,),
                top_speed_mps=p.top_speed_mps,
                payload_kg=p.payload_kg,
                cargo_volume_m3=p.cargo_volume_m3,
                battery_kwh=p.battery_kwh,
                range_m=p.range_m,
                max_order_nodes=2000,
                max_order_bytes=1024 * 1024,
                instant_actions=tuple(InstantActionType),
            )
        )

    def _link(self) -> MqttLink:
        s = self.settings
        return MqttLink(
            s.broker,
            client_id=s.mqtt_client_id,
            will=Will(
                self.topics.van(s.van_id, VanTopic.CONNECTION),
                self._message(VanTopic.CONNECTION, ConnectionState.CONNECTION_BROKEN),
                qos=1,
                retain=True,
            ),
            clean_session=False,  # QoS 1 commands sent while we were away still arrive
            keepalive_s=s.keepalive_s,
            timeout_s=s.mqtt_timeout_s,
            on_message=self._on_mqtt,  # commands: handled in the read callback
        )

    async def _mqtt_loop(self) -> None:
        s = self.settings
        conn_topic = self.topics.van(s.van_id, VanTopic.CONNECTION)
        while True:
            try:
                async with self._link() as client:
                    try:
                        await self._session(client)  # returns when the connection is lost
                    except asyncio.CancelledError:
                        # stopped, even while still subscribing: say so rather than leave a
                        # retained ONLINE behind (the will covers only a broken connection)
                        with contextlib.suppress(BrokerError, TimeoutError):
                            async with asyncio.timeout(1.0):
                                await client.publish(
                                    conn_topic,
                                    self._message(VanTopic.CONNECTION, ConnectionState.OFFLINE),
                                    qos=1,
                                    retain=True,
                                )
                        raise
                    finally:
                        self._client = None
                        self.connected.clear()
            except BrokerError as exc:
                log.warning(
                    "van %s: broker %s unreachable (%s); the van keeps its released base; "
                    "retrying in %.1f s",
                    s.van_id,
                    s.broker,
                    exc,
                    s.reconnect_s,
                )
            except Exception:  # any other failure of a broker session is retried too:
                # the van's link to its VCU and its order book carry on
                log.exception(
                    "van %s: broker session to %s failed; the van keeps its released base; "
                    "retrying in %.1f s",
                    s.van_id,
                    s.broker,
                    s.reconnect_s,
                )
            await self.clock.sleep(s.reconnect_s)

    async def _session(self, client: MqttLink) -> None:
        s = self.settings
        await client.subscribe(self._order_topic, self._instant_topic, qos=1)
        await client.publish(
            self.topics.van(s.van_id, VanTopic.CONNECTION),
            self._message(VanTopic.CONNECTION, ConnectionState.ONLINE),
            qos=1,
            retain=True,
        )
        await client.publish(
            self.topics.van(s.van_id, VanTopic.FACTSHEET),
            self._message(VanTopic.FACTSHEET),
            qos=1,
            retain=True,
        )
        log.info("van %s: connected to %s", s.van_id, s.broker)
        self._client = client
        self.mqtt_sessions += 1
        self.connected.set()
        self._outbox_wake.set()
        await client.wait_lost()  # raises BrokerError saying why

    def _on_mqtt(self, topic: str, data: bytes) -> None:
        """One command off the broker; runs in the MQTT read callback and never raises."""
        self._command_arrived_ns = time.monotonic_ns()
        try:
            now = self.clock.time()
            if topic == self._instant_topic:
                # the serial commands (an e-stop first) go out before the state is built
                self._apply(self.core.instant_commands(data, now, topic=topic))
                self._apply(self.core.state_after_command(now))
            elif topic == self._order_topic:
                self._apply(self.core.on_order_payload(data, now, topic=topic))
            else:
                log.warning("van %s: message on unexpected topic %s", self.settings.van_id, topic)
        except Exception:
            # a bad message is reported, never fatal to the bridge
            log.exception("van %s: failed to handle a message on %s", self.settings.van_id, topic)

    # ---- publishing ---------------------------------------------------------------------------

    def _publish(self, topic: str, payload: bytes) -> None:
        if self.connected.is_set() and not len(self.spool) and len(self._outbox) < OUTBOX_MAX:
            self._outbox.append((topic, payload, self.writer.last))
            self._outbox_wake.set()
            return
        try:
            self.spool.append(topic, payload)
        except SpoolError as exc:
            log.error("%s", exc)
        self.core.spool_dropped = self.spool.dropped

    async def _publisher(self) -> None:
        while True:
            await self.connected.wait()
            client = self._client
            if client is None:
                await asyncio.sleep(0)
                continue
            try:
                while (item := self.spool.peek()) is not None:
                    await client.publish(item[0], item[1], qos=1)  # fails if the link is lost
                    self.spool.pop()
                    self.states_published += 1
                while self._outbox:
                    topic, payload, written = self._outbox[0]
                    if written is not None and not written.done():
                        # a state goes out only once the change it reports is on disk
                        await asyncio.wrap_future(written)
                    await client.publish(topic, payload, qos=0)
                    self._outbox.popleft()
                    self.states_published += 1
            except BrokerError as exc:
                log.warning("van %s: publish failed (%s); spooling", self.settings.van_id, exc)
                while self._outbox:
                    topic, payload, _ = self._outbox.popleft()
                    self.spool.append(topic, payload)
                await self.clock.sleep(0.1)
                continue
            self._outbox_wake.clear()
            if self.connected.is_set() and not self._outbox:
                await self._outbox_wake.wait()

    async def _ticker(self) -> None:
        while True:
            delay = self.settings.tick_s
            due = self.core.next_deadline_s()
            now = self.clock.time()
            if due is not None and due > now:
                # a segment held back for its stop's planned time goes out on time; stale
                # telemetry is reported when it turns stale, not up to a tick later
                delay = min(delay, due - now + 1e-3)
            await self.clock.sleep(delay)
            self._apply(self.core.tick(self.clock.time()))
