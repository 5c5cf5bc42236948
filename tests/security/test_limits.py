"""The limits of docs/security.md ("Limits"), each held where it is enforced.

Sizes: every message type has a byte limit checked before parsing. Rates: a flooding van is
throttled without touching another van's allowance. Queues: every buffer a peer can fill
has a bound and says when it dropped something.
"""

from __future__ import annotations

import asyncio

import aiomqtt
import pytest

from firmware_bridge import wire
from firmware_bridge.bridge.core import RECENT_ERRORS, BridgeCore, PublishState
from firmware_bridge.errors import LinkError
from firmware_bridge.link import LinkConfig, LinkCore
from fleet.control.limits import RateLimiter
from fleet.mqtt import BrokerAddress, MqttLink
from fleet.protocol import (
    MAX_PAYLOAD_BYTES,
    CommandVerifier,
    DecodeError,
    decode,
    derive_van_key,
    encode,
)
from tests.support import protocol_examples as ex
from tests.support.brokers import BrokerEndpoint

KEY = derive_van_key(ex.MASTER_SECRET, ex.VAN)


@pytest.mark.parametrize("model", list(MAX_PAYLOAD_BYTES), ids=lambda m: m.__name__)
def test_every_message_type_refuses_a_payload_over_its_limit_before_parsing(
    model: type,
) -> None:
    limit = MAX_PAYLOAD_BYTES[model]
    # one byte over: refused by size, although it is not even JSON
    with pytest.raises(DecodeError) as over:
        decode(model, b"x" * (limit + 1), topic="t")
    assert over.value.reason == "oversized" and str(limit) in str(over.value)
    # at the limit: parsed (and refused for what it is)
    with pytest.raises(DecodeError) as at:
        decode(model, b"x" * limit, topic="t")
    assert at.value.reason == "malformed_json"


def test_the_largest_messages_fit_their_limits() -> None:
    """The limits leave room for real traffic: a long day's order (400 stops) and the
    state of a van with 500 parcels aboard pass with a wide margin."""
    order = ex.order(stops=400)
    assert len(encode(order)) < MAX_PAYLOAD_BYTES[type(order)]
    state = ex.state(
        load=ex.state().load.model_copy(
            update={"parcel_ids": tuple(f"PARCEL-{i:06d}" for i in range(500))}
        )
    )
    assert len(encode(state)) < MAX_PAYLOAD_BYTES[type(state)] // 8


def test_a_flooding_van_cannot_take_another_vans_allowance() -> None:
    limiter = RateLimiter(rate_per_s=20.0, burst=40)
    passed = sum(limiter.allow("FLOODER", 1000.0) for _ in range(10_000))
    assert passed == 40  # the burst, then nothing until tokens come back
    assert all(limiter.allow("QUIET", 1000.0) for _ in range(40))  # untouched
    assert limiter.take_dropped() == {"FLOODER": 10_000 - 40}  # reported, per van
    # one second later the flooder has 20 more, no more
    assert sum(limiter.allow("FLOODER", 1001.0) for _ in range(1000)) == 20


def test_a_flood_of_bad_commands_keeps_the_vans_state_bounded() -> None:
    core = BridgeCore(ex.VAN, CommandVerifier(ex.VAN, [KEY]), mission_ids=1)
    core.on_link_up()  # the bridge publishes states once its VCU has reported
    core.on_telemetry(
        wire.Telemetry(
            uptime_ms=1, lon_e7=-86110000, lat_e7=411496000, heading_cdeg=0, speed_cmps=0,
            soc_cpct=8000, range_m=100_000, odometer_m=0, mission_id=0, last_wp=wire.WP_NONE,
            wp_queued=0, drive_state=wire.DriveState.IDLE, door=wire.DoorState.CLOSED,
            fault_bits=0, estop_id=0,
        ),
        ex.NOW_S - 1,
    )  # fmt: skip
    states = []
    for i in range(5000):
        states += [
            a.state
            for a in core.on_instant_payload(encode(ex.instant(message_id=i)), ex.NOW_S + i)
            if isinstance(a, PublishState)
        ]
    assert len(states) == 5000  # every refusal is reported ...
    refusals = [sum(e.error_type == "signature_error" for e in s.errors) for s in states]
    assert max(refusals) == RECENT_ERRORS  # ... in a bounded list
    # beside them only the conditions that hold (the VCU's telemetry, 1 s old, is stale)
    assert max(len(s.errors) for s in states) <= RECENT_ERRORS + 1
    assert core.refused == 5000 and core.accepted == 0


def test_the_serial_decoder_holds_at_most_one_frame_of_garbage() -> None:
    decoder = wire.FrameDecoder()
    for _ in range(1000):
        assert decoder.feed(b"\x01" * 10_000) == []
        assert decoder.pending_bytes <= wire.MAX_WIRE_BYTES
    (fault,) = decoder.feed(b"\x00")
    assert isinstance(fault, wire.FrameFault) and fault.kind is wire.FaultKind.OVERSIZE
    frame = wire.encode_frame(wire.Heartbeat(uptime_ms=1), seq=0, ack=0)
    (ok,) = decoder.feed(frame)  # and it decodes the next frame as usual
    assert isinstance(ok, wire.Frame)


def test_the_serial_link_queue_is_bounded() -> None:
    link = LinkCore(LinkConfig(wire.Role.BRIDGE, max_queue=64), new_session=lambda: 7)
    link.start(0.0)
    for _ in range(64):
        link.send(wire.Door(open=True), 0.0)
    with pytest.raises(LinkError, match="queue full"):
        link.send(wire.Door(open=False), 0.0)
    assert link.queued == 64


def test_the_controllers_incoming_queue_is_bounded_and_counts_what_it_drops(
    broker: BrokerEndpoint,
) -> None:
    topic = broker.prefix + "fleet/v1/vans/X/state"

    async def run() -> tuple[int, list[bytes]]:
        async with asyncio.timeout(30):
            link = MqttLink(
                BrokerAddress(broker.host, broker.port), client_id="limits-ctl", max_pending=10
            )
            async with link, aiomqtt.Client(broker.host, broker.port) as van:
                await link.subscribe(topic, qos=1)
                for i in range(200):  # the controller is not reading meanwhile
                    await van.publish(topic, str(i).encode(), qos=1)
                got = [p for _, p in await link.receive()]
                await van.publish(topic, b"marker", qos=1)
                while b"marker" not in got:
                    got += [p for _, p in await link.receive()]
                return link.dropped, got

    dropped, got = asyncio.run(run())
    assert dropped > 0
    assert dropped + len(got) == 201  # every message was either kept or counted as dropped
