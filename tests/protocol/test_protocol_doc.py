"""docs/protocol.md stays true: its worked signing example is what the code computes."""

from __future__ import annotations

import hashlib
import hmac
import re
from pathlib import Path

from fleet.protocol import DecodeError, decode, derive_van_key
from fleet.protocol.schemas import SCHEMA_MODELS

DOC = Path(__file__).resolve().parents[2] / "docs" / "protocol.md"


def test_the_worked_signing_example_matches_the_code() -> None:
    text = DOC.read_text(encoding="utf-8")
    block = re.search(r"<!-- canonical-example -->\n```text\n(.*?)\n```", text, re.S)
    assert block is not None, "the canonical-example block is missing"
    canonical = block.group(1).encode("utf-8")
    key = derive_van_key(bytes(range(32)), "ST-A-01")
    assert key.secret.hex() in text
    mac = hmac.new(key.secret, canonical, hashlib.sha256).hexdigest()
    after = text[block.end() :]
    assert mac in after.split("\n\n", 2)[1], f"the doc's MAC differs from {mac}"
    assert f'"mac": "{mac}"' in text  # and the order example carries it


def test_every_json_example_in_the_doc_is_a_valid_message() -> None:
    text = DOC.read_text(encoding="utf-8")
    blocks = re.findall(r"```json\n(.*?)\n```", text, re.S)
    documents: list[str] = []
    for block in blocks:
        if block.lstrip().startswith("{\n"):
            documents.append(block)  # one pretty-printed document
        else:
            documents.extend(line for line in block.splitlines() if line.strip())
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
