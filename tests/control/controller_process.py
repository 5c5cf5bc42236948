"""A controller process for kill -9 tests: ``python -m tests.control.controller_process``.

Runs the real ControllerService (store, signing, MQTT) with the test plan book as its
planner, prints ``ready`` once serving, and stops cleanly on SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from pathlib import Path

from fleet.control.config import ControllerConfig
from fleet.control.keys import MasterKey
from fleet.control.service import ControllerService
from fleet.model import load_van_spec
from fleet.mqtt import BrokerAddress
from fleet.protocol import Topics
from fleet.protocol.clock import WallClock
from fleet.store import SqliteStore
from tests.control.harness import VAN_FILE
from tests.control.service_support import day_book
from tests.support import plans
from tests.support.protocol_examples import MASTER_SECRET


async def main(args: argparse.Namespace) -> None:
    with SqliteStore(Path(args.db)) as store:
        service = ControllerService(
            address=BrokerAddress(args.host, args.port),
            store=store,
            # the test's vans go from stop to stop (2 km) in a quarter of a second, far faster
            # than a van drives: a report the controller missed while it was down would be
            # refused as implausible progress without a tolerance as wide as the map
            config=ControllerConfig(
                name=args.name,
                release_ahead_stops=1,
                resend_first_s=0.5,
                gps_tolerance_m=100_000.0,
            ),
            van=load_van_spec(VAN_FILE),
            roster=plans.ROSTER,
            clock=WallClock(),
            master_key=MasterKey(MASTER_SECRET),
            planning=day_book(),
            topics=Topics(args.prefix),
        )
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, service.stop)
        runner = asyncio.create_task(service.run())
        await service.ready.wait()
        print("ready", flush=True)
        await runner


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--prefix", required=True)
    parser.add_argument("--db", required=True)
    parser.add_argument("--name", default="ctl-kill-test")
    asyncio.run(main(parser.parse_args()))
    sys.exit(0)
