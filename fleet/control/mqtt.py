"""The one module that speaks aiomqtt (pinned ``>=2.5,<3``) and the paho client under it
(``paho-mqtt>=2.1,<3``, aiomqtt's own range): a small, strict MQTT link.

``MqttLink`` connects with a last will, sets TCP_NODELAY on its socket (Nagle plus delayed
ACKs cost ~88 ms per round trip otherwise), subscribes, publishes, and hands incoming
messages over in batches. Incoming messages wait in a bounded queue (``max_pending``); what
does not fit is dropped and counted in :attr:`MqttLink.dropped`. Library errors become
:class:`LinkError` at this boundary. Publishing goes straight to paho (see
:meth:`MqttLink.publish_soon`) so that a command is on the wire before anything else runs.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from pathlib import Path
from types import TracebackType
from urllib.parse import unquote, urlsplit

import aiomqtt
import paho.mqtt.client as paho_mqtt

from fleet.errors import ConfigError, ControlError
from fleet.model.toml_table import Table

log = logging.getLogger(__name__)

NODELAY = ((socket.IPPROTO_TCP, socket.TCP_NODELAY, 1),)
MAX_PUBLISHES_IN_FLIGHT = 1000
BACKPRESSURE_POLL_S = 0.001  # how often a full window of unacknowledged publishes is looked at


class LinkError(ControlError):
    """The broker cannot be reached, refused us, or dropped the connection."""


class SubscriptionRefused(LinkError):
    """The broker's ACL does not let this login read a topic."""


@dataclass(frozen=True, slots=True)
class BrokerAddress:
    host: str
    port: int
    username: str | None = None
    password: str | None = None
    tls: bool = False
    ca_file: str | None = None
    cert_file: str | None = None  # client certificate (TLS listeners that require one)
    key_file: str | None = None

    @classmethod
    def parse(cls, url: str, *, ca_file: str | None = None) -> BrokerAddress:
        """``mqtt://[user:password@]host[:port]`` or ``mqtts://...`` (TLS, default port 8883)."""
        parts = urlsplit(url)
        if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname:
            raise ConfigError(
                f"broker URL {url!r}: expected mqtt://host[:port] or mqtts://host[:port]"
            )
        try:
            port = parts.port
        except ValueError as exc:
            raise ConfigError(f"broker URL {url!r}: bad port") from exc
        tls = parts.scheme == "mqtts"
        return cls(
            host=parts.hostname,
            port=port or (8883 if tls else 1883),
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password else None,
            tls=tls,
            ca_file=ca_file,
        )

    @classmethod
    def from_login(cls, path: Path, *, tls: bool = False) -> BrokerAddress:
        """A login file from ``fleet broker credentials`` (``<identity>/mqtt.toml``).

        ``[mqtt]`` holds host, port, username and password; with ``tls`` the ``[tls]`` table's
        port and certificate files are used instead (paths relative to the file).
        """
        root = Table.root(path)
        mqtt = root.table("mqtt")
        address = cls(
            host=mqtt.string("host"),
            port=mqtt.integer("port", "TCP port", ge=1, le=65535),
            username=mqtt.string("username"),
            password=mqtt.string("password"),
        )
        mqtt.finish()
        table = root.table("tls", optional=True)
        if root.has("tls"):
            tls_port = table.integer("port", "TCP port", ge=1, le=65535)
            files = {k: str(table.path(k)) for k in ("ca_file", "cert_file", "key_file")}
            table.finish()
            if tls:
                address = replace(address, port=tls_port, tls=True, **files)
        elif tls:
            raise root.error("tls", "this login has no [tls] table (made without --tls?)")
        root.finish()
        return address

    def __str__(self) -> str:
        who = f"{self.username}@" if self.username else ""
        return f"{'mqtts' if self.tls else 'mqtt'}://{who}{self.host}:{self.port}"


@dataclass(frozen=True, slots=True)
class Will:
    topic: str
    payload: bytes
    qos: int = 1
    retain: bool = True


