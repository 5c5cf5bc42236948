"""What a conformance run found: one result per case, and the summary line."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from enum import StrEnum


class Outcome(StrEnum):
    PASSED = "passed"
    FAILED = "failed"
    SKIPPED = "skipped"  # not run, with the reason; never counted as passed


@dataclass(frozen=True, slots=True)
class CaseResult:
    name: str
    outcome: Outcome
    detail: str = ""  # what was seen (passed), what was wrong (failed), why not run (skipped)
    seconds: float = 0.0


@dataclass
class Report:
    """Results in the order the cases ran."""

    results: list[CaseResult] = field(default_factory=list)

    def add(self, result: CaseResult) -> None:
        self.results.append(result)

    def names(self, outcome: Outcome) -> list[str]:
        return [r.name for r in self.results if r.outcome is outcome]

    @property
    def ok(self) -> bool:
        """Nothing failed (skipped cases are listed, and do not fail a run)."""
        return not self.names(Outcome.FAILED) and bool(self.results)

    def summary(self) -> dict[str, object]:
        return {
            "cases": len(self.results),
            "passed": len(self.names(Outcome.PASSED)),
            "failed": len(self.names(Outcome.FAILED)),
            "skipped": len(self.names(Outcome.SKIPPED)),
            "failed_cases": self.names(Outcome.FAILED),
        }

    def json_line(self) -> str:
        """The last line a run prints: the summary as one JSON object."""
        return json.dumps(self.summary(), separators=(",", ":"))
