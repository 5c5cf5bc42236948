"""docs/controller.md stays true: every event the controller records and every key of its
tuning is documented there."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

from fleet.control.config import ControllerConfig

ROOT = Path(__file__).resolve().parents[2]
DOC = (ROOT / "docs" / "controller.md").read_text(encoding="utf-8")


def _section(title: str) -> str:
    start = DOC.index(f"## {title}")
    end = DOC.find("\n## ", start + 1)
    return DOC[start : end if end > 0 else None]


def test_every_event_kind_the_controller_records_is_listed() -> None:
    source = (ROOT / "fleet" / "control" / "core.py").read_text(encoding="utf-8")
    kinds = set(re.findall(r"_event\(\s*\"([a-z_]+)\"", source))
    assert len(kinds) > 40
    listed = set(re.findall(r"`([a-z_]+)`", _section("Events")))
    assert sorted(kinds - listed) == []


def test_every_tuning_key_is_in_the_table() -> None:
    table = _section("Tuning")
    limits = {"max_messages_per_van_per_s", "burst_messages_per_van", "max_pending_messages"}
    for f in dataclasses.fields(ControllerConfig):
        prefix = "limits" if f.name in limits else "controller"
        assert f"`{prefix}.{f.name}`" in table or f"/ `{f.name}`" in table, f.name
