"""A protocol-level van on a real broker: verifies signed commands, obeys, reports state.

It wraps :class:`ProtocolVan` with an aiomqtt client (optionally through a
:class:`CuttableLink`, for link losses), announces itself ONLINE (retained) with a last will
of CONNECTION_BROKEN, checks every command with the van's key exactly as the bridge must
(a refused one is reported in state as a ``signature_error`` or ``validation_error``), and
publishes its state after every command and whenever the test calls :meth:`report`.
"""

from __future__ import annotations

import asyncio
import contextlib
from types import TracebackType

import aiomqtt

from fleet.protocol import (
    CommandVerifier,
    Connection,
    ConnectionState,
    DecodeError,
    ErrorLevel,
    ErrorReference,
    InstantActions,
    Order,
    SignatureError,
    Topics,
    VanError,
    VanTopic,
    decode,
    derive_van_key,
    encode,
    make_header,
)
from fleet.protocol.clock import Clock, WallClock
from tests.support.protocol_van import ProtocolVan


class MqttVan:
    def __init__(
        self,
        van: ProtocolVan,
        host: str,
        port: int,
        topics: Topics,
        master_secret: bytes,
        *,
        clock: Clock | None = None,
    ) -> None:
        self.van = van
        self.host, self.port = host, port
        self.topics = topics
        self.clock = clock or WallClock()
        self.verifier = CommandVerifier(van.van_id, [derive_van_key(master_secret, van.van_id)])
        self.rejected: list[str] = []  # reasons of refused commands
        self.rejected_details: list[str] = []
        self.foreign: list[str] = []  # topics received but never subscribed
        self.orders: list[Order] = []
        self.changed = asyncio.Event()  # set whenever a command was applied
        self._client: aiomqtt.Client | None = None
        self._reader: asyncio.Task[None] | None = None
        self._seq = 0

    def _connection(self, state: ConnectionState) -> bytes:
        self._seq += 1
        return encode(
            Connection(
                header=make_header(self.van.van_id, self._seq, self.clock.time()),
                van_id=self.van.van_id,
                connection_state=state,
            )
        )

    async def __aenter__(self) -> MqttVan:
        topic = self.topics.van(self.van.van_id, VanTopic.CONNECTION)
        will = aiomqtt.Will(topic, self._connection(ConnectionState.CONNECTION_BROKEN), 1, True)
        self._client = aiomqtt.Client(
            self.host, self.port, identifier=f"van-{self.van.van_id}", will=will, keepalive=5
        )
        await self._client.__aenter__()
        await self._client.subscribe(self.topics.van(self.van.van_id, VanTopic.ORDER), qos=1)
        await self._client.subscribe(self.topics.van(self.van.van_id, VanTopic.INSTANT), qos=1)
        await self._client.publish(
            topic, self._connection(ConnectionState.ONLINE), qos=1, retain=True
        )
        self._reader = asyncio.create_task(self._read())
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._client is not None
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, aiomqtt.MqttError):
                await self._reader
        with contextlib.suppress(aiomqtt.MqttError):
            topic = self.topics.van(self.van.van_id, VanTopic.CONNECTION)
            await self._client.publish(
                topic, self._connection(ConnectionState.OFFLINE), qos=1, retain=True
            )
            await self._client.publish(topic, b"", qos=1, retain=True)
        with contextlib.suppress(aiomqtt.MqttError):
            await self._client.__aexit__(exc_type, exc, tb)

    async def _read(self) -> None:
        assert self._client is not None
        order_topic = self.topics.van(self.van.van_id, VanTopic.ORDER)
        instant_topic = self.topics.van(self.van.van_id, VanTopic.INSTANT)
        async for message in self._client.messages:
            payload = bytes(message.payload)  # type: ignore[arg-type]
            topic = message.topic.value
            try:
                command: Order | InstantActions
                if topic == order_topic:
                    command = decode(Order, payload, topic=topic)
                elif topic == instant_topic:
                    command = decode(InstantActions, payload, topic=topic)
                else:  # not ours: the broker should not have sent it
                    self.foreign.append(topic)
                    continue
                self.verifier.verify(command, self.clock.time(), topic=message.topic.value)
            except (DecodeError, SignatureError) as exc:
                self.rejected.append(exc.reason)
                self.rejected_details.append(str(exc))
                # reported in state as docs/protocol.md says (section 6, section 9)
                kind = "signature_error" if isinstance(exc, SignatureError) else "validation_error"
                refs = [ErrorReference(key="reason", value=exc.reason)]
                if isinstance(exc, SignatureError) and exc.message_id is not None:
                    refs.append(ErrorReference(key="message_id", value=str(exc.message_id)))
                self.van.errors.append(
                    VanError(
                        error_type=kind,
                        level=ErrorLevel.WARNING,
                        description=str(exc)[:500],
                        references=tuple(refs),
                    )
                )
                await self.report()
                continue
            if isinstance(command, Order):
                self.orders.append(command)
                self.van.receive_order(command)
            else:
                self.van.receive_instant(command)
            await self.report()
            self.changed.set()

    async def report(self) -> None:
        assert self._client is not None
        state = self.van.state(self.clock.time())
        await self._client.publish(
            self.topics.van(self.van.van_id, VanTopic.STATE), encode(state), qos=0
        )

    async def heartbeat(self, interval_s: float) -> None:
        """Report state every ``interval_s`` like a running van (run as a task)."""
        with contextlib.suppress(aiomqtt.MqttError):  # ends when the van disconnects
            while True:
                await self.report()
                await asyncio.sleep(interval_s)  # the van's reporting period

    async def drive(self, steps: int = 1) -> int:
        moved = 0
        for _ in range(steps):
            if not self.van.step():
                break
            moved += 1
            await self.report()
        return moved

    async def wait_for(self, condition: object, timeout_s: float = 10.0) -> None:
        """Wait until ``condition()`` holds, re-checking after every applied command."""
        check = condition  # a zero-argument callable returning bool
        async with asyncio.timeout(timeout_s):
            while not check():  # type: ignore[operator]
                self.changed.clear()
                await self.changed.wait()
