"""The one MQTT client of the project: paho (``paho-mqtt>=2.1,<3``) driven from asyncio through
its documented external-loop API, and nothing else of it.

paho owns the protocol (packets, session, QoS 1 retries, keepalive); this module owns the
event loop's part: ``on_socket_open``/``on_socket_close`` watch the socket for reading,
``on_socket_register_write``/``on_socket_unregister_write`` for writing, the callbacks call
``loop_read``/``loop_write``, and a task calls ``loop_misc`` every second for the keepalive.
The blocking ``connect`` (DNS, TCP, the TLS handshake) runs in a worker thread, bounded by the
timeout. Every socket gets TCP_NODELAY (Nagle plus delayed ACKs cost ~88 ms a round trip).

Incoming messages go one of two ways:

* to ``on_message``, synchronously, inside the read callback and before paho sends the QoS 1
  PUBACK (the firmware bridge: an emergency stop is on the serial line one call later);
* into a bounded queue read by :meth:`MqttLink.receive` in batches (the controller, the
  console, the simulator); what does not fit (``max_pending``) is dropped and counted in
  :attr:`MqttLink.dropped`.

A readiness event reads every packet that has arrived, not one: paho's ``loop_read`` reads a
packet or so per call, so the read callback calls it again as long as the last call
completed a packet (for TLS, also while the SSL object holds bytes), at most
``READS_PER_EVENT`` times.

Publishing writes at once (:meth:`MqttLink.publish_soon`): the packet is on the socket before
the caller's next line, so an order is never held up behind a batch of incoming states.
Errors are :class:`fleet.mqtt.BrokerError`; a lost connection fails every pending operation
at once and ends :meth:`MqttLink.receive` and :meth:`MqttLink.wait_lost`.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from fleet.mqtt.address import BrokerAddress
from fleet.mqtt.errors import BrokerError, SubscriptionRefused

log = logging.getLogger(__name__)

NODELAY = ((socket.IPPROTO_TCP, socket.TCP_NODELAY, 1),)
MAX_PUBLISHES_IN_FLIGHT = 1000  # unacknowledged QoS 1 publishes (paho would queue past 20)
BACKPRESSURE_POLL_S = 0.001  # how often a full window of unacknowledged publishes is looked at
MISC_EVERY_S = 1.0  # keepalive bookkeeping (PINGREQ, a silent broker noticed)
READS_PER_EVENT = 1000  # packets read per readiness event before other callbacks get a turn
DISCONNECT_WAIT_S = 1.0

OnMessage = Callable[[str, bytes], None]


@dataclass(frozen=True, slots=True)
class Will:
    topic: str
    payload: bytes
    qos: int = 1
    retain: bool = True


class MqttLink:
    """``async with MqttLink(address, client_id=...) as link:`` one broker session.

    ``clean_session=False`` keeps the broker's session (QoS 1 messages sent while we were
    away are delivered on reconnect). ``timeout_s`` bounds connecting (CONNACK), SUBACK and
    PUBACK waits. A session is not reconnected: the caller makes a new link.
    """

    def __init__(
        self,
        address: BrokerAddress,
        *,
        client_id: str,
        will: Will | None = None,
        clean_session: bool = True,
        keepalive_s: int = 30,
        timeout_s: float = 10.0,
        max_pending: int = 100_000,
        on_message: OnMessage | None = None,
    ) -> None:
        self.address = address
        self.client_id = client_id
        self.dropped = 0  # incoming messages the full queue could not take
        self.publish_errors = 0  # publish_soon calls paho refused (the link was down)
        self._will = will
        self._clean_session = clean_session
        self._keepalive_s = keepalive_s
        self._timeout_s = timeout_s
        self._max_pending = max_pending
        self._on_message_cb = on_message
        self._tls = address.ssl_context()  # bad TLS files fail here, before any connection
        self._client: paho.Client | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread = 0
        self._sock: Any = None  # the socket paho opened (socket.socket or ssl.SSLSocket)
        self._writing = False  # the event loop watches the socket for writing
        self._want_write = False
        self._writer_sync_due = False
        self._connack: asyncio.Future[None] | None = None
        self._acks: dict[int, asyncio.Future[list[ReasonCode] | None]] = {}
        self._incoming: deque[tuple[str, bytes]] = deque()
        self._waiter: asyncio.Future[None] | None = None
        self._lost_event: asyncio.Event | None = None
        self._lost: BrokerError | None = None
        self._closing = False
        self._misc: asyncio.Task[None] | None = None
        self._packets_in = 0  # packets read that reached one of our callbacks
        self._inflight: deque[paho.MQTTMessageInfo] = deque()  # QoS 1, oldest first

    # ---- lifetime ---------------------------------------------------------------------------

    async def __aenter__(self) -> MqttLink:
        loop = asyncio.get_running_loop()
        self._loop = loop
        self._loop_thread = threading.get_ident()
        self._lost_event = asyncio.Event()
        self._connack = loop.create_future()
        client = self._make_client()
        self._client = client
        where = f"cannot connect to the broker at {self.address}"
        try:
            await loop.run_in_executor(
                None, client.connect, self.address.host, self.address.port, self._keepalive_s
            )
        except (OSError, ValueError) as exc:  # refused, unreachable, DNS, TLS, timeout
            self._abandon()
            raise BrokerError(f"{where}: {exc}") from exc
        except BaseException:
            self._abandon()
            raise
        try:
            async with asyncio.timeout(self._timeout_s):
                await self._connack
        except TimeoutError as exc:
            self._abandon()
            raise BrokerError(f"{where}: no answer within {self._timeout_s:g} s") from exc
        except BaseException:
            self._abandon()
            raise
        self._misc = loop.create_task(self._misc_loop(), name=f"mqtt {self.client_id} keepalive")
        log.debug("session with %s open as %s", self.address, self.client_id)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._closing = True
        if self._misc is not None:
            self._misc.cancel()
        client, lost = self._client, self._lost_event
        if client is not None and lost is not None and self._lost is None:
            client.disconnect()
            self._write_now()  # paho closes the socket once DISCONNECT is written
            if not lost.is_set():
                try:
                    async with asyncio.timeout(DISCONNECT_WAIT_S):
                        await lost.wait()
                except TimeoutError:
                    log.debug("disconnect from %s: not written in time", self.address)
        self._abandon()

    def _make_client(self) -> paho.Client:
        client = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id=self.client_id,
            clean_session=self._clean_session,
            protocol=paho.MQTTv311,
        )
        a = self.address
        if a.username is not None:
            client.username_pw_set(a.username, a.password)
        if self._will is not None:
            w = self._will
            client.will_set(w.topic, w.payload, qos=w.qos, retain=w.retain)
        if self._tls is not None:
            client.tls_set_context(self._tls)
        client.max_inflight_messages_set(MAX_PUBLISHES_IN_FLIGHT)
        client.connect_timeout = self._timeout_s
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        client.on_subscribe = self._on_subscribe
        client.on_publish = self._on_publish
        client.on_socket_open = self._on_socket_open
        client.on_socket_close = self._on_socket_close
        client.on_socket_register_write = self._on_register_write
        client.on_socket_unregister_write = self._on_unregister_write
        return client

    def _abandon(self) -> None:
        """Forget the session: stop watching the socket, close it, fail what still waits."""
        if self._connack is not None and not self._connack.done():
            self._connack.cancel()  # nobody waits for it any more
        if self._misc is not None:
            self._misc.cancel()
        sock = self._sock
        if sock is not None:
            self._unwatch(sock.fileno())
            sock.close()
        self._mark_lost(BrokerError(f"the link to {self.address} is closed"))

    # ---- paho's callbacks -------------------------------------------------------------------

    def _in_loop(self, call: Callable[..., None], *args: object) -> None:
        """Run ``call`` now on the event loop's thread, or soon from paho's connect thread."""
        assert self._loop is not None
        if threading.get_ident() == self._loop_thread:
            call(*args)
        elif not self._loop.is_closed():
            self._loop.call_soon_threadsafe(call, *args)

    def _on_socket_open(self, client: paho.Client, userdata: object, sock: Any) -> None:
        sock.setsockopt(*NODELAY[0])
        self._in_loop(self._watch, sock)

    def _watch(self, sock: Any) -> None:
        if sock.fileno() < 0:  # closed again before we got here
            return
        assert self._loop is not None
        self._sock = sock
        self._loop.add_reader(sock.fileno(), self._on_readable)
        self._sync_writer()

    def _on_socket_close(self, client: paho.Client, userdata: object, sock: Any) -> None:
        self._in_loop(self._unwatch, sock.fileno())

    def _unwatch(self, fileno: int) -> None:
        sock, loop = self._sock, self._loop
        if sock is None or loop is None or fileno < 0:
            return
        loop.remove_reader(fileno)
        if self._writing:
            loop.remove_writer(fileno)
        self._sock = None
        self._writing = False

    def _on_register_write(self, client: paho.Client, userdata: object, sock: Any) -> None:
        self._in_loop(self._set_want_write, True)

    def _on_unregister_write(self, client: paho.Client, userdata: object, sock: Any) -> None:
        self._in_loop(self._set_want_write, False)

    def _set_want_write(self, want: bool) -> None:
        # Settled at the loop's next turn: a publish registers and, written at once by
        # _write_now, unregisters again; the event loop's watch is touched only if still due.
        self._want_write = want
        if not self._writer_sync_due and self._loop is not None:
            self._writer_sync_due = True
            self._loop.call_soon(self._sync_writer)

    def _sync_writer(self) -> None:
        self._writer_sync_due = False
        sock, loop = self._sock, self._loop
        if sock is None or loop is None:
            return
        if self._want_write and not self._writing:
            loop.add_writer(sock.fileno(), self._on_writable)
            self._writing = True
        elif not self._want_write and self._writing:
            loop.remove_writer(sock.fileno())
            self._writing = False

    def _on_readable(self) -> None:
        # loop_read reads about one packet a call and does not say whether the socket had
        # more: go on while the last call completed a packet (one of our callbacks ran) or
        # the SSL object holds decrypted bytes the kernel's readiness does not show.
        client, sock = self._client, self._sock
        for _ in range(READS_PER_EVENT):
            handled = self._packets_in
            if client is None or client.loop_read() != paho.MQTT_ERR_SUCCESS:
                return
            if sock is not self._sock:  # the connection closed meanwhile
                return
            if self._packets_in == handled and not _tls_pending(sock):
                return

    def _on_writable(self) -> None:
        if self._client is not None:
            self._client.loop_write()

    def _on_connect(
        self,
        client: paho.Client,
        userdata: object,
        flags: paho.ConnectFlags,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        self._packets_in += 1
        connack = self._connack
        if connack is None or connack.done():
            return
        if reason_code.is_failure:
            connack.set_exception(
                BrokerError(
                    f"cannot connect to the broker at {self.address}: it refused client "
                    f"{self.client_id!r} ({reason_code})"
                )
            )
        else:
            connack.set_result(None)

    def _on_disconnect(
        self,
        client: paho.Client,
        userdata: object,
        flags: paho.DisconnectFlags,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        if self._closing:
            error = BrokerError(f"the link to {self.address} is closed")
        else:
            error = BrokerError(f"lost the broker at {self.address}: {reason_code}")
        self._in_loop(self._mark_lost, error)

    def _mark_lost(self, error: BrokerError) -> None:
        connack = self._connack
        if connack is not None and not connack.done():
            # closed before its CONNACK: fail the attempt now, not when the timeout runs out
            connack.set_exception(
                BrokerError(f"cannot connect to the broker at {self.address}: {error}")
            )
        if self._lost is None:
            self._lost = error
            log.debug("%s", error)  # the caller reports it, with what it does next
        acks, self._acks = self._acks, {}
        for future in acks.values():
            if not future.done():
                future.set_exception(error)
        self._wake()
        if self._lost_event is not None:
            self._lost_event.set()

    def _on_message(self, client: paho.Client, userdata: object, message: paho.MQTTMessage) -> None:
        self._packets_in += 1
        try:
            topic = message.topic
        except UnicodeDecodeError:
            log.warning("MQTT message on a topic that is not UTF-8 from %s: dropped", self.address)
            return
        payload = bytes(message.payload)  # paho's payload is bytes already: no copy
        if self._on_message_cb is not None:
            try:
                self._on_message_cb(topic, payload)
            except Exception:  # a bad message is reported, never fatal to the session
                log.exception("handling a message on %s", topic)
            return
        if len(self._incoming) >= self._max_pending:
            self.dropped += 1
            return
        self._incoming.append((topic, payload))
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _on_subscribe(
        self,
        client: paho.Client,
        userdata: object,
        mid: int,
        reason_codes: list[ReasonCode],
        properties: Properties | None,
    ) -> None:
        self._packets_in += 1
        future = self._acks.pop(mid, None)
        if future is not None and not future.done():
            future.set_result(reason_codes)

    def _on_publish(
        self,
        client: paho.Client,
        userdata: object,
        mid: int,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        self._packets_in += 1  # a PUBACK (or, from loop_write, a QoS 0 publish written)
        future = self._acks.pop(mid, None)
        if future is not None and not future.done():
            future.set_result(None)

    async def _misc_loop(self) -> None:
        client = self._client
        while client is not None and client.loop_misc() == paho.MQTT_ERR_SUCCESS:
            await asyncio.sleep(MISC_EVERY_S)

    # ---- the caller's side ------------------------------------------------------------------

    @property
    def is_connected(self) -> bool:
        return self._client is not None and self._lost is None and self._connack is not None

    @property
    def watches_for_writing(self) -> bool:
        """Whether the event loop watches the socket for writing (only while data waits)."""
        return self._writing

    def _live_client(self, what: str) -> paho.Client:
        if self._lost is not None:
            raise BrokerError(f"{what}: {self._lost}")
        if self._client is None:
            raise BrokerError(f"{what}: not connected to {self.address}")
        return self._client

    def _write_now(self) -> None:
        """Hand queued packets to the socket now rather than at the loop's next turn.

        A burst of orders signed and queued one after another leaves one by one, not
        together when the caller next awaits. paho's ``loop_write`` does not block, and asks
        (through ``on_socket_register_write``) to be called again if the kernel took part.
        """
        client = self._client
        if client is None:
            return
        try:
            client.loop_write()
        except OSError as exc:  # the read side notices and reports the broken link
            log.debug("write to %s: %s", self.address, exc)

    async def _wait_ack(self, what: str, mid: int) -> list[ReasonCode] | None:
        assert self._loop is not None
        future: asyncio.Future[list[ReasonCode] | None] = self._loop.create_future()
        self._acks[mid] = future
        self._write_now()
        try:
            async with asyncio.timeout(self._timeout_s):
                return await future
        except TimeoutError as exc:
            raise BrokerError(
                f"{what} on {self.address}: no answer within {self._timeout_s:g} s"
            ) from exc
        except BrokerError as exc:
            raise BrokerError(f"{what}: {exc}") from exc
        finally:
            self._acks.pop(mid, None)

    async def subscribe(self, *topic_filters: str, qos: int = 1) -> None:
        """Subscribe; a filter the broker refuses (its ACL) is :class:`SubscriptionRefused`."""
        what = f"subscribe {', '.join(topic_filters)}"
        client = self._live_client(what)
        rc, mid = client.subscribe([(f, qos) for f in topic_filters])
        if rc != paho.MQTT_ERR_SUCCESS or mid is None:
            raise BrokerError(f"{what} on {self.address}: {paho.error_string(rc)}")
        codes = await self._wait_ack(what, mid) or []
        refused = [f for f, code in zip(topic_filters, codes, strict=False) if code.is_failure]
        if refused:
            user = self.address.username or "(anonymous)"
            raise SubscriptionRefused(
                f"the broker {self.address} refused user {user!r} the topic {refused[0]} "
                "(its ACL): this login may not read it"
            )

    async def publish(
        self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False
    ) -> None:
        """Publish and, at QoS 1, wait until the broker has it (PUBACK)."""
        what = f"publish {topic}"
        info = self._live_client(what).publish(topic, payload, qos=qos, retain=retain)
        if info.rc != paho.MQTT_ERR_SUCCESS:
            raise BrokerError(f"{what} on {self.address}: {paho.error_string(info.rc)}")
        if qos == 0:
            self._write_now()
            return
        await self._wait_ack(what, info.mid)

    async def publish_soon(
        self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False
    ) -> None:
        """Hand the message to the socket now, in call order; its PUBACK is not awaited.

        The packet is written before this returns (nothing else on the event loop runs
        first). Waits only while ``MAX_PUBLISHES_IN_FLIGHT`` QoS 1 publishes are
        unacknowledged. A publish the client refuses (the link is down) is counted and
        logged, not raised: the receive side reports the lost link, and the controller
        re-sends what is unconfirmed.
        """
        inflight = self._inflight
        while inflight and inflight[0].is_published():
            inflight.popleft()
        while len(inflight) >= MAX_PUBLISHES_IN_FLIGHT and self._lost is None:
            await asyncio.sleep(BACKPRESSURE_POLL_S)
            while inflight and inflight[0].is_published():
                inflight.popleft()
        client = self._client
        if client is None or self._lost is not None:
            self.publish_errors += 1
            log.warning("publish to %s failed: not connected to %s", topic, self.address)
            return
        info = client.publish(topic, payload, qos=qos, retain=retain)
        if info.rc != paho.MQTT_ERR_SUCCESS:
            self.publish_errors += 1
            log.warning("publish to %s failed: %s", topic, paho.error_string(info.rc))
            return
        if qos:
            inflight.append(info)
        self._write_now()

    async def receive(self, max_batch: int = 1000) -> list[tuple[str, bytes]]:
        """Wait for at least one message; return it with any others already queued.

        Messages that arrived before the connection was lost are returned first; then the
        loss is a :class:`BrokerError`.
        """
        incoming = self._incoming
        while not incoming:
            if self._lost is not None:
                raise BrokerError(str(self._lost))
            assert self._loop is not None, "receive() outside 'async with'"
            self._waiter = self._loop.create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        return [incoming.popleft() for _ in range(min(max_batch, len(incoming)))]

    async def wait_lost(self) -> None:
        """Wait until the connection is lost, then raise the :class:`BrokerError` saying why."""
        assert self._lost_event is not None, "wait_lost() outside 'async with'"
        await self._lost_event.wait()
        raise BrokerError(str(self._lost))


def _tls_pending(sock: Any) -> bool:
    return isinstance(sock, ssl.SSLSocket) and sock.pending() > 0
