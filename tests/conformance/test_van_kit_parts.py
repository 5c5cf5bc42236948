"""The van kit's own parts, without a broker: the orders it builds, its report, its command line."""

from __future__ import annotations

import itertools
import json
import math
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fleet.cli.app import app
from fleet.cli.conformance import load_van_key
from fleet.conformance import CaseResult, Outcome, Report
from fleet.conformance import van_messages as vm
from fleet.errors import ConfigError
from fleet.protocol import (
    CommandVerifier,
    InstantActions,
    InstantActionType,
    Order,
    Rejection,
    SignatureError,
    decode,
    derive_van_key,
    sign,
)
from tests.support import protocol_examples as ex

KEY = derive_van_key(ex.MASTER_SECRET, ex.VAN)
START = vm.Start(-8.611, 41.1496, 90.0)


def _order(**kw: object) -> Order:
    args: dict[str, object] = {
        "update_id": 0, "released": 2, "message_id": 5, "now_s": ex.NOW_S, "leg_m": 25.0,
        "speed_mps": 5.0,
    }  # fmt: skip
    return vm.build_order(ex.VAN, "CONF-x-A", START, **{**args, **kw})  # type: ignore[arg-type]


def _dist_m(a: tuple[float, float], b: tuple[float, float]) -> float:
    lat = math.radians((a[1] + b[1]) / 2)
    dx = (b[0] - a[0]) * 111_320.0 * math.cos(lat)
    dy = (b[1] - a[1]) * 111_320.0
    return math.hypot(dx, dy)


def test_the_order_leads_straight_ahead_in_legs_of_the_asked_length() -> None:
    order = _order()
    points = [(n.lon, n.lat) for n in order.nodes]
    assert points[0] == (START.lon, START.lat)
    for a, b in itertools.pairwise(points):
        assert _dist_m(a, b) == pytest.approx(25.0, rel=0.01)
    assert points[1][0] > points[0][0] and points[1][1] == pytest.approx(points[0][1])  # east
    assert [n.released for n in order.nodes] == [True, True, False, False, False, False]
    assert {e.max_speed_mps for e in order.edges} == {5.0}


def test_its_updates_keep_the_base_and_release_one_more_stop() -> None:
    from fleet.protocol import OrderVerdict, decide_order

    first, second = _order(), _order(update_id=1, released=3, message_id=6)
    decision = decide_order(first, second, van_id=ex.VAN, last_node_sequence_id=2)
    assert decision.verdict is OrderVerdict.UPDATE
    moved = vm.moved_node(_order(update_id=2, released=4), 1, 10.0)
    assert decide_order(second, moved, van_id=ex.VAN, last_node_sequence_id=2).reason == (
        "base_changed"
    )


def _refusal(payload: bytes, model: type[Order] | type[InstantActions]) -> str:
    with pytest.raises(SignatureError) as info:
        CommandVerifier(ex.VAN, [KEY]).verify(decode(model, payload), ex.NOW_S)
    return info.value.reason


def test_what_it_tampers_with_no_longer_verifies() -> None:
    order = vm.tampered(sign(_order(), KEY))
    assert _refusal(order, Order) == Rejection.BAD_SIGNATURE
    estop = vm.instant(ex.VAN, "CONF-x.1", InstantActionType.EMERGENCY_STOP, message_id=9,
                       now_s=ex.NOW_S)  # fmt: skip
    assert _refusal(vm.tampered(sign(estop, KEY)), InstantActions) == Rejection.BAD_SIGNATURE


def test_what_it_signs_verifies() -> None:
    CommandVerifier(ex.VAN, [KEY]).verify(decode(Order, vm.signed_bytes(_order(), KEY)), ex.NOW_S)


def test_the_summary_line_counts_every_outcome() -> None:
    report = Report()
    report.add(CaseResult("a", Outcome.PASSED, "fine", 0.1))
    report.add(CaseResult("b", Outcome.SKIPPED, "no command"))
    assert report.ok
    report.add(CaseResult("c", Outcome.FAILED, "wrong"))
    assert not report.ok
    assert json.loads(report.json_line()) == {
        "cases": 3, "passed": 1, "failed": 1, "skipped": 1, "failed_cases": ["c"],
    }  # fmt: skip
    assert not Report().ok  # nothing run is not a pass


runner = CliRunner()


def test_the_command_needs_exactly_one_key(tmp_path: Path) -> None:
    done = runner.invoke(app, ["conformance", "van", "--van", "V-1"])
    assert done.exit_code == 2 and "exactly one of --key" in done.output
    key = tmp_path / "k"
    key.write_text('key_id = "V-1.k1"\nsecret_hex = "' + "ab" * 32 + '"\n')
    done = runner.invoke(
        app, ["conformance", "van", "--van", "V-1", "--key", str(key), "--master", str(key)]
    )
    assert done.exit_code == 2 and "exactly one of --key" in done.output


def test_a_bad_van_id_or_prefix_is_a_usage_error() -> None:
    done = runner.invoke(app, ["conformance", "van", "--van", "bad/id"])
    assert done.exit_code == 2 and "van id" in done.output
    done = runner.invoke(app, ["conformance", "van", "--van", "V-1", "--topic-prefix", "x"])
    assert done.exit_code == 2 and "prefix" in done.output


def test_a_van_key_file_names_what_is_wrong(tmp_path: Path) -> None:
    path = tmp_path / "signing.key"
    path.write_text('key_id = "V-1.k1"\n')
    with pytest.raises(ConfigError, match="secret_hex"):
        load_van_key(path)
    path.write_text('key_id = "V-1.k1"\nsecret_hex = "abcd"\n')
    with pytest.raises(ConfigError, match="at least 32"):
        load_van_key(path)
    path.write_text('key_id = "V-1.k1"\nsecret_hex = "' + "ab" * 32 + '"\n')
    assert load_van_key(path).key_id == "V-1.k1"


DOC = Path(__file__).resolve().parents[2] / "docs" / "conformance.md"


def test_the_doc_lists_every_case_in_the_order_they_run() -> None:
    from fleet.conformance import VAN_CASES

    text = DOC.read_text(encoding="utf-8")
    section = text[text.index("## Van conformance (MQTT)") :]
    rows = re.findall(r"^\| (\d+) \| `([a-z_]+)` \|", section, re.M)
    assert [name for _, name in rows] == list(VAN_CASES)
    assert [int(n) for n, _ in rows] == list(range(1, len(VAN_CASES) + 1))
    assert (
        f"through {len(VAN_CASES)}" in section
        or f"through {len(VAN_CASES)} " in section.replace("\n", " ")
    )


def test_the_doc_gives_the_kits_bounds() -> None:
    from fleet.conformance import VanKitSettings
    from fleet.mqtt import BrokerAddress

    s = VanKitSettings(BrokerAddress("h", 1), "V", KEY)
    text = DOC.read_text(encoding="utf-8").replace("\n", " ")
    for phrase in (
        f"for {s.hold_s:g} s",
        f"within {s.state_bound_s:g} s",
        f"within {s.stop_timeout_s:g} s",
        f"within {s.restart_timeout_s:g} s",
        f"echoes `A`/0 within {s.reply_timeout_s:g} s",
        f"{s.connect_timeout_s:g} s for the van to be ONLINE",
        f"{s.drive_timeout_s:g} s to drive one leg",
        f"{s.leg_m:g} m at {s.speed_mps:g} m/s",
    ):
        assert phrase in text, phrase
