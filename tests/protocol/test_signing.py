"""A van obeys only commands signed for it, fresh, and never seen before."""

from __future__ import annotations

import json

import pytest
import rfc8785
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fleet.protocol import (
    MAX_MESSAGE_ID,
    CommandVerifier,
    InstantAction,
    InstantActions,
    InstantActionType,
    Order,
    Rejection,
    SignatureError,
    canonical_bytes,
    decode,
    derive_van_key,
    encode,
    is_safer_only,
    make_header,
    sign,
)
from fleet.protocol.signing import canonical_json
from tests.support import protocol_examples as ex
from tests.support import strategies as sts

KEY = derive_van_key(ex.MASTER_SECRET, ex.VAN)


def _verifier(**kwargs: object) -> CommandVerifier:
    return CommandVerifier(ex.VAN, [KEY], **kwargs)  # type: ignore[arg-type]


def _reason(
    verifier: CommandVerifier, message: Order | InstantActions, now_s: float = ex.NOW_S
) -> str:
    with pytest.raises(SignatureError) as info:
        verifier.verify(message, now_s, topic="fleet/v1/vans/WH-PORTO-01/order")
    assert "fleet/v1/vans/WH-PORTO-01/order" in str(info.value)
    return info.value.reason


def test_a_signed_order_passes_after_the_wire() -> None:
    signed = sign(ex.order(), KEY)
    _verifier().verify(decode(Order, encode(signed)), ex.NOW_S + 1.0)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(sts.orders())
def test_any_order_signed_then_sent_still_verifies(order: Order) -> None:
    key = derive_van_key(ex.MASTER_SECRET, order.van_id)
    received = decode(Order, encode(sign(order, key)))
    assert canonical_bytes(received) == canonical_bytes(order)
    CommandVerifier(order.van_id, [key], max_age_s=1e12, max_ahead_s=1e12).verify(received, 0.0)


def test_unsigned_is_refused() -> None:
    assert _reason(_verifier(), ex.order()) == Rejection.UNSIGNED


def test_a_tampered_order_is_refused() -> None:
    doc = json.loads(encode(sign(ex.order(), KEY)))
    doc["edges"][0]["max_speed_mps"] = 30.0  # someone raises the speed cap in transit
    tampered = decode(Order, json.dumps(doc))
    assert _reason(_verifier(), tampered) == Rejection.BAD_SIGNATURE


def test_a_signature_made_for_another_kind_does_not_transfer() -> None:
    signed = sign(ex.instant(InstantActionType.RESUME), KEY)
    forged = ex.instant(InstantActionType.EMERGENCY_STOP).model_copy(
        update={"signature": signed.signature}
    )
    assert _reason(_verifier(), forged) == Rejection.BAD_SIGNATURE


def test_another_vans_key_is_refused() -> None:
    other = derive_van_key(ex.MASTER_SECRET, "WH-PORTO-02")
    # Same van id in the body, but the key belongs to a different van: a stolen key of van 2.
    forged = sign(ex.order(), other)
    assert _reason(_verifier(), forged) == Rejection.BAD_SIGNATURE


def test_a_command_for_another_van_is_misaddressed() -> None:
    other = derive_van_key(ex.MASTER_SECRET, "WH-PORTO-02")
    message = sign(ex.order(van_id="WH-PORTO-02"), other)
    assert _reason(_verifier(), message) == Rejection.WRONG_VAN


def test_a_replayed_command_is_refused() -> None:
    verifier = _verifier()
    signed = sign(ex.instant(InstantActionType.OPEN_DOOR, message_id=7), KEY)
    verifier.verify(signed, ex.NOW_S)
    assert _reason(verifier, signed) == Rejection.REPLAYED
    older = sign(ex.instant(InstantActionType.OPEN_DOOR, message_id=6), KEY)
    assert _reason(verifier, older) == Rejection.REPLAYED


# -- canonical bytes: RFC 8785 (JCS), reproducible in any language -------------------------


