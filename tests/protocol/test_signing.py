"""A van obeys only commands signed for it, fresh, and never seen before."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings

from fleet.protocol import (
    CommandVerifier,
    InstantActions,
    InstantActionType,
    Order,
    Rejection,
    SignatureError,
    canonical_bytes,
    decode,
    derive_van_key,
    encode,
    sign,
)
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
