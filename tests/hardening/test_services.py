"""Issue 15 at the running parts: clock skew refused, a big request decoded off the loop, and
long-running commands stop on SIGINT and SIGTERM (real subprocesses)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from fleet.control import intake
from fleet.control.client import ControllerClient
from fleet.identifiers import MAX_REQUEST_BYTES
from fleet.mqtt import BrokerAddress
from fleet.protocol import DecodeError, make_header
from fleet.protocol.control_api import EventsResult, StatusBody, StatusResult
from tests.control.harness import Harness
from tests.control.service_support import ControllerThread, PlanBook, running_controller
from tests.support import protocol_examples as ex
from tests.support.brokers import BrokerEndpoint


@pytest.mark.parametrize(("offset_s", "refused"), [(299, False), (301, True), (-86_401, True)])
def test_a_state_stamped_beyond_the_clock_skew_bounds_is_refused(
    offset_s: float, refused: bool
) -> None:
    h = Harness()
    van = next(iter(h.vans))
    state = ex.state(van_id=van, now_s=h.now_s + offset_s)
    h.core.on_state(van, state, h.now_s)
    h.pump()
    assert (h.core.counters["rejected_clock_skew"] == 1) is refused
    assert ("bad_message" in h.kinds()) is refused
    if refused:
        assert any("clock_skew" in e.detail for e in h.events if e.kind == "bad_message")


def test_a_request_over_the_bound_is_refused_before_it_is_parsed() -> None:
    payload = b"{" * (MAX_REQUEST_BYTES + 1)  # would be a recursion error if parsed
    with pytest.raises(DecodeError) as refused:
        asyncio.run(intake.decode_request(payload, "t"))
    assert refused.value.reason == "oversized"


def test_a_big_request_is_decoded_off_the_event_loop_so_status_is_answered_meanwhile(
    mosquitto: BrokerEndpoint, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The big request's decoding is held until status was answered: before, it ran on the
    loop (the e-stop relay) and status waited behind it."""
    release = threading.Event()
    real = intake.decode

    def slow_decode(model: object, payload: bytes, **kw: object) -> object:
        if len(payload) > intake.INLINE_BYTES:
            assert release.wait(20), "status was not answered while the big request decoded"
        return real(model, payload, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(intake, "decode", slow_decode)
    big = (
        b'{"header":'
        + make_header("cli-big", 1, time.time()).model_dump_json().encode()
        + b',"request_id":"big","client_id":"cli-big","body":{"command":"add_parcels",'
        + b'"orders_csv":"'
        + b"x" * (2 * intake.INLINE_BYTES)
        + b'"}}'
    )

    async def run() -> float:
        async with running_controller(mosquitto, tmp_path / "fleet.db", PlanBook()) as service:
            address = BrokerAddress(mosquitto.host, mosquitto.port)
            async with ControllerClient(address, topics=mosquitto.topics) as client:
                await client._link.publish(service.topics.controller_request, big, qos=1)
                started = time.perf_counter()
                result = await client.request(StatusBody())
                took = time.perf_counter() - started
                release.set()
                assert isinstance(result, StatusResult)
                return took

    try:
        took_s = asyncio.run(run())
    finally:
        release.set()
    assert took_s < 5


def _spawn(args: list[str]) -> subprocess.Popen[str]:
    code = "from fleet.cli.app import main; main()"
    return subprocess.Popen(
        [sys.executable, "-c", code, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "COLUMNS": "200"},
    )


def test_status_watch_and_events_follow_stop_on_sigint_and_sigterm(
    mosquitto: BrokerEndpoint, tmp_path: Path
) -> None:
    """Before: `status --watch --interval -1` busy-looped and needed SIGKILL."""
    broker = ["--broker", f"mqtt://{mosquitto.host}:{mosquitto.port}"]
    prefix = ["--topic-prefix", mosquitto.topics.prefix]
    watch = ["status", "--watch", "--interval", "0.1", *broker, *prefix]
    follow = ["events", "--follow", *broker, *prefix]
    signals = [signal.SIGINT, signal.SIGTERM, signal.SIGINT, signal.SIGTERM]
    with ControllerThread(mosquitto, tmp_path / "fleet.db", PlanBook()) as controller:
        procs = [_spawn(args) for args in (watch, watch, follow, follow)]
        try:
            service = controller.service
            assert service is not None
            deadline = time.monotonic() + 60
            while True:  # each has asked the controller (a reply to each): they are running
                asked = {
                    (r.request_id.rsplit(".", 1)[0], type(r.result))
                    for r in list(service._replies.values())
                }  # (client, what): each process is one client
                kinds = [kind for _, kind in asked]
                if kinds.count(StatusResult) >= 2 and kinds.count(EventsResult) >= 2:
                    break
                assert time.monotonic() < deadline, [p.poll() for p in procs]
                time.sleep(0.05)  # the controller's state, polled from another thread
            for p, signum in zip(procs, signals, strict=True):
                assert p.poll() is None
                p.send_signal(signum)
            for p, signum in zip(procs, signals, strict=True):
                _, err = p.communicate(timeout=10)
                assert p.returncode in (0, 130, -signum), (p.args, p.returncode, err)
                assert "Traceback" not in err
        finally:
            for p in procs:
                if p.poll() is None:
                    p.kill()


def test_status_watch_stops_promptly_on_sigint_each_time(
    mosquitto: BrokerEndpoint, tmp_path: Path
) -> None:
    """Ctrl-C on a real `fleet status --watch` that is refreshing every 0.1 s: it exits 0 well
    within the 3 s backstop (exit 130). Before, now and then a reply and the cancellation met
    in one turn of the loop, `asyncio.wait_for` kept the reply, and the watch went on until
    the backstop (`tests/control/test_client_cancel.py` pins that race down)."""
    broker = ["--broker", f"mqtt://{mosquitto.host}:{mosquitto.port}"]
    watch = ["status", "--watch", "--interval", "0.1", *broker]
    watch += ["--topic-prefix", mosquitto.topics.prefix]
    with ControllerThread(mosquitto, tmp_path / "fleet.db", PlanBook()) as controller:
        service = controller.service
        assert service is not None

        def clients() -> set[str]:
            return {r.request_id.rsplit(".", 1)[0] for r in list(service._replies.values())}

        for delay_s in (0.0, 0.15, 0.33):
            before = clients()
            proc = _spawn(watch)
            try:
                deadline = time.monotonic() + 60
                while not clients() - before:  # answered at least once: it is watching
                    assert proc.poll() is None, proc.communicate()
                    assert time.monotonic() < deadline
                    time.sleep(0.02)  # the controller's state, polled from another thread
                time.sleep(delay_s)  # somewhere in the refresh cycle
                started = time.monotonic()
                proc.send_signal(signal.SIGINT)
                _, err = proc.communicate(timeout=10)
                took_s = time.monotonic() - started
            finally:
                if proc.poll() is None:
                    proc.kill()
            assert proc.returncode == 0, (proc.returncode, err)
            assert took_s < 2.5, f"{took_s:.2f} s to stop after SIGINT"
            assert "Traceback" not in err
