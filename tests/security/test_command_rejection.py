"""The bridge obeys only its controller: each forged, altered, replayed, stale or
misaddressed command is refused, reported as an error in the van's state, and changes
nothing — and a genuine command right after it is obeyed (so each case can fail). A
command that only makes the van safer (emergency stop, pause, cancel) is the exception to
"stale" and "replayed": it is refused only when forged, altered or misaddressed
(docs/protocol.md, section 9).

Driven through the bridge's sans-I/O core (``firmware_bridge.bridge.core``), which the
service feeds with the raw MQTT payloads; the MQTT path end to end is in
``tests/firmware_bridge/test_bridge_e2e.py``.
"""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest

from firmware_bridge import wire
from firmware_bridge.bridge.core import (
    Action,
    BridgeCore,
    EmergencyStopSerial,
    PublishState,
    SaveCounters,
    SendSerial,
)
from fleet.protocol import (
    MAX_MESSAGE_ID,
    CommandVerifier,
    InstantActions,
    InstantActionType,
    Order,
    Rejection,
    SigningKey,
    derive_van_key,
    encode,
    sign,
)
from tests.support import protocol_examples as ex

VAN, OTHER = ex.VAN, "WH-PORTO-02"
KEY = derive_van_key(ex.MASTER_SECRET, VAN)
OTHER_KEY = derive_van_key(ex.MASTER_SECRET, OTHER)  # stolen from another van
NEXT_GENERATION = derive_van_key(ex.MASTER_SECRET, VAN, generation=2)
NOW = ex.NOW_S


def telemetry() -> wire.Telemetry:
    return wire.Telemetry(
        uptime_ms=1, lon_e7=wire.to_e7(-8.611), lat_e7=wire.to_e7(41.1496), heading_cdeg=0,
        speed_cmps=0, soc_cpct=9000, range_m=144_000, odometer_m=0, mission_id=0,
        last_wp=wire.WP_NONE, wp_queued=0, drive_state=wire.DriveState.IDLE,
        door=wire.DoorState.CLOSED, fault_bits=0, estop_id=0,
    )  # fmt: skip


def ready(counters: dict[str, int] | None = None) -> BridgeCore:
    core = BridgeCore(VAN, CommandVerifier(VAN, [KEY], last_message_ids=counters), mission_ids=1)
    core.on_link_up()
    core.on_telemetry(telemetry(), NOW)
    return core


def obeyed(actions: list[Action]) -> list[Action]:
    return [a for a in actions if isinstance(a, SendSerial | EmergencyStopSerial)]


def refusal_reasons(actions: list[Action]) -> list[str]:
    states = [a.state for a in actions if isinstance(a, PublishState)]
    assert states, "a refused command must be reported in a state at once"
    return [
        ref.value
        for e in states[-1].errors
        if e.error_type == "signature_error"
        for ref in e.references
        if ref.key == "reason"
    ]


def order(message_id: int = 10, now_s: float = NOW, van_id: str = VAN) -> Order:
    return ex.order(van_id=van_id, message_id=message_id, now_s=now_s)


def estop(message_id: int = 10, now_s: float = NOW) -> InstantActions:
    return ex.instant(InstantActionType.EMERGENCY_STOP, message_id=message_id, now_s=now_s)


def tampered(field: Callable[[dict[str, object]], None]) -> bytes:
    doc = json.loads(encode(sign(order(), KEY)))
    field(doc)
    return json.dumps(doc).encode()


def _raise_speed(doc: dict[str, object]) -> None:
    doc["edges"][0]["max_speed_mps"] = 39.0  # type: ignore[index]


def _swap_parcels(doc: dict[str, object]) -> None:
    doc["nodes"][1]["actions"][0]["parcel_ids"] = ["P-STOLEN"]  # type: ignore[index]


def _redirect(doc: dict[str, object]) -> None:
    doc["nodes"][1]["lon"] = -8.5  # type: ignore[index]


def _forge_with(key_secret: bytes, key_id: str) -> bytes:
    return encode(sign(order(), SigningKey(key_id, key_secret)))


