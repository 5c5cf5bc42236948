"""Vans for the van kit to test: the tests' protocol van running on its own, and a variant
that still has the defect of issue 14 item 1 (a safer command refused for bookkeeping)."""

from __future__ import annotations

import asyncio
import contextlib
from types import TracebackType

import aiomqtt

from fleet.protocol import (
    CommandVerifier,
    InstantActions,
    Order,
    Rejection,
    SignatureError,
    VanTopic,
    derive_van_key,
    encode,
)
from tests.support import protocol_examples as ex
from tests.support.brokers import BrokerEndpoint
from tests.support.mqtt_van import MqttVan
from tests.support.protocol_van import ProtocolVan


class BookkeepingVerifier(CommandVerifier):
    """The rule before issue 14: an emergency stop below the counter or stamped too long
    ago is refused like any other command. The kit must catch this."""

    def verify(
        self, message: Order | InstantActions, now_s: float, *, topic: str = ""
    ) -> tuple[Rejection, ...]:
        before = self.last_message_ids
        waived = super().verify(message, now_s, topic=topic)
        if waived:
            self._last = before
            raise SignatureError(waived[0], "refused by the old rule", topic=topic)
        return waived


class RunningTestVan:
    """``async with RunningTestVan(broker, van_id):`` — ONLINE, factsheet, a state every
    ``state_period_s``, and one released stop driven every ``step_period_s``."""

    def __init__(
        self,
        broker: BrokerEndpoint,
        van_id: str,
        *,
        old_rule: bool = False,
        state_period_s: float = 0.2,
        step_period_s: float = 0.3,
    ) -> None:
        self.van = ProtocolVan(van_id)
        self.mqtt = MqttVan(self.van, broker.host, broker.port, broker.topics, ex.MASTER_SECRET)
        if old_rule:
            key = derive_van_key(ex.MASTER_SECRET, van_id)
            self.mqtt.verifier = BookkeepingVerifier(van_id, [key])
        self.state_period_s = state_period_s
        self.step_period_s = step_period_s
        self._tasks: list[asyncio.Task[None]] = []

    async def __aenter__(self) -> RunningTestVan:
        await self.mqtt.__aenter__()
        client = self.mqtt._client
        assert client is not None
        topic = self.mqtt.topics.van(self.van.van_id, VanTopic.FACTSHEET)
        await client.publish(
            topic, encode(ex.factsheet(van_id=self.van.van_id)), qos=1, retain=True
        )
        self._tasks = [
            asyncio.create_task(self.mqtt.heartbeat(self.state_period_s), name="states"),
            asyncio.create_task(self._drive(), name="drive"),
        ]
        return self

    async def _drive(self) -> None:
        with contextlib.suppress(aiomqtt.MqttError):
            while True:
                await asyncio.sleep(self.step_period_s)  # the van's pace between stops
                await self.mqtt.drive(1)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        client = self.mqtt._client
        if client is not None:
            topic = self.mqtt.topics.van(self.van.van_id, VanTopic.FACTSHEET)
            with contextlib.suppress(aiomqtt.MqttError):
                await client.publish(topic, b"", qos=1, retain=True)
        await self.mqtt.__aexit__(exc_type, exc, tb)
