"""The committed JSON Schemas (docs/schemas/) are exactly what the message models generate."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from fleet.protocol import encode
from fleet.protocol.schemas import json_schemas
from tests.support import protocol_examples as ex

SCHEMAS = Path(__file__).resolve().parents[2] / "docs" / "schemas"


def test_committed_schemas_match_the_models() -> None:
    generated = json_schemas()
    if os.environ.get("FLEET_WRITE_SCHEMAS") == "1":
        SCHEMAS.mkdir(parents=True, exist_ok=True)
        for name, text in generated.items():
            (SCHEMAS / name).write_text(text, encoding="utf-8")
    committed = {p.name: p.read_text(encoding="utf-8") for p in SCHEMAS.glob("*.schema.json")}
    stale = sorted(n for n in generated if committed.get(n) != generated[n])
    extra = sorted(set(committed) - set(generated))
    assert not stale and not extra, (
        f"docs/schemas drifted from the models (changed: {stale}, not generated: {extra}); "
        "run FLEET_WRITE_SCHEMAS=1 pytest tests/protocol/test_schemas.py and review the diff"
    )


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("order", ex.order()),
        ("instant", ex.instant()),
        ("state", ex.state()),
        ("connection", ex.connection()),
        ("factsheet", ex.factsheet()),
    ],
)
def test_examples_name_every_required_field_of_their_schema(name: str, message: object) -> None:
    schema = json.loads((SCHEMAS / f"{name}.schema.json").read_text(encoding="utf-8"))
    document = json.loads(encode(message))  # type: ignore[arg-type]
    assert set(schema["required"]) <= set(document)
    assert set(document) <= set(schema["properties"])
