"""docs/protocol.md stays true: its examples, tables and worked signing example are what the
code does, so that a van built from the page alone agrees with ours."""

from __future__ import annotations

import hashlib
import hmac
import re
from pathlib import Path

import pytest

from fleet.protocol import (
    SAFER_ACTIONS,
    DecodeError,
    InstantActions,
    InstantActionType,
    Order,
    Rejection,
    canonical_bytes,
    decode,
    derive_van_key,
    encode,
)
from fleet.protocol.schemas import SCHEMA_MODELS

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "protocol.md"
KEY = derive_van_key(bytes(range(32)), "ST-A-01")


def doc_text() -> str:
    return DOC.read_text(encoding="utf-8")


def section(number: str) -> str:
    """The text of section ``number`` ("5", "9", "1.1"), up to the next heading of its level."""
    text = doc_text()
    level = "###" if "." in number else "##"
    start = re.search(rf"^{level} {re.escape(number)}\.? .*$", text, re.M)
    assert start is not None, f"section {number} is missing"
    end = re.compile(rf"^#{{2,{len(level)}}} ", re.M).search(text, start.end())
    return text[start.end() : end.start() if end else len(text)]


def json_examples() -> list[str]:
    documents: list[str] = []
    for block in re.findall(r"```json\n(.*?)\n```", doc_text(), re.S):
        if block.lstrip().startswith("{\n"):
            documents.append(block)  # one pretty-printed document
        else:
            documents.extend(line for line in block.splitlines() if line.strip())
    return documents


def example_order() -> Order:
    return decode(Order, json_examples()[0])


def example_instant() -> InstantActions:
    (estop,) = [d for d in json_examples() if '"emergency_stop"' in d and '"actions"' in d[:200]]
    return decode(InstantActions, estop)


def canonical_block(marker: str) -> tuple[bytes, str]:
    """The canonical text under ``<!-- marker -->`` and the doc text that follows it."""
    text = doc_text()
    block = re.search(rf"<!-- {marker} -->\n```text\n(.*?)\n```", text, re.S)
    assert block is not None, f"the {marker} block is missing"
    return block.group(1).encode("utf-8"), text[block.end() :]


def test_the_worked_signing_example_is_what_the_code_signs() -> None:
    canonical, after = canonical_block("canonical-example")
    order = example_order()
    assert canonical == canonical_bytes(order), "the doc's canonical bytes are not the code's"
    assert KEY.secret.hex() in doc_text()
    mac = hmac.new(KEY.secret, canonical, hashlib.sha256).hexdigest()
    assert mac in after.split("\n\n", 2)[1], f"the doc's MAC differs from {mac}"
    assert order.signature is not None and order.signature.mac == mac  # the example carries it


def test_the_worked_instant_example_is_what_the_code_signs() -> None:
    canonical, after = canonical_block("canonical-example-instant")
    estop = example_instant()
    assert canonical == canonical_bytes(estop)
    mac = hmac.new(KEY.secret, canonical, hashlib.sha256).hexdigest()
    assert f"MAC `{mac}`" in after[:200]
    assert estop.signature is not None and estop.signature.mac == mac


def test_integral_numbers_in_the_example_lose_their_point() -> None:
    """The reason for RFC 8785: 400.0 on the wire, 400 in what is signed."""
    canonical, _ = canonical_block("canonical-example")
    assert b'"length_m":400,' in canonical and b'"length_m":400.0' not in canonical
    assert b'"length_m": 400.0' in doc_text().encode()


def test_the_order_example_is_as_long_as_the_doc_says() -> None:
    size = len(encode(example_order()))
    spelled = f"{size:,}".replace(",", " ")
    assert f"one line of {spelled} bytes" in doc_text()


def test_every_json_example_in_the_doc_is_a_valid_message() -> None:
    documents = json_examples()
    assert len(documents) >= 6
    for document in documents:
        matches = []
        for model in SCHEMA_MODELS.values():
            try:
                decode(model, document)
            except DecodeError:
                continue
            matches.append(model.__name__)
        assert matches, f"not a valid message of any kind: {document[:120]}"


def test_every_refusal_reason_is_in_the_signature_table_in_the_code_order() -> None:
    table = section("9")
    rows = re.findall(r"^\| `([a-z_]+)` \| .* \| (yes|\*\*no\*\*) \|$", table, re.M)
    assert [r for r, _ in rows] == [
        Rejection.UNSIGNED,
        Rejection.WRONG_VAN,
        Rejection.BAD_SIGNATURE,
        Rejection.STALE,
        Rejection.REPLAYED,
    ]
    waived = {reason for reason, applies in rows if applies != "yes"}
    assert waived == {Rejection.STALE, Rejection.REPLAYED}


def test_the_safer_actions_of_the_doc_are_the_codes() -> None:
    rows = re.findall(r"^\| `([a-z_]+)`(?: / `([a-z_]+)`)? \| (yes|no) \|", section("5"), re.M)
    safer = {InstantActionType(a) for a, _, flag in rows if flag == "yes"}
    listed = {InstantActionType(x) for a, b, _ in rows for x in (a, b) if x}
    assert safer == SAFER_ACTIONS
    assert listed == set(InstantActionType)


def test_wrong_van_has_one_error_type() -> None:
    text = doc_text()
    assert "`validation_error` |\n" not in section("4")  # the old second answer
    for line in text.splitlines():
        if "wrong_van" in line and line.startswith("|"):
            assert "validation_error" not in line, line


def _error_types_in(path: Path) -> set[str]:
    return set(re.findall(r'error_type="([a-z_]+)"', path.read_text(encoding="utf-8")))


def test_the_van_error_table_lists_every_error_a_van_of_ours_reports() -> None:
    table = section("6")
    listed = set(re.findall(r"^\| `([a-z_]+)` \| (?:warning|fatal)", table, re.M))
    emitted: set[str] = set()
    for package in ("firmware_bridge", "fleet/protocol", "sim"):
        for path in (ROOT / package).rglob("*.py"):
            emitted |= _error_types_in(path)
    emitted |= {"order_update_error", "signature_error", "validation_error"}
    assert emitted <= listed, f"not in the VanError table: {sorted(emitted - listed)}"
    # the staleness and version errors of the safety contracts (C5, C7)
    assert {"vcu_telemetry_stale", "vcu_version_mismatch", "vcu_link_lost"} <= listed


@pytest.mark.parametrize("reason", ["stale_update", "conflicting_update", "base_changed", "busy"])
def test_each_order_refusal_reason_is_in_the_order_table(reason: str) -> None:
    assert f"rejected `{reason}`" in section("4")


def test_the_session_table_names_the_client_ids_the_code_uses() -> None:
    from fleet.control.config import ControllerConfig

    table = section("1.1")
    bridge_config = (ROOT / "firmware_bridge" / "bridge" / "config.py").read_text("utf-8")
    assert "return self.client_id or self.van_id" in bridge_config
    assert "| van | `{van_id}` |" in table
    assert f"`{ControllerConfig().name}`" in table
    assert "clean session = 0" in table and "persistent" in table
