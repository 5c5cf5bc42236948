from __future__ import annotations

import pytest

from fleet.protocol import TopicError, Topics, VanTopic


def test_van_topics_round_trip() -> None:
    topics = Topics()
    topic = topics.van("ST-BOAVISTA-03", VanTopic.STATE)
    assert topic == "fleet/v1/vans/ST-BOAVISTA-03/state"
    assert topics.parse_van(topic) == ("ST-BOAVISTA-03", VanTopic.STATE)


def test_a_prefix_isolates_a_test() -> None:
    topics = Topics("test/abc/")
    assert topics.all_vans(VanTopic.STATE) == "test/abc/fleet/v1/vans/+/state"
    with pytest.raises(TopicError, match="expected a topic under test/abc/fleet/v1/vans/"):
        topics.parse_van("fleet/v1/vans/A/state")


@pytest.mark.parametrize(
    ("topic", "reason"),
    [
        ("fleet/v1/vans/A/state/extra", "wrong_topic"),
        ("fleet/v1/vans/A/telemetry", "wrong_topic"),
        ("fleet/v1/vans/bad id/state", "bad_van_id"),
        ("fleet/v2/vans/A/state", "wrong_topic"),
    ],
)
def test_foreign_topics_are_refused_with_a_reason(topic: str, reason: str) -> None:
    with pytest.raises(TopicError) as info:
        Topics().parse_van(topic)
    assert info.value.reason == reason and topic in str(info.value)


def test_a_van_id_that_would_break_topics_is_refused() -> None:
    with pytest.raises(TopicError):
        Topics().van("A/#", VanTopic.ORDER)
    with pytest.raises(TopicError):
        Topics("no-trailing-slash")
