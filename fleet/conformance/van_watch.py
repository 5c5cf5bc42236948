"""The kit's view of one van on the broker: everything it publishes, recorded as it arrives,
and a way to publish commands to it (``fleet.mqtt`` is the MQTT adapter).

Every message from the van's ``state``, ``connection`` and ``factsheet`` topics is decoded
and kept with its arrival time (a payload that does not decode is kept too, with the
reason). Cases wait for "a state after this point that satisfies this" with a timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import TypeVar

from fleet.mqtt import BrokerAddress, BrokerError, MqttLink
from fleet.protocol import (
    Connection,
    DecodeError,
    Factsheet,
    State,
    Topics,
    VanTopic,
    decode,
)

log = logging.getLogger(__name__)

M = TypeVar("M", State, Connection, Factsheet)
KEEPALIVE_S = 30


class KitError(Exception):
    """A case cannot go on: what was expected and what was seen instead."""


@dataclass(frozen=True, slots=True)
class Seen:
    """One message from the van, as it arrived."""

    at_s: float  # the kit's monotonic clock
    kind: VanTopic
    message: State | Connection | Factsheet | None
    problem: str = ""  # why it did not decode, or what is wrong with where it came


def client_id() -> str:
    return f"fleet-conformance-{uuid.uuid4().hex[:12]}"


class VanWatch:
    """``async with VanWatch(address, topics, van_id) as watch:`` — subscribed and recording."""

    def __init__(self, address: BrokerAddress, topics: Topics, van_id: str) -> None:
        self.address = address
        self.topics = topics
        self.van_id = van_id
        self.seen: list[Seen] = []
        self.lost: BrokerError | None = None
        self._link = MqttLink(address, client_id=client_id(), keepalive_s=KEEPALIVE_S)
        self._changed = asyncio.Event()
        self._reader: asyncio.Task[None] | None = None

    async def __aenter__(self) -> VanWatch:
        await self._link.__aenter__()
        for kind in (VanTopic.CONNECTION, VanTopic.FACTSHEET):
            await self._link.subscribe(self.topics.van(self.van_id, kind), qos=1)
        await self._link.subscribe(self.topics.van(self.van_id, VanTopic.STATE), qos=0)
        self._reader = asyncio.create_task(self._read(), name="conformance-reader")
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        await self._link.__aexit__(exc_type, exc, tb)

    # -- recording ------------------------------------------------------------------------

    async def _read(self) -> None:
        try:
            while True:
                for topic, payload in await self._link.receive():
                    self._record(topic, payload)
                self._changed.set()
        except BrokerError as exc:
            self.lost = exc
            self._changed.set()

    def _record(self, topic: str, payload: bytes) -> None:
        now = time.monotonic()
        try:
            van_id, kind = self.topics.parse_van(topic)
        except Exception as exc:  # a topic we did not subscribe to: the broker's doing
            log.warning("unexpected topic %s: %s", topic, exc)
            return
        if not payload and kind is not VanTopic.STATE:
            return  # a retained message cleared
        try:
            message: State | Connection | Factsheet
            if kind is VanTopic.STATE:
                message = decode(State, payload, topic=topic)
            elif kind is VanTopic.CONNECTION:
                message = decode(Connection, payload, topic=topic)
            else:
                message = decode(Factsheet, payload, topic=topic)
        except DecodeError as exc:
            self.seen.append(Seen(now, kind, None, str(exc)))
            return
        problem = ""
        if message.van_id != van_id:
            problem = f"{topic}: carries van_id {message.van_id!r}"
        elif message.header.sender != van_id:
            problem = f"{topic}: header.sender is {message.header.sender!r}, not the van id"
        self.seen.append(Seen(now, kind, message, problem))

    # -- reading --------------------------------------------------------------------------

    def mark(self) -> int:
        """A point in the record: waits "after" it see only what arrived later."""
        return len(self.seen)

    def messages(self, model: type[M], after: int = 0) -> list[tuple[float, M]]:
        return [(s.at_s, s.message) for s in self.seen[after:] if isinstance(s.message, model)]

    def latest(self, model: type[M]) -> M | None:
        for s in reversed(self.seen):
            if isinstance(s.message, model):
                return s.message
        return None

    async def wait_for(
        self,
        model: type[M],
        check: Callable[[M], bool],
        *,
        after: int,
        timeout_s: float,
        what: str,
    ) -> M:
        """The first ``model`` message after ``after`` for which ``check`` holds."""
        cursor = after
        deadline = time.monotonic() + timeout_s
        while True:
            for s in self.seen[cursor:]:
                if isinstance(s.message, model) and check(s.message):
                    return s.message
            cursor = len(self.seen)
            if self.lost is not None:
                raise KitError(f"the kit lost the broker: {self.lost}")
            left = deadline - time.monotonic()
            if left <= 0:
                raise KitError(f"{what}: not seen within {timeout_s:g} s{self._last_seen(model)}")
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(left):
                    await self._changed.wait()

    async def watch(self, model: type[M], check: Callable[[M], str], *, for_s: float) -> None:
        """Every ``model`` message for ``for_s`` seconds from now must pass ``check`` (which
        returns "" or what is wrong); the first one that does not is a :class:`KitError`."""
        start = self.mark()
        await asyncio.sleep(for_s)  # observing for a span of time is the point here
        for _, message in self.messages(model, start):
            problem = check(message)
            if problem:
                raise KitError(problem)
        if self.lost is not None:
            raise KitError(f"the kit lost the broker: {self.lost}")

    def _last_seen(self, model: type[M]) -> str:
        last = self.latest(model)
        if last is None:
            return f" (no {model.__name__} from the van at all)"
        if isinstance(last, State):
            return f" (last state: {describe_state(last)})"
        if isinstance(last, Connection):
            return f" (last connection message: {last.connection_state.value})"
        return ""

    # -- commands and probes -----------------------------------------------------------------

    async def publish(self, kind: VanTopic, payload: bytes) -> None:
        """A command to the van, QoS 1, not retained; returns when the broker has it."""
        await self._link.publish(self.topics.van(self.van_id, kind), payload, qos=1)

    async def probe_retained(self, for_s: float) -> list[Connection | Factsheet]:
        """What a fresh subscriber is handed for the van's connection and factsheet topics:
        only retained messages arrive within ``for_s`` (the van publishes them at connect)."""
        got: list[Connection | Factsheet] = []
        async with MqttLink(self.address, client_id=client_id(), keepalive_s=KEEPALIVE_S) as link:
            await link.subscribe(self.topics.van(self.van_id, VanTopic.CONNECTION), qos=1)
            await link.subscribe(self.topics.van(self.van_id, VanTopic.FACTSHEET), qos=1)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(for_s):
                    while True:
                        for topic, payload in await link.receive():
                            if not payload:
                                continue
                            _, kind = self.topics.parse_van(topic)
                            with contextlib.suppress(DecodeError):
                                if kind is VanTopic.CONNECTION:
                                    got.append(decode(Connection, payload, topic=topic))
                                else:
                                    got.append(decode(Factsheet, payload, topic=topic))
        return got


def describe_state(state: State) -> str:
    errors = ", ".join(
        f"{e.error_type}({'/'.join(r.value for r in e.references if r.key == 'reason')})"
        for e in state.errors
    )
    return (
        f"order {state.order_id} update {state.order_update_id}, last node "
        f"{state.last_node_sequence_id}, driving={state.driving}, speed {state.speed_mps:g} m/s, "
        f"paused={state.paused}, emergency_stop={state.emergency_stop}, errors [{errors}]"
    )
