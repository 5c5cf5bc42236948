"""Crashes the fuzzing found in code this suite does not own, reported to its owners.

Each entry names the module at fault, what breaks, and how it is recognised. The fuzz
targets count an input that hits a known defect as ``known:<id>`` (the benchmark reports
them as crashes, one line each) and keep looking for new ones; ``test_known_defects.py``
reproduces every entry as a strict ``xfail``, so the day a defect is fixed that test passes,
strict xfail turns it red, and the entry is deleted here.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from pydantic import ValidationError


@dataclass(frozen=True)
class KnownDefect:
    id: str
    owner: str  # the file to fix
    summary: str
    matches: Callable[[BaseException], bool]


def _validation_of(models: set[str], *fields: str) -> Callable[[BaseException], bool]:
    def match(exc: BaseException) -> bool:
        if not isinstance(exc, ValidationError) or exc.title not in models:
            return False
        locs = {".".join(str(p) for p in e["loc"]) for e in exc.errors(include_url=False)}
        return bool(locs) and locs <= set(fields)

    return match


def _message(kind: type[BaseException], pattern: str) -> Callable[[BaseException], bool]:
    regex = re.compile(pattern)
    return lambda exc: isinstance(exc, kind) and regex.search(str(exc)) is not None


def _errno(code: int) -> Callable[[BaseException], bool]:
    return lambda exc: isinstance(exc, OSError) and exc.errno == code


def _any(*matchers: Callable[[BaseException], bool]) -> Callable[[BaseException], bool]:
    return lambda exc: any(m(exc) for m in matchers)


# none open: the last one (the bridge's state from an implausible VCU reading) was fixed and
# stays as a regression test in test_fixed_defects.py
KNOWN_DEFECTS: tuple[KnownDefect, ...] = ()


def known_defect(exc: BaseException) -> KnownDefect | None:
    for defect in KNOWN_DEFECTS:
        if defect.matches(exc):
            return defect
    return None
