"""Where Mosquitto is missing its tests skip with the reason, except in CI
(``FLEET_REQUIRE_MOSQUITTO=1``, set by ``.ci/run``), where a skip would hide untested code."""

from __future__ import annotations

import pytest

from tests.support.brokers import skip_or_fail

REASON = "mosquitto binary not found"


def test_without_the_requirement_a_missing_mosquitto_skips_with_the_reason(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("FLEET_REQUIRE_MOSQUITTO", raising=False)
    with pytest.raises(pytest.skip.Exception, match=REASON):
        skip_or_fail(REASON)


def test_in_ci_a_missing_mosquitto_fails_the_test(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLEET_REQUIRE_MOSQUITTO", "1")
    with pytest.raises(pytest.fail.Exception, match="must not skip") as caught:
        skip_or_fail(REASON)
    assert REASON in str(caught.value)
