"""JSON Schemas of every message, generated from the models (committed in ``docs/schemas/``).

``tests/protocol/test_schemas.py`` fails when a committed schema differs from what the models
generate; ``FLEET_WRITE_SCHEMAS=1 pytest tests/protocol/test_schemas.py`` rewrites them.
"""

from __future__ import annotations

import json

from fleet.protocol.control_api import Event, Reply, Request
from fleet.protocol.messages import (
    PROTOCOL_VERSION,
    Connection,
    ControllerConnection,
    Factsheet,
    InstantActions,
    Order,
    State,
    Strict,
)

SCHEMA_MODELS: dict[str, type[Strict]] = {
    "order": Order,
    "instant": InstantActions,
    "state": State,
    "connection": Connection,
    "factsheet": Factsheet,
    "controller-connection": ControllerConnection,
    "controller-request": Request,
    "controller-reply": Reply,
    "controller-event": Event,
}


def json_schemas() -> dict[str, str]:
    """File name → schema text (sorted keys, two-space indent, trailing newline)."""
    out: dict[str, str] = {}
    for name, model in SCHEMA_MODELS.items():
        schema = model.model_json_schema(mode="validation")
        schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
        schema["$id"] = f"https://fleet.invalid/schemas/v{PROTOCOL_VERSION}/{name}.json"
        out[f"{name}.schema.json"] = json.dumps(schema, indent=2, sort_keys=True) + "\n"
    return out
