"""docs/safety.md names, for every fault, the tests that prove what happens: each one named
must exist (its file, and the test function defined in it), every fault must name one, every
item of issue 14's list must have its section, and every fault-injection scenario it names
must be one the benchmark runs — so the page cannot rot as tests are renamed or removed."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.faults.scenarios import SCENARIOS

REPO = Path(__file__).resolve().parents[1]
DOC = REPO / "docs" / "safety.md"
TEST_REF = re.compile(r"`(tests/[\w/]+\.py)::(\w+)(?:\[[^\]`]*\])?`")
SECTION = re.compile(r"^### (\d+)\. (.+)$", re.MULTILINE)


def _text() -> str:
    return DOC.read_text(encoding="utf-8")


def _named_tests() -> list[tuple[str, str]]:
    return sorted(set(TEST_REF.findall(_text())))


def _sections() -> dict[str, str]:
    """Each numbered fault section's title → its text."""
    text = _text()
    marks = list(SECTION.finditer(text))
    ends = [m.start() for m in marks[1:]] + [text.index("\n## ", marks[-1].start())]
    return {m.group(2): text[m.end() : end] for m, end in zip(marks, ends, strict=True)}


def test_the_page_names_tests() -> None:
    assert len(_named_tests()) >= 100


@pytest.mark.parametrize(("path", "name"), _named_tests(), ids="::".join)
def test_every_test_the_page_names_is_defined_in_its_file(path: str, name: str) -> None:
    file = REPO / path
    assert file.is_file(), f"docs/safety.md names {path}, which does not exist"
    source = file.read_text(encoding="utf-8")
    defined = re.search(rf"^\s*(?:async\s+)?def {name}\(", source, re.MULTILINE)
    assert defined, f"docs/safety.md names {path}::{name}, which {path} does not define"


def test_every_fault_names_the_tests_that_prove_it() -> None:
    sections = _sections()
    assert len(sections) >= 20
    for title, body in sections.items():
        assert TEST_REF.search(body), f"docs/safety.md, section {title!r}: no test named"
        assert "Proved by:" in body, f"docs/safety.md, section {title!r}: no 'Proved by:'"


def test_every_item_of_issue_14_has_a_section() -> None:
    text = _text()
    table = text[text.index("## Issue 14's list") :].split("\n## ")[0]
    rows = re.findall(r"^\| (\d+) \| [^|]+ \| ([\d, and()]+) \|$", table, re.MULTILINE)
    assert [int(item) for item, _ in rows] == list(range(1, 13))
    numbers = {int(n) for n in SECTION.findall(text) for n in [n[0]]}
    for item, where in rows:
        for n in re.findall(r"\d+", where):
            assert int(n) in numbers, f"issue item {item} points to section {n}, not on the page"


def test_every_scenario_the_page_names_is_one_the_benchmark_runs() -> None:
    text = _text()
    table = text[text.index("## Restarts with real processes") :]
    named = set(re.findall(r"^\| `(\w+)`(?:, `(\w+)`)? \|", table, re.MULTILINE))
    scenarios = {s for pair in named for s in pair if s}
    assert scenarios, "the page lists no scenario"
    assert scenarios <= set(SCENARIOS), scenarios - set(SCENARIOS)
    for scenario in re.findall(r"benchmark scenarios? `(\w+)`", text):
        assert scenario in SCENARIOS, f"docs/safety.md names scenario {scenario!r}"


def test_the_readme_and_the_protocol_docs_link_the_page() -> None:
    for doc in ("README.md", "docs/protocol.md", "docs/controller.md", "docs/bridge.md"):
        assert "safety.md" in (REPO / doc).read_text(encoding="utf-8"), f"{doc} does not link it"
