#!/usr/bin/env python3
"""How long `fleet status` waits while the controller takes in a large request.

    python benchmarks/large_request.py                 # a 15 MiB dispatch, Mosquitto on :1883
    python benchmarks/large_request.py --mib 8 --rounds 5
    python benchmarks/large_request.py --inline        # decoded on the loop, as before

A controller (the real service, with a plan book standing in for the planner) runs against
the broker on 127.0.0.1:1883 under a private topic prefix. A dispatcher asks for the fleet's
status every 50 ms; meanwhile another client publishes a dispatch request of ``--mib`` MiB
(a plan of that size, well-formed, under the 16 MiB bound of docs/limits.md). Reported: the
status round trip with no large request (idle) and while one is taken in (loaded), and how
long the large request itself took to be answered. Before issue 15 such a request was
decoded on the event loop that relays emergency stops; now one over 64 KiB is decoded in a
worker thread — pydantic still holds the GIL for parts of it, so the loaded figure is the
honest measure of what remains.

Prints a table, then one JSON line: ``{"request_mib": M, "idle_p50_ms": …, "idle_max_ms":
…, "loaded_p50_ms": …, "loaded_max_ms": …, "large_reply_s": …}``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import aiomqtt  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from fleet.control import intake  # noqa: E402
from fleet.control.client import ControllerClient  # noqa: E402
from fleet.mqtt import BrokerAddress  # noqa: E402
from fleet.protocol import make_header  # noqa: E402
from fleet.protocol.control_api import StatusBody  # noqa: E402
from tests.control.service_support import PlanBook, running_controller  # noqa: E402
from tests.support.brokers import BrokerEndpoint  # noqa: E402


def big_request(mib: float, client_id: str) -> bytes:
    routes = []
    size = 0
    i = 0
    while size < mib * 1024 * 1024:
        stops = [
            {
                "seq": j,
                "node": 10_000 + j,
                "lon": -8.6 + j * 1e-5,
                "lat": 41.15,
                "arrival_s": 3600.0 + j,
            }
            for j in range(40)
        ]
        route = {"van_id": f"V-{i}", "stops": stops}
        size += len(json.dumps(route))
        routes.append(route)
        i += 1
    header = make_header(client_id, 1, time.time()).model_dump(mode="json")
    body = {"command": "dispatch", "plan": {"name": "none", "routes": routes}, "orders_csv": ""}
    return json.dumps(
        {"header": header, "request_id": "big-1", "client_id": client_id, "body": body}
    ).encode()


async def status_times(client: ControllerClient, until: asyncio.Event) -> list[float]:
    times = []
    while not until.is_set():
        started = time.perf_counter()
        await client.request(StatusBody())
        times.append(time.perf_counter() - started)
        await asyncio.sleep(0.05)  # the dispatcher's refresh period
    return times


async def run(mib: float, rounds: int) -> dict[str, float]:
    broker = BrokerEndpoint("mosquitto", "127.0.0.1", 1883, f"bench/{uuid.uuid4().hex[:10]}/")
    address = BrokerAddress(broker.host, broker.port)
    payload = big_request(mib, "bench-big")
    with tempfile.TemporaryDirectory() as tmp:
        async with (
            running_controller(broker, Path(tmp) / "fleet.db", PlanBook()),
            ControllerClient(address, topics=broker.topics) as client,
            aiomqtt.Client(broker.host, broker.port, identifier="bench-big") as big,
        ):
            await big.subscribe(broker.topics.controller_reply("bench-big"), qos=1)
            idle_done = asyncio.Event()
            asyncio.get_running_loop().call_later(2.0, idle_done.set)
            idle = await status_times(client, idle_done)
            loaded: list[float] = []
            replies: list[float] = []
            for _ in range(rounds):
                answered = asyncio.Event()
                watcher = asyncio.create_task(status_times(client, answered))
                started = time.perf_counter()
                await big.publish(broker.topics.controller_request, payload, qos=1)
                async for _message in big.messages:
                    break
                replies.append(time.perf_counter() - started)
                answered.set()
                loaded += await watcher
    return {
        "request_mib": round(len(payload) / 2**20, 1),
        "idle_p50_ms": round(statistics.median(idle) * 1000, 1),
        "idle_max_ms": round(max(idle) * 1000, 1),
        "loaded_p50_ms": round(statistics.median(loaded) * 1000, 1),
        "loaded_max_ms": round(max(loaded) * 1000, 1),
        "large_reply_s": round(statistics.median(replies), 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mib", type=float, default=15.0, help="size of the large request")
    parser.add_argument("--rounds", type=int, default=3, help="large requests to send")
    parser.add_argument(
        "--inline", action="store_true", help="decode every request on the loop (as before)"
    )
    args = parser.parse_args()
    if args.inline:
        intake.INLINE_BYTES = intake.MAX_REQUEST_BYTES
    result = asyncio.run(run(args.mib, args.rounds))
    table = Table(title=f"fleet status while a {result['request_mib']} MiB request is taken in")
    for col in ("", "p50 ms", "max ms"):
        table.add_column(col, justify="right" if col else "left")
    table.add_row("status, idle", f"{result['idle_p50_ms']}", f"{result['idle_max_ms']}")
    table.add_row("status, loaded", f"{result['loaded_p50_ms']}", f"{result['loaded_max_ms']}")
    Console().print(table)
    print(f"the large request was answered in {result['large_reply_s']} s (median)")
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