def test_integral_floats_are_written_as_ecmascript_writes_them() -> None:
    """A van in JavaScript, Go or C parses 25.0 and writes 25: so must the signed bytes."""
    text = canonical_bytes(ex.order()).decode()
    assert '"duration_s":900,' in text and '"allowed_deviation_m":25,' in text
    assert ".0," not in text and ".0]" not in text and ".0}" not in text


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (25.0, "25"),
        (-0.0, "0"),
        (0.1, "0.1"),
        (16.666666666666668, "16.666666666666668"),
        (1e21, "1e+21"),
        (1e20, "100000000000000000000"),
        (1e-7, "1e-7"),
        (0.000001, "0.000001"),
        (5e-324, "5e-324"),
        (MAX_MESSAGE_ID, "9007199254740991"),
    ],
)
def test_numbers_follow_rfc_8785(value: float, text: str) -> None:
    assert canonical_json({"v": value}) == f'{{"v":{text}}}'.encode()


def test_keys_sort_by_utf16_and_text_stays_utf8() -> None:
    assert canonical_json({"b": 1, "a": {"d": [], "c": None}, "é": "ação\n"}) == (
        '{"a":{"c":null,"d":[]},"b":1,"é":"ação\\n"}'.encode()
    )


@pytest.mark.parametrize("value", [float("nan"), float("inf"), MAX_MESSAGE_ID + 1])
def test_what_jcs_cannot_write_exactly_is_refused(value: float) -> None:
    with pytest.raises(ValueError, match="RFC 8785"):
        canonical_json({"v": value})


def test_message_ids_stop_where_every_json_reader_is_exact() -> None:
    with pytest.raises(ValueError, match="less than or equal to 9007199254740991"):
        ex.order(message_id=MAX_MESSAGE_ID + 1)
    CommandVerifier(ex.VAN, [KEY]).verify(sign(ex.order(message_id=MAX_MESSAGE_ID), KEY), ex.NOW_S)


def test_a_mac_over_the_wire_text_of_another_writer_still_verifies() -> None:
    """A controller in another language writes 900 and 25 where Python writes 900.0 and
    25.0, and orders its keys as it likes: the van's check does not care."""
    signed = sign(ex.order(), KEY)
    doc = json.loads(encode(signed))
    doc["nodes"][0]["actions"][0]["duration_s"] = 900  # as JavaScript writes it
    reordered = json.dumps(dict(reversed(list(doc.items()))))
    _verifier().verify(decode(Order, reordered), ex.NOW_S)


# -- safer commands (C2): refused only for a bad signature or the wrong van ------------------


def _estop(message_id: int, now_s: float = ex.NOW_S, action_id: str = "I-9") -> InstantActions:
    return ex.instant(
        InstantActionType.EMERGENCY_STOP, message_id=message_id, now_s=now_s, action_id=action_id
    )


def test_an_estop_below_the_counter_is_obeyed_and_the_counter_stays() -> None:
    """Issue 14, item 1: a controller restarted with a lost store sends id 1 after 1002."""
    verifier = _verifier(last_message_ids={"instant": 1002})
    assert verifier.verify(sign(_estop(1), KEY), ex.NOW_S) == (Rejection.REPLAYED,)
    assert verifier.last_message_ids == {"instant": 1002}
    # the counter was not lowered: a resume with a low id is still a replay
    resume = sign(ex.instant(InstantActionType.RESUME, message_id=3), KEY)
    assert _reason(verifier, resume) == Rejection.REPLAYED


def test_an_estop_stamped_two_hours_ago_is_obeyed() -> None:
    verifier = _verifier()
    old = sign(_estop(5, now_s=ex.NOW_S - 7200), KEY)
    assert verifier.verify(old, ex.NOW_S) == (Rejection.STALE,)
    ahead = sign(_estop(6, now_s=ex.NOW_S + 3600), KEY)
    assert verifier.verify(ahead, ex.NOW_S) == (Rejection.STALE,)
    assert verifier.last_message_ids == {"instant": 6}