ORDER_CASES: dict[str, tuple[bytes, Rejection]] = {
    "unsigned": (encode(order()), Rejection.UNSIGNED),
    "speed cap raised after signing": (tampered(_raise_speed), Rejection.BAD_SIGNATURE),
    "parcels swapped after signing": (tampered(_swap_parcels), Rejection.BAD_SIGNATURE),
    "stop moved after signing": (tampered(_redirect), Rejection.BAD_SIGNATURE),
    "another van's stolen key": (encode(sign(order(), OTHER_KEY)), Rejection.BAD_SIGNATURE),
    "another van's key under this van's key id": (
        _forge_with(OTHER_KEY.secret, KEY.key_id),
        Rejection.BAD_SIGNATURE,
    ),
    "a key generation the van does not hold": (
        encode(sign(order(), NEXT_GENERATION)),
        Rejection.BAD_SIGNATURE,
    ),
    "signed for another van and sent to this one": (
        encode(sign(order(van_id=OTHER), OTHER_KEY)),
        Rejection.WRONG_VAN,
    ),
    "61 s old": (encode(sign(order(now_s=NOW - 61), KEY)), Rejection.STALE),
    "11 s in the future": (encode(sign(order(now_s=NOW + 11), KEY)), Rejection.STALE),
}


@pytest.mark.parametrize("case", list(ORDER_CASES))
def test_a_bad_order_is_refused_reported_and_changes_nothing(case: str) -> None:
    payload, reason = ORDER_CASES[case]
    core = ready()
    actions = core.on_order_payload(payload, NOW)
    assert obeyed(actions) == []
    assert refusal_reasons(actions) == [reason.value]
    assert core.order is None and core.verifier.last_message_ids == {}
    # the genuine order right after it is obeyed
    assert obeyed(core.on_order_payload(encode(sign(order(message_id=11), KEY)), NOW))


def test_an_unsigned_or_forged_emergency_stop_is_refused_too() -> None:
    """Stopping is safe, but a forged stop is still a forged command: a van that obeyed
    unsigned stops could be halted in traffic by anyone who can publish to its topic."""
    core = ready()
    tampered_estop = json.loads(encode(sign(estop(), KEY)))
    tampered_estop["actions"][0]["reason"] = "forged"
    for payload, reason in (
        (encode(estop()), "unsigned"),
        (encode(sign(estop(), OTHER_KEY)), "bad_signature"),
        (json.dumps(tampered_estop).encode(), "bad_signature"),
        (
            encode(sign(ex.instant(InstantActionType.EMERGENCY_STOP, van_id=OTHER), OTHER_KEY)),
            "wrong_van",
        ),
    ):
        actions = core.on_instant_payload(payload, NOW)
        assert obeyed(actions) == [] and refusal_reasons(actions)[-1] == reason
    actions = core.on_instant_payload(encode(sign(estop(message_id=11), KEY)), NOW)
    assert any(isinstance(a, EmergencyStopSerial) for a in obeyed(actions))


def _estop_obeyed(core: BridgeCore, message: InstantActions) -> bool:
    actions = core.on_instant_payload(encode(sign(message, KEY)), NOW)
    return any(isinstance(a, EmergencyStopSerial) for a in obeyed(actions))


def test_an_estop_below_the_counter_is_obeyed() -> None:
    """Issue 14, item 1: the controller restarted with a new store and the same key; its
    e-stop carries message_id 1 while the van accepted 1002 before. Stopping is safe: the
    counter is for commands that make the van move (docs/protocol.md, section 9)."""
    core = ready(counters={"instant": 1002})
    low = ex.instant(InstantActionType.EMERGENCY_STOP, message_id=1, action_id="I-low")
    assert _estop_obeyed(core, low)
    assert core.verifier.last_message_ids == {"instant": 1002}  # never lowered
    resume = ex.instant(InstantActionType.RESUME, message_id=2, action_id="I-resume")
    actions = core.on_instant_payload(encode(sign(resume, KEY)), NOW)
    assert obeyed(actions) == [] and refusal_reasons(actions)[-1] == "replayed"


def test_an_estop_stamped_two_hours_ago_is_obeyed() -> None:
    """A van whose clock is off by hours (or an e-stop held up in a broker queue) still stops."""
    core = ready()
    old = ex.instant(InstantActionType.EMERGENCY_STOP, message_id=5, now_s=NOW - 7200)
    assert _estop_obeyed(core, old)


@pytest.mark.parametrize("action", [InstantActionType.PAUSE, InstantActionType.CANCEL_ORDER])
def test_a_stale_or_low_numbered_pause_or_cancel_is_obeyed(action: InstantActionType) -> None:
    core = ready(counters={"instant": 500})
    assert obeyed(core.on_order_payload(encode(sign(order(message_id=11), KEY)), NOW))
    message = ex.instant(action, message_id=3, now_s=NOW - 3600, action_id="I-safer")
    assert obeyed(core.on_instant_payload(encode(sign(message, KEY)), NOW))