class MqttLink:
    def __init__(
        self,
        address: BrokerAddress,
        *,
        client_id: str,
        will: Will | None = None,
        max_pending: int = 100_000,
        keepalive_s: int = 30,
    ) -> None:
        self.address = address
        self.client_id = client_id
        self.dropped = 0
        self._queue: asyncio.Queue[aiomqtt.Message] | None = None
        link = self

        class _CountingQueue(asyncio.Queue[aiomqtt.Message]):
            def __init__(self, maxsize: int = 0) -> None:
                super().__init__(maxsize)
                link._queue = self

            def put_nowait(self, item: aiomqtt.Message) -> None:
                try:
                    super().put_nowait(item)
                except asyncio.QueueFull:
                    link.dropped += 1
                    raise

        tls_context = None
        if address.tls:
            try:
                tls_context = ssl.create_default_context(cafile=address.ca_file)
                if address.cert_file:
                    tls_context.load_cert_chain(address.cert_file, address.key_file)
            except (OSError, ssl.SSLError) as exc:
                raise ConfigError(f"TLS files for {address}: {exc}") from exc
        self._client = aiomqtt.Client(
            address.host,
            address.port,
            username=address.username,
            password=address.password,
            identifier=client_id,
            will=aiomqtt.Will(will.topic, will.payload, will.qos, will.retain) if will else None,
            clean_session=True,
            keepalive=keepalive_s,
            queue_type=_CountingQueue,
            max_queued_incoming_messages=max_pending,
            max_inflight_messages=MAX_PUBLISHES_IN_FLIGHT,  # paho would queue past 20
            socket_options=NODELAY,
            tls_context=tls_context,
            logger=logging.getLogger(f"{__name__}.aiomqtt"),
        )
        # We bound unacknowledged publishes ourselves; aiomqtt would warn from 10 on.
        self._client.pending_calls_threshold = MAX_PUBLISHES_IN_FLIGHT
        # paho looks up per-filter callbacks for every incoming message with a recursive
        # closure: a reference cycle per message, garbage only the cyclic collector frees.
        # aiomqtt registers no such callbacks, so the lookup always finds none: skip it.
        self._client._client._on_message_filtered = _NoFilteredCallbacks()  # type: ignore[assignment]
        self._inflight: deque[paho_mqtt.MQTTMessageInfo] = deque()  # QoS 1, oldest first
        self.publish_errors = 0

    async def __aenter__(self) -> MqttLink:
        try:
            await self._client.__aenter__()
        except aiomqtt.MqttError as exc:
            raise LinkError(f"cannot connect to the broker at {self.address}: {exc}") from exc
        paho = self._client._client
        sock = paho.socket()
        if isinstance(sock, socket.socket) and not isinstance(sock, ssl.SSLSocket):
            paho._sock = _ReadAhead(sock)
        log.info("connected to %s as %s", self.address, self.client_id)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            await self._client.__aexit__(exc_type, exc, tb)
        except aiomqtt.MqttError as error:
            log.debug("disconnect from %s: %s", self.address, error)

    async def _call(self, what: str, call: Callable[[], Awaitable[object]]) -> None:
        try:
            await call()
        except aiomqtt.MqttError as exc:
            raise LinkError(f"{what} on {self.address}: {exc}") from exc

    async def subscribe(self, topic_filter: str, qos: int = 1) -> None:
        """Subscribe; a subscription the broker refuses (its ACL) is a :class:`LinkError`."""
        what = f"subscribe {topic_filter}"
        try:
            granted = await self._client.subscribe(topic_filter, qos=qos)
        except aiomqtt.MqttError as exc:
            raise LinkError(f"{what} on {self.address}: {exc}") from exc
        codes = [getattr(g, "value", g) for g in (granted or ())]
        if any(isinstance(c, int) and c >= 0x80 for c in codes):
            user = self.address.username or "(anonymous)"
            raise SubscriptionRefused(
                f"the broker {self.address} refused user {user!r} the topic {topic_filter} "
                "(its ACL): this login may not read it"
            )

    async def publish(
        self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False
    ) -> None:
        """Publish and wait until the broker has it (PUBACK for QoS 1)."""
        await self._call(
            f"publish {topic}",
            lambda: self._client.publish(topic, payload, qos=qos, retain=retain),
        )

    async def publish_soon(
        self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False
    ) -> None:
        """Hand the message to the socket now, in call order; its PUBACK is not awaited.

        The packet is queued with paho and written before this returns (nothing else on the
        event loop runs first: an order is never held up behind a batch of incoming states).
        Waits only while ``MAX_PUBLISHES_IN_FLIGHT`` QoS 1 publishes are unacknowledged. A
        publish the client refuses (the link is down) is counted and logged, not raised: the
        receive side reports the lost link, and the controller re-sends what is unconfirmed.
        """
        inflight = self._inflight
        while inflight and inflight[0].is_published():
            inflight.popleft()
        while len(inflight) >= MAX_PUBLISHES_IN_FLIGHT:
            await asyncio.sleep(BACKPRESSURE_POLL_S)
            while inflight and inflight[0].is_published():
                inflight.popleft()
        # aiomqtt's publish() would do the same call one event-loop turn later, from a task
        # (aiomqtt ignores the PUBACK of a message id it did not send itself).
        info = self._client._client.publish(topic, payload, qos=qos, retain=retain)
        if info.rc != paho_mqtt.MQTT_ERR_SUCCESS:
            self.publish_errors += 1
            log.warning("publish to %s failed: %s", topic, paho_mqtt.error_string(info.rc))
            return
        if qos:
            inflight.append(info)
        self._write_now()

    def _write_now(self) -> None:
        """Hand queued packets to the socket now rather than at the loop's next turn.

        aiomqtt writes when the event loop reports the socket writable, which is only after
        the caller next awaits something that blocks: a burst of orders signed and queued one
        after another would leave together, late. paho's ``loop_write`` sends without
        blocking and re-registers the socket for writing if the kernel took only part.
        """
        paho = self._client._client  # aiomqtt's paho client (aiomqtt pinned <3)
        try:
            paho.loop_write()
        except OSError as exc:  # the read side notices and reports the broken link
            log.debug("write to %s: %s", self.address, exc)
        if not paho.want_write():
            # paho asked aiomqtt to watch the socket for writing, and aiomqtt adds that
            # watch at the loop's next turn, after the unregister we just caused: drop it
            # then, or the loop would spin on an always-writable socket.
            asyncio.get_running_loop().call_soon(self._drop_idle_writer)

    def _drop_idle_writer(self) -> None:
        paho = self._client._client
        sock = paho.socket()
        if sock is not None and not paho.want_write():
            asyncio.get_running_loop().remove_writer(sock.fileno())

    async def receive(self, max_batch: int = 1000) -> list[tuple[str, bytes]]:
        """Wait for at least one message; return it with any others already queued."""
        try:
            first = await anext(self._client.messages)
        except aiomqtt.MqttError as exc:
            raise LinkError(f"lost the broker at {self.address}: {exc}") from exc
        batch = [first]
        queue = self._queue
        while queue is not None and len(batch) < max_batch and not queue.empty():
            batch.append(queue.get_nowait())
        return [(m.topic.value, _payload_bytes(m.payload)) for m in batch]