def test_an_accepted_safer_command_raises_the_counter_like_any_other() -> None:
    verifier = _verifier(last_message_ids={"instant": 10})
    assert verifier.verify(sign(_estop(20), KEY), ex.NOW_S) == ()
    assert verifier.last_message_ids == {"instant": 20}


@pytest.mark.parametrize(
    "action",
    [InstantActionType.PAUSE, InstantActionType.CANCEL_ORDER, InstantActionType.EMERGENCY_STOP],
)
def test_every_safer_action_skips_the_bookkeeping(action: InstantActionType) -> None:
    verifier = _verifier(last_message_ids={"instant": 50})
    message = ex.instant(action, message_id=4, now_s=ex.NOW_S - 600)
    assert set(verifier.verify(sign(message, KEY), ex.NOW_S)) == {
        Rejection.STALE,
        Rejection.REPLAYED,
    }


def test_a_safer_message_of_several_actions_skips_it_too() -> None:
    message = InstantActions(
        header=make_header("controller", 1, ex.NOW_S - 600),
        van_id=ex.VAN,
        actions=(
            InstantAction(action_id="I-a", action_type=InstantActionType.PAUSE),
            InstantAction(action_id="I-b", action_type=InstantActionType.CANCEL_ORDER),
        ),
    )
    assert is_safer_only(message)
    _verifier(last_message_ids={"instant": 9}).verify(sign(message, KEY), ex.NOW_S)


@pytest.mark.parametrize(
    "action",
    [InstantActionType.RESUME, InstantActionType.OPEN_DOOR, InstantActionType.CLOSE_DOOR],
)
def test_a_command_that_lets_the_van_move_is_checked_in_full(action: InstantActionType) -> None:
    verifier = _verifier(last_message_ids={"instant": 50})
    assert _reason(verifier, sign(ex.instant(action, message_id=4), KEY)) == Rejection.REPLAYED
    stale = sign(ex.instant(action, message_id=60, now_s=ex.NOW_S - 61), KEY)
    assert _reason(verifier, stale) == Rejection.STALE


def test_a_message_mixing_a_safer_action_with_another_is_checked_in_full() -> None:
    mixed = InstantActions(
        header=make_header("controller", 4, ex.NOW_S),
        van_id=ex.VAN,
        actions=(
            InstantAction(action_id="I-a", action_type=InstantActionType.EMERGENCY_STOP),
            InstantAction(action_id="I-b", action_type=InstantActionType.RESUME),
        ),
    )
    assert not is_safer_only(mixed)
    verifier = _verifier(last_message_ids={"instant": 50})
    assert _reason(verifier, sign(mixed, KEY)) == Rejection.REPLAYED
    assert verifier.last_message_ids == {"instant": 50}


def test_an_order_is_never_a_safer_command() -> None:
    verifier = _verifier(last_message_ids={"order": 50})
    assert not is_safer_only(ex.order())
    assert _reason(verifier, sign(ex.order(message_id=4), KEY)) == Rejection.REPLAYED


def test_a_tampered_estop_is_refused() -> None:
    doc = json.loads(encode(sign(_estop(5), KEY)))
    doc["actions"][0]["reason"] = "someone else"
    assert _reason(_verifier(), decode(InstantActions, json.dumps(doc))) == Rejection.BAD_SIGNATURE


def test_an_unsigned_or_foreign_estop_is_refused() -> None:
    assert _reason(_verifier(), _estop(5)) == Rejection.UNSIGNED
    other = derive_van_key(ex.MASTER_SECRET, "WH-PORTO-02")
    assert _reason(_verifier(), sign(_estop(5), other)) == Rejection.BAD_SIGNATURE
    misaddressed = sign(ex.instant(InstantActionType.EMERGENCY_STOP, van_id="WH-PORTO-02"), other)
    assert _reason(_verifier(), misaddressed) == Rejection.WRONG_VAN