def test_a_replayed_command_is_refused_however_it_comes_back() -> None:
    core = ready()
    first = encode(sign(order(message_id=20), KEY))
    assert obeyed(core.on_order_payload(first, NOW))
    assert refusal_reasons(core.on_order_payload(first, NOW + 1)) == ["replayed"]
    older = encode(sign(ex.release_more(order(message_id=19), 3, message_id=19), KEY))
    assert refusal_reasons(core.on_order_payload(older, NOW + 1))[-1] == "replayed"
    resume = encode(sign(ex.instant(InstantActionType.RESUME, message_id=5), KEY))
    assert obeyed(core.on_instant_payload(resume, NOW))
    actions = core.on_instant_payload(resume, NOW + 1)
    assert obeyed(actions) == [] and refusal_reasons(actions)[-1] == "replayed"


def test_a_replayed_pause_is_confirmed_again_not_applied_again() -> None:
    """A replayed safer command passes the signature check (C2) but the bridge applies each
    action_id once: a recorded pause played back after a resume does not stop the van."""
    core = ready()
    pause = encode(sign(ex.instant(InstantActionType.PAUSE, message_id=5, action_id="I-p"), KEY))
    assert obeyed(core.on_instant_payload(pause, NOW))
    resume = ex.instant(InstantActionType.RESUME, message_id=6, action_id="I-r")
    assert obeyed(core.on_instant_payload(encode(sign(resume, KEY)), NOW))
    assert obeyed(core.on_instant_payload(pause, NOW + 1)) == []


def test_a_signature_cannot_be_moved_from_an_order_to_an_instant_action() -> None:
    core = ready()
    signed_order = sign(order(message_id=30), KEY)
    forged = estop(message_id=30).model_copy(update={"signature": signed_order.signature})
    actions = core.on_instant_payload(encode(forged), NOW)
    assert obeyed(actions) == [] and refusal_reasons(actions) == ["bad_signature"]


def test_the_counter_is_saved_before_an_order_is_acted_on_and_survives_a_restart() -> None:
    core = ready()
    payload = encode(sign(order(message_id=40), KEY))
    actions = core.on_order_payload(payload, NOW)
    saves = [i for i, a in enumerate(actions) if isinstance(a, SaveCounters)]
    sends = [i for i, a in enumerate(actions) if isinstance(a, SendSerial)]
    assert saves and sends and saves[0] < sends[0]
    saved = actions[saves[0]]
    assert isinstance(saved, SaveCounters)
    restarted = ready(counters=saved.counters)
    actions = restarted.on_order_payload(payload, NOW + 5)
    assert obeyed(actions) == [] and refusal_reasons(actions) == ["replayed"]


def test_a_van_holding_two_key_generations_accepts_both_during_a_rotation() -> None:
    core = BridgeCore(VAN, CommandVerifier(VAN, [KEY, NEXT_GENERATION]), mission_ids=1)
    core.on_link_up()
    core.on_telemetry(telemetry(), NOW)
    assert obeyed(core.on_order_payload(encode(sign(order(message_id=1), KEY)), NOW))
    pause = ex.instant(InstantActionType.PAUSE, message_id=2)
    assert obeyed(core.on_instant_payload(encode(sign(pause, NEXT_GENERATION)), NOW))


def test_a_stolen_key_can_exhaust_only_its_own_vans_counter() -> None:
    """The worst a stolen van key does to the anti-replay counter: that one van refuses
    later orders until its counters file is reset and the key generation raised
    (docs/security.md, "A stolen van key")."""
    victim = ready()
    top = encode(sign(order(message_id=MAX_MESSAGE_ID), KEY))  # the largest id allowed
    assert obeyed(victim.on_order_payload(top, NOW))
    update = encode(
        sign(ex.release_more(order(message_id=MAX_MESSAGE_ID), 3, message_id=MAX_MESSAGE_ID), KEY)
    )
    assert refusal_reasons(victim.on_order_payload(update, NOW))[-1] == "replayed"
    other_van = BridgeCore(OTHER, CommandVerifier(OTHER, [OTHER_KEY]), mission_ids=1)
    other_van.on_link_up()  # a bridge publishes states once its VCU has reported
    other_van.on_telemetry(telemetry(), NOW)
    assert refusal_reasons(other_van.on_order_payload(top, NOW)) == ["wrong_van"]