class _NoFilteredCallbacks:
    """Stands in for paho's topic-filter callback table, which aiomqtt leaves empty.

    Measured on the load benchmark (1,000 states/s): paho's lookup made ~6 objects of cyclic
    garbage per message, and collecting them paused the controller 5-30 ms several times a
    second, the longest waits an order's round trip met.
    """

    def iter_match(self, topic: str) -> tuple[()]:
        return ()

    def __setitem__(self, topic_filter: str, callback: object) -> None:
        raise ControlError("MqttLink takes no per-filter callbacks; use receive()")


class _ReadAhead:
    """The client's TCP socket, read in large chunks.

    paho reads a packet with three or more ``recv`` calls (1 byte, the length byte by byte,
    the rest) and only one packet per readiness event; under a thousand states a second that
    is most of the controller's CPU. This wrapper fetches up to 256 KiB per system call and
    serves paho's small reads from it; ``pending()`` tells aiomqtt's read callback (written
    for TLS sockets, which buffer the same way) to keep reading packets until the chunk is
    used up, so one readiness event handles everything that has arrived.
    """

    CHUNK = 256 * 1024

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._buffer = b""
        self._at = 0

    def recv(self, buffer_size: int) -> bytes:
        size = buffer_size
        if self._at >= len(self._buffer):
            data = self._sock.recv(self.CHUNK)  # BlockingIOError when nothing has arrived
            if not data:
                return b""  # the broker closed the connection
            self._buffer, self._at = data, 0
        end = self._at + size
        out = self._buffer[self._at : end]
        self._at = end
        return out

    def pending(self) -> int:
        return max(0, len(self._buffer) - self._at)

    def send(self, buffer: bytes | bytearray) -> int:
        return self._sock.send(buffer)

    def close(self) -> None:
        self._sock.close()

    def fileno(self) -> int:
        return self._sock.fileno()

    def setblocking(self, flag: bool) -> None:
        self._sock.setblocking(flag)


def _payload_bytes(payload: object) -> bytes:
    if isinstance(payload, bytes):
        return payload
    if isinstance(payload, bytearray):
        return bytes(payload)
    if isinstance(payload, str):
        return payload.encode("utf-8")
    if payload is None:
        return b""
    return str(payload).encode("utf-8")