def test_a_refused_estop_does_not_touch_the_counter() -> None:
    verifier = _verifier(last_message_ids={"instant": 7})
    _reason(verifier, _estop(500))
    assert verifier.last_message_ids == {"instant": 7}


def test_counters_are_per_topic_so_an_order_does_not_block_an_estop() -> None:
    verifier = _verifier()
    verifier.verify(sign(ex.order(message_id=10), KEY), ex.NOW_S)
    # Delivered after the order although it was sent first: different topic, own counter.
    verifier.verify(sign(ex.instant(InstantActionType.EMERGENCY_STOP, message_id=9), KEY), ex.NOW_S)
    assert verifier.last_message_ids == {"order": 10, "instant": 9}


def test_a_restarted_van_keeps_refusing_replays() -> None:
    first = _verifier()
    signed = sign(ex.order(message_id=3), KEY)
    first.verify(signed, ex.NOW_S)
    restarted = _verifier(last_message_ids=first.last_message_ids)
    assert _reason(restarted, signed) == Rejection.REPLAYED


@pytest.mark.parametrize("offset_s", [-61.0, 11.0], ids=["too-old", "from-the-future"])
def test_a_stale_command_is_refused(offset_s: float) -> None:
    signed = sign(ex.order(now_s=ex.NOW_S + offset_s), KEY)
    assert _reason(_verifier(), signed) == Rejection.STALE


def test_a_refused_command_does_not_advance_the_counter() -> None:
    verifier = _verifier()
    stale = sign(ex.order(message_id=50, now_s=ex.NOW_S - 500), KEY)
    _reason(verifier, stale)
    verifier.verify(sign(ex.order(message_id=2), KEY), ex.NOW_S)


def test_van_keys_differ_per_van_and_generation() -> None:
    a1 = derive_van_key(ex.MASTER_SECRET, "A")
    assert a1.secret != derive_van_key(ex.MASTER_SECRET, "B").secret
    a2 = derive_van_key(ex.MASTER_SECRET, "A", generation=2)
    assert a1.secret != a2.secret and a1.key_id != a2.key_id
    assert a1.secret == derive_van_key(ex.MASTER_SECRET, "A").secret
    assert "secret=<32 bytes>" in repr(a1)


def test_short_secrets_are_refused() -> None:
    with pytest.raises(ValueError, match="32"):
        derive_van_key(b"short", "A")


def test_an_unreadable_timestamp_built_in_code_is_stale_not_a_crash() -> None:
    message = ex.order()
    broken = message.model_copy(
        update={"header": message.header.model_copy(update={"timestamp": "2026-02-30T00:00:00Z"})}
    )
    assert _reason(_verifier(), sign(broken, KEY)) == Rejection.STALE


JSON_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(-MAX_MESSAGE_ID, MAX_MESSAGE_ID)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.floats(min_value=-1e-3, max_value=1e-3, allow_nan=False)
    | st.text(max_size=12)
)
JSON_VALUES = st.recursive(
    JSON_SCALARS,
    lambda inner: st.lists(inner, max_size=5)
    | st.dictionaries(st.text(alphabet="abcdefgh_", max_size=6) | st.text(max_size=4), inner,
                      max_size=5),
    max_leaves=30,
)  # fmt: skip


@settings(max_examples=400, deadline=None)
@given(JSON_VALUES)
def test_the_fast_canonicaliser_writes_what_rfc8785_writes(value: object) -> None:
    """canonical_json prepares floats for the C json encoder; the rfc8785 package is the
    reference it must match byte for byte, whatever the value."""
    assert canonical_json(value) == rfc8785.dumps(value)  # type: ignore[arg-type]


def test_a_lone_surrogate_is_refused_clearly() -> None:
    with pytest.raises(ValueError, match="RFC 8785"):
        canonical_json({"reason": "\ud800"})
