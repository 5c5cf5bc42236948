"""The signing rule reproduced without the project's code (issue 14, item 11).

A van or controller written in another language computes the MAC from docs/protocol.md
alone. These tests do exactly that with Node.js (``interop/fleet_sign.js``: JSON.stringify
with sorted keys, crypto.createHmac) and OpenSSL (``openssl dgst -mac HMAC``), against the
worked examples printed in the doc, and check the two directions: what our controller signs
verifies in JavaScript, and what a JavaScript controller signs verifies on our van.

Node.js and OpenSSL are on the development machines and in CI. Where one is missing these
tests skip with the reason — except under ``FLEET_REQUIRE_MOSQUITTO=1`` (set by ``.ci/run``),
where they fail, so that CI never skips the only check that is not written in Python.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import struct
import subprocess
from pathlib import Path

import pytest

from fleet.protocol import (
    CommandVerifier,
    InstantActions,
    Order,
    canonical_bytes,
    decode,
    derive_van_key,
    encode,
    sign,
)
from fleet.protocol.signing import canonical_json
from tests.protocol.test_protocol_doc import (
    KEY,
    canonical_block,
    doc_text,
    example_instant,
    example_order,
    json_examples,
)
from tests.support import protocol_examples as ex

SCRIPT = Path(__file__).parent / "interop" / "fleet_sign.js"
TIMEOUT_S = 60.0


def tool(name: str) -> str:
    """The path of ``name``; its absence skips the test, or fails it in CI."""
    found = shutil.which(name)
    if found:
        return found
    reason = f"{name} is not installed: the signing rule is not checked outside Python"
    if os.environ.get("FLEET_REQUIRE_MOSQUITTO") == "1":
        pytest.fail(f"{reason} (FLEET_REQUIRE_MOSQUITTO=1: install {name}; CI must not skip)")
    pytest.skip(reason)


def node(*args: str, stdin: str) -> str:
    done = subprocess.run(
        [tool("node"), str(SCRIPT), *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
        check=False,
    )
    assert done.returncode == 0, f"node {' '.join(args)} failed:\n{done.stderr}"
    return done.stdout


def test_node_writes_the_canonical_bytes_printed_in_the_doc() -> None:
    canonical, _ = canonical_block("canonical-example")
    assert node("canonical", "order", stdin=json_examples()[0]).encode() == canonical
    canonical_instant, _ = canonical_block("canonical-example-instant")
    instant_text = encode(example_instant()).decode()
    assert node("canonical", "instant", stdin=instant_text).encode() == canonical_instant


def test_node_computes_the_macs_printed_in_the_doc() -> None:
    order, instant = example_order(), example_instant()
    assert order.signature is not None and instant.signature is not None
    assert node("mac", "order", KEY.secret.hex(), stdin=json_examples()[0]) == order.signature.mac
    instant_text = encode(instant).decode()
    assert node("mac", "instant", KEY.secret.hex(), stdin=instant_text) == instant.signature.mac


def test_the_shell_recipe_of_the_doc_gives_the_doc_mac(tmp_path: Path) -> None:
    """The `node ... | openssl dgst` block of section 9, run as printed."""
    tool("node")
    tool("openssl")
    recipe = re.search(r"```sh\n(# the canonical bytes.*?)\n```", doc_text(), re.S)
    assert recipe is not None, "the shell recipe is missing from section 9"
    (tmp_path / "order.json").write_text(json_examples()[0], encoding="utf-8")
    done = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", recipe.group(1)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    order = example_order()
    assert order.signature is not None
    # OpenSSL prints "HMAC-SHA2-256(canonical.txt)= <hex>" (3.x) or "HMAC-SHA256(...)= <hex>"
    assert done.stdout.split()[-1] == order.signature.mac, done.stdout
    assert (tmp_path / "canonical.txt").read_bytes() == canonical_block("canonical-example")[0]


def test_openssl_computes_the_mac_of_the_canonical_text(tmp_path: Path) -> None:
    canonical, _ = canonical_block("canonical-example")
    (tmp_path / "canonical.txt").write_bytes(canonical)
    done = subprocess.run(
        [tool("openssl"), "dgst", "-sha256", "-mac", "HMAC", "-macopt",
         f"hexkey:{KEY.secret.hex()}", "canonical.txt"],
        cwd=tmp_path, capture_output=True, text=True, timeout=TIMEOUT_S, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    order = example_order()
    assert order.signature is not None and done.stdout.split()[-1] == order.signature.mac


def test_an_order_signed_in_javascript_is_obeyed_by_our_van() -> None:
    """A controller written in JavaScript writes 900 and 25 where Python writes 900.0 and
    25.0: the van's check must not care (the failure of issue 14, item 11, reversed)."""
    key = derive_van_key(ex.MASTER_SECRET, ex.VAN)
    doc = json.loads(encode(ex.order(message_id=77)))
    doc.pop("signature")
    signed_text = node("sign", "order", key.secret.hex(), key.key_id, stdin=json.dumps(doc))
    assert '"duration_s":900,' in signed_text  # JavaScript's spelling on the wire
    received = decode(Order, signed_text)
    CommandVerifier(ex.VAN, [key]).verify(received, ex.NOW_S)


