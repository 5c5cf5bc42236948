"""A cancelled request is cancelled, even when its reply lands in the same turn of the loop.

Before: ``asyncio.wait_for`` (Python 3.11) returned that reply and dropped the cancellation,
so Ctrl-C on ``fleet status --watch`` now and then went unheeded until the 3 s backstop.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from fleet.control.client import ControllerClient
from fleet.mqtt import BrokerAddress
from fleet.protocol import ConnectionState, make_header
from fleet.protocol.control_api import Reply, StatusBody


def test_a_request_cancelled_as_its_reply_arrives_is_cancelled() -> None:
    async def scenario() -> None:
        client = ControllerClient(BrokerAddress("127.0.0.1", 1), timeout_s=5)
        client._controller = ConnectionState.ONLINE  # as if its retained message was read
        client._controller_heard.set()
        published: list[str] = []

        async def publish(topic: str, payload: bytes, *, qos: int = 1) -> None:
            published.append(topic)

        client._link.publish = publish  # type: ignore[method-assign]  # no broker needed
        task = asyncio.create_task(client.request(StatusBody()))
        for _ in range(10):  # until it waits for its reply
            await asyncio.sleep(0)
            if client._pending:
                break
        assert published and client._pending
        (request_id, future), *_ = client._pending.items()
        reply = Reply(header=make_header("ctl", 1, time.time()), request_id=request_id, ok=False)
        future.set_result(reply)  # the reply arrives ...
        task.cancel()  # ... and Ctrl-C, in the same turn of the loop
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(asyncio.wait_for(scenario(), 10))