def test_a_command_our_controller_signs_verifies_in_javascript() -> None:
    key = derive_van_key(ex.MASTER_SECRET, ex.VAN)
    for message in (ex.order(message_id=5), ex.instant(message_id=6)):
        signed = sign(message, key)
        kind = "order" if isinstance(signed, Order) else "instant"
        assert signed.signature is not None
        assert node("mac", kind, key.secret.hex(), stdin=encode(signed).decode()) == (
            signed.signature.mac
        )
        assert node("canonical", kind, stdin=encode(signed).decode()).encode() == (
            canonical_bytes(signed)
        )


# Number patterns RFC 8785 (appendix B) singles out, then seeded random doubles.
RFC_8785_NUMBERS = [
    "0000000000000000", "8000000000000000", "0000000000000001", "8000000000000001",
    "7fefffffffffffff", "ffefffffffffffff", "4340000000000000", "c340000000000000",
    "4430000000000000", "44b52d02c7e14af5", "44b52d02c7e14af6", "44b52d02c7e14af7",
    "444b1ae4d6e2ef4e", "444b1ae4d6e2ef4f", "444b1ae4d6e2ef50", "3eb0c6f7a0b5ed8c",
    "3eb0c6f7a0b5ed8d", "41b3de4355555553", "41b3de4355555554", "41b3de4355555555",
    "41b3de4355555556", "41b3de4355555557", "becbf647612f3696", "43143ff3c1cb0959",
]  # fmt: skip


def _random_finite_doubles(count: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    patterns: list[str] = []
    while len(patterns) < count:
        bits = rng.getrandbits(64)
        if (bits >> 52) & 0x7FF == 0x7FF:
            continue  # NaN and infinities are not JSON
        patterns.append(f"{bits:016x}")
    # values a van really sends: coordinates, metres, speeds, percentages
    for _ in range(count // 4):
        value = rng.choice([rng.uniform(-180, 180), rng.uniform(0, 5e5), rng.uniform(0, 40)])
        value = round(value, rng.randint(0, 9))
        patterns.append(struct.pack(">d", value).hex())
    return patterns


def test_numbers_are_written_as_javascript_writes_them() -> None:
    """The part of JCS that differs from Python's json: every double, byte for byte."""
    patterns = RFC_8785_NUMBERS + _random_finite_doubles(4000, seed=8785)
    doubles = [struct.unpack(">d", bytes.fromhex(p))[0] for p in patterns]
    from_node = node("numbers", stdin=json.dumps(patterns))
    assert from_node.encode() == canonical_json(doubles)


def test_the_instant_example_is_a_message_our_van_obeys() -> None:
    message = example_instant()
    assert isinstance(message, InstantActions)
    verifier = CommandVerifier("ST-A-01", [KEY], max_age_s=1e12, max_ahead_s=1e12)
    assert verifier.verify(message, 1_795_000_000.0) == ()  # nothing waived: a clean pass
