"""Strategies that damage valid inputs: the raw material of every fuzz target.

Random bytes alone rarely get past the first check of a parser; damaging a *valid* input a
little — one value of the wrong type, one digit changed, one line lost, one byte flipped —
reaches the checks behind it. The edits are made by a :class:`Mutator` (a seeded
``random.Random``) from a seed Hypothesis draws, over a pool of valid inputs drawn once: two
draws per input keep the rate in the thousands per second, and every input is still
reproducible from its seed. Three families:

* :meth:`Mutator.edit_bytes`: byte-level edits (flip, set, insert, delete, truncate,
  duplicate, splice in tokens that parsers treat specially);
* :meth:`Mutator.edit_json`: structural edits of a JSON document (a value of another type or
  an extreme one, one digit changed, a key dropped or added, a list or string grown);
* :meth:`Mutator.edit_text`: line-, value- and character-level edits of a TOML or CSV text.
"""

from __future__ import annotations

import json
import math
import random
import re
import tomllib
from collections.abc import Sequence
from typing import Any, TypeVar

from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import seed as hypothesis_seed
from hypothesis import strategies as st

T = TypeVar("T")
SEEDS = st.integers(0, 2**64 - 1)

# -- values parsers find interesting -------------------------------------------------------
EXTREME_NUMBERS: list[Any] = [
    0,
    -1,
    1,
    2**31,
    2**53 + 1,
    2**63,
    -(2**63) - 1,
    10**30,
    0.0,
    -0.0,
    1e-320,
    1e308,
    -1e308,
    0.1,
    359.99999,
    360.0,
    180.0000001,
    -90.0000001,
    86_400,
    86_401,
]
EXTREME_STRINGS: list[str] = [
    "",
    " ",
    "x" * 65,
    "x" * 501,
    "é",
    "\u0000",
    "\ud7ff",
    "\U0001f69a",
    "a/b",
    "+",
    "#",
    "../../etc/passwd",
    "1.0",
    "2.0",
    "0.9",
    "NaN",
    "Infinity",
    "-Infinity",
    "null",
    "true",
    "2026-11-23T10:00:00.000Z",
    "2026-13-45T99:99:99Z",
    "2026-02-30T10:00:00Z",
    "9999-12-31T23:59:59.999Z",
    "0001-01-01T00:00:00Z",
    "2026-11-23T10:00:00+01:00",
    "fleet-controller",
    "WH-PORTO-01",
    "WH-PORTO-02",
    "emergency_stop",
    "depot",
    "HMAC-SHA256",
    "0" * 64,
    "f" * 64,
    "F" * 64,
]
DEEP_MARK = "\u2063deep:"  # an invisible separator: never in a seed


def _expand_deep(text: str) -> str:
    """Replace each ``"<DEEP_MARK>N"`` string by ``N`` nested arrays around a 0."""
    while DEEP_MARK in text:
        at = text.index(DEEP_MARK)
        start = text.rindex('"', 0, at)
        end = text.index('"', at)
        digits = re.match(r"\d{1,4}", text[at + len(DEEP_MARK) : end])  # edits may mangle it
        n = min(5000, int(digits.group())) if digits else 33
        text = text[:start] + "[" * n + "0" + "]" * n + text[end + 1 :]
    return text


HUGE_NUMBERS: list[Any] = [
    2**63,
    2**63 - 1,
    -(2**63),
    -(2**63) - 1,
    2**80,
    -(2**80),
    10**400,
    99999999999,
    1e308,
    5e-324,
    -0.0,
]
# one character of every Unicode general category (and the surrogate and private-use areas)
UNICODE_SAMPLES: list[str] = [
    "A",
    "z",
    "\u01c5",
    "\u02b0",
    "\u00aa",
    "\u0301",
    "\u0903",
    "\u20dd",
    "7",
    "\u216b",
    "\u00bd",
    "_",
    "-",
    "(",
    ")",
    "\u00ab",
    "\u00bb",
    "!",
    "+",
    "$",
    "^",
    "\u00a6",
    " ",
    "\u2028",
    "\u2029",
    "\x00",
    "\x1f",
    "\x7f",
    "\u200b",
    "\ud800",
    "\ue000",
    "\U0010ffff",
    "/",
    "#",
    ".",
    ":",
    "\u00e9",
    "\u00e7",
    "\u0416",
    "\u4e2d",
    "\U0001f69a",
]
BYTE_TOKENS: list[bytes] = [
    b'"',
    b"{",
    b"}",
    b"[",
    b"]",
    b",",
    b":",
    b"\\",
    b"\\u0000",
    b"\\ud800",
    b"\xff",
    b"\xc3",
    b"\x00",
    b"NaN",
    b"Infinity",
    b"-Infinity",
    b"1e999",
    b"-0",
    b"null",
    b"true",
    b"\n",
    b"\r",
    b"\t",
    b"=",
    b"#",
    b"'''",
    b'"""',
    b"\xef\xbb\xbf",
]


class Mutator(random.Random):
    """Seeded edits of bytes, JSON documents and text."""

    # -- scalars -----------------------------------------------------------------------------
    def json_value(self, depth: int = 0) -> Any:
        roll = self.random()
        if depth < 2 and roll < 0.12:
            return [self.json_value(depth + 1) for _ in range(self.randint(0, 3))]
        if depth < 2 and roll < 0.2:
            return {self.choice(["a", "", "x" * 9]): self.json_value(depth + 1)}
        return self.choice(
            [
                None,
                self.random() < 0.5,
                self.choice(EXTREME_NUMBERS),
                self.randint(-(2**70), 2**70),
                self.uniform(-1e6, 1e6),
                self.choice(EXTREME_STRINGS),
                "".join(chr(self.randint(32, 0x2FF)) for _ in range(self.randint(0, 12))),
            ]
        )

    def unicode_id(self) -> str:
        """An id-like string: mostly id characters, some of any Unicode category."""
        pool = "ABCXYZabc0129_-."
        out = []
        for _ in range(self.choice([1, 2, 8, 20, 63, 64, 65, 200])):
            roll = self.random()
            if roll < 0.15:
                out.append(self.choice(UNICODE_SAMPLES))
            elif roll < 0.2:
                out.append(chr(self.randint(0x80, 0x10FFFF)))
            else:
                out.append(self.choice(pool))
        return "".join(out)

    # -- TOML documents ----------------------------------------------------------------------
    def edit_toml(self, text: str) -> str:
        """Parse, edit the tree like JSON (types, extremes, nesting, ids), write TOML again."""
        doc = json.loads(json.dumps(tomllib.loads(text), default=str))
        for _ in range(self.randint(1, 3)):
            doc = self._edit_once(doc)
            if self.random() < 0.3:
                paths = [p for p in _paths(doc) if p and isinstance(_get(doc, p), str)]
                if paths:
                    path = self.choice(paths)
                    _get(doc, path[:-1])[path[-1]] = self.unicode_id()
        if not isinstance(doc, dict):
            doc = {"value": doc}
        return _expand_deep(toml_text(doc))

    # -- bytes -------------------------------------------------------------------------------
    def edit_bytes(self, data: bytes) -> bytes:
        buf = bytearray(data)
        for _ in range(self.randint(1, 4)):
            op = self.choice(["flip", "set", "insert", "delete", "truncate", "dup", "token"])
            at = self.randint(0, len(buf))
            if op == "flip" and at < len(buf):
                buf[at] ^= 1 << self.randint(0, 7)
            elif op == "set" and at < len(buf):
                buf[at] = self.randint(0, 255)
            elif op == "insert":
                buf[at:at] = self.randbytes(self.randint(1, 8))
            elif op == "delete" and buf:
                del buf[at : at + self.randint(1, 16)]
            elif op == "truncate":
                del buf[at:]
            elif op == "dup" and buf:
                buf[at:at] = buf[at : at + self.randint(1, 32)]
            elif op == "token":
                buf[at:at] = self.choice(BYTE_TOKENS)
        return bytes(buf)

    # -- JSON documents ----------------------------------------------------------------------
    def edit_json(self, doc: Any) -> bytes:
        doc = json.loads(json.dumps(doc))  # a private copy
        for _ in range(self.randint(1, 3)):
            doc = self._edit_once(doc)
        return self._serialise(doc)

    def _edit_once(self, doc: Any) -> Any:
        paths = _paths(doc)
        path = self.choice(paths)
        op = self.choice(
            [
                "replace",
                "replace",
                "drop",
                "add",
                "grow",
                "retype",
                "digit",
                "digit",
                "deep",
                "huge",
            ]
        )
        if not path:
            return self.json_value() if op == "replace" else doc
        parent, key = _get(doc, path[:-1]), path[-1]
        value = parent[key]
        if op == "replace":
            parent[key] = self.json_value()
        elif op == "drop":
            del parent[key]
        elif op == "add" and isinstance(parent, dict):
            name = self.choice(["extra", "signature", "header", "van_id", "x" * 70])
            parent[name] = self.json_value(1)
        elif op == "grow":
            if isinstance(value, list) and value:
                parent[key] = value * self.choice([2, 17, 300])
            elif isinstance(value, str):
                parent[key] = value * self.choice([2, 40, 300])
        elif op == "digit":
            # the smallest edit that keeps the type: one digit of a number or a string
            if isinstance(value, str | int | float) and not isinstance(value, bool):
                text = str(value)
                spots = [i for i, c in enumerate(text) if c.isdigit()]
                if spots:
                    i = self.choice(spots)
                    text = text[:i] + self.choice("0123456789") + text[i + 1 :]
                    if isinstance(value, str):
                        parent[key] = text
                    elif isinstance(value, int):
                        parent[key] = int(text)
                    else:
                        parent[key] = float(text)
        elif op == "deep":
            # nesting past every bound: 33 (our limit + 1), 250 (pydantic's), 5,000 (Python's);
            # a marker, expanded in the text at the end (the tree itself stays shallow)
            parent[key] = f"{DEEP_MARK}{self.choice([33, 250, 5000])}"
        elif op == "huge":
            parent[key] = self.choice(HUGE_NUMBERS)
        elif op == "retype":
            if isinstance(value, bool):
                parent[key] = int(value)
            elif isinstance(value, int | float):
                parent[key] = str(value)
            elif isinstance(value, str):
                parent[key] = [value]
            elif isinstance(value, list):
                parent[key] = {"0": value[0]} if value else {}
            elif isinstance(value, dict):
                parent[key] = list(value.values())
        return doc

    def _serialise(self, doc: Any) -> bytes:
        return _expand_deep(self._serialise_tree(doc).decode("utf-8", "surrogatepass")).encode(
            "utf-8", "surrogatepass"
        )

    def _serialise_tree(self, doc: Any) -> bytes:
        style = self.choice(["compact", "pretty", "nan", "ascii"])
        if style == "nan":
            # JSON has no NaN or Infinity; Python's writer emits them on request
            text = json.dumps(doc, allow_nan=True).replace(
                "0.0", self.choice(["NaN", "Infinity", "-Infinity"]), 1
            )
        elif style == "pretty":
            text = json.dumps(doc, indent=2, ensure_ascii=False)
        elif style == "ascii":
            text = json.dumps(doc, ensure_ascii=True)
        else:
            text = json.dumps(doc, separators=(",", ":"), ensure_ascii=False)
        return text.encode("utf-8", "surrogatepass")

    # -- text (TOML, CSV) --------------------------------------------------------------------
    def edit_text(
        self, text: str, values: Sequence[str], lines_pool: Sequence[str], sep: str
    ) -> str:
        lines = text.split("\n")
        for _ in range(self.randint(1, 4)):
            op = self.choice(
                [
                    "value",
                    "value",
                    "value",
                    "digit",
                    "digit",
                    "delete",
                    "dup",
                    "swap",
                    "insert",
                    "chars",
                ]
            )
            i = self.randint(0, max(0, len(lines) - 1))
            line = lines[i] if lines else ""
            if op == "value" and lines:
                if sep == "=" and "=" in line and not line.lstrip().startswith("#"):
                    lines[i] = f"{line.split('=', 1)[0]}= {self.choice(values)}"
                elif sep == "," and line:
                    cells = line.split(",")
                    cells[self.randrange(len(cells))] = self.choice(values)
                    lines[i] = ",".join(cells)
            elif op == "digit" and lines:
                spots = [k for k, c in enumerate(line) if c.isdigit()]
                if spots:
                    k = self.choice(spots)
                    lines[i] = line[:k] + self.choice("0123456789") + line[k + 1 :]
            elif op == "delete" and lines:
                del lines[i]
            elif op == "dup" and lines:
                lines.insert(i, line)
            elif op == "swap" and len(lines) > 1:
                j = self.randrange(len(lines))
                lines[i], lines[j] = lines[j], lines[i]
            elif op == "insert":
                lines.insert(i, self.choice(lines_pool))
            elif op == "chars" and lines:
                at = self.randint(0, len(line))
                piece = self.choice(['"', "'", "[", "]", "\\", sep, "\u00e9", "\x00", "\ufeff", ""])
                lines[i] = line[:at] + piece + line[at + self.randint(0, 2) :]
        return "\n".join(lines)


def _paths(doc: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(doc, dict):
        for k, v in doc.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            out += _paths(v, (*prefix, i))
    return out


def _get(doc: Any, path: Sequence[Any]) -> Any:
    for p in path:
        doc = doc[p]
    return doc


# -- pools and strategies ------------------------------------------------------------------
def pool(strategy: st.SearchStrategy[T], size: int, seed: int = 0) -> list[T]:
    """``size`` valid examples of ``strategy``, the same ones on every run."""
    drawn: list[T] = []

    @hypothesis_seed(seed)
    @settings(
        max_examples=size,
        database=None,
        deadline=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(strategy)
    def collect(value: T) -> None:
        drawn.append(value)

    collect()
    return drawn


def mutated_bytes(seeds: Sequence[bytes]) -> st.SearchStrategy[bytes]:
    """One of ``seeds`` with one to four byte-level edits."""
    return st.builds(lambda s, n: Mutator(n).edit_bytes(s), st.sampled_from(list(seeds)), SEEDS)


def mutated_json(seeds: Sequence[bytes]) -> st.SearchStrategy[bytes]:
    """One of ``seeds`` (JSON) with one to three structural edits, serialised."""
    docs = [json.loads(s) for s in seeds]
    return st.builds(lambda d, n: Mutator(n).edit_json(d), st.sampled_from(docs), SEEDS)


def damaged(seeds: Sequence[bytes]) -> st.SearchStrategy[bytes]:
    """The mix for a JSON parser: valid, structurally damaged, byte-damaged, random."""
    return st.one_of(
        st.sampled_from(list(seeds)),
        mutated_json(seeds),
        mutated_json(seeds),
        mutated_bytes(seeds),
        st.binary(max_size=200),
    )


def mutated_text(
    seeds: Sequence[str], values: Sequence[str], lines_pool: Sequence[str], *, sep: str
) -> st.SearchStrategy[str]:
    """One of ``seeds`` with one to four line/value/character edits (``sep``: "=" or ",")."""
    return st.builds(
        lambda t, n: Mutator(n).edit_text(t, values, lines_pool, sep),
        st.sampled_from(list(seeds)),
        SEEDS,
    )


TOML_VALUES = [
    '""',
    '"x"',
    '"a/b"',
    "0",
    "-1",
    "1",
    "1.5",
    "-0.0",
    "1e400",
    "-1e400",
    "nan",
    "inf",
    "-inf",
    "9223372036854775807",
    "99999999999999999999",
    "true",
    "[]",
    "[1, 2]",
    '["a", 1]',
    "{}",
    "{ a = 1 }",
    "1979-05-27T07:32:00Z",
    "1979-05-27",
    "07:32:00",
    '"06:00"',
    '"24:00"',
    '"25:00"',
    '"23:59:60"',
    '"-01:00"',
    '"Europe/Lisbon"',
    '"Nowhere/Atlantis"',
    '"UTC"',
    '"9999-12-31"',
    '"2026-02-30"',
    '"é"',
    '"' + "x" * 300 + '"',
    "0x10",
    "1_000",
    "+5",
]
TOML_LINES = [
    "",
    "# comment",
    "[van]",
    "[service]",
    "[site]",
    "[shift]",
    "[warehouse]",
    "[[stations]]",
    "[controller]",
    "[limits]",
    "[scenario]",
    "[run]",
    "[fleet]",
    "[demand]",
    "[[events]]",
    "[roads]",
    "unknown_key = 1",
    'name = "x"',
    "vans = -3",
    "vans = 100000",
    'id = "WH-PORTO"',
    "range_km = 0",
    "[van.extra]",
    "= 1",
    "[",
    "x = ",
    'kind = "breakdown"',
    'at = "10:00"',
    'van = "nobody"',
    '[[events]]\nat = "10:00"\nkind = "link_loss"',
]
CSV_VALUES = [
    "",
    " ",
    "nan",
    "inf",
    "-inf",
    "-0",
    "1e309",
    "-1",
    "0",
    "181",
    "-91",
    "1000000",
    "0.0001",
    "24:00",
    "23:59:60",
    "25:00",
    "12:60",
    "7:5",
    "07:05:00",
    "2026-11-23T10:00",
    "2026-11-23T10:00:00+14:00",
    "2026-11-24T00:00",
    "9999-12-31T23:59:59-12:00",
    "0001-01-01T00:00:00+12:00",
    "2026-02-30T10:00",
    "2026-11-23",
    "T",
    "ST-BOAVISTA",
    "ST-UNKNOWN",
    "P1",
    '"a,b"',
    '"line\nbreak"',
    '"unterminated',
    "\ufeffparcel_id",
    "é",
    "\x00",
    "x" * 300,
]
CSV_LINES = [
    "",
    ",,,,",
    "parcel_id,lon,lat,weight_kg,volume_m3",
    "P9,-8.6,41.1,1,0.01",
    "P1,-8.6,41.1,1,0.01",
    '"P,2",-8.6,41.1,1,0.01',
    "P3,-8.6,41.1,1",
    "P4,-8.6,41.1,1,0.01,,,,,",
]


def _toml_key(key: str) -> str:
    plain = key and key.isascii() and all(c.isalnum() or c in "_-" for c in key)
    return key if plain else json.dumps(key)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value if v is not None) + "]"
    if isinstance(value, dict):
        pairs = [f"{_toml_key(k)} = {_toml_value(v)}" for k, v in value.items() if v is not None]
        return "{ " + ", ".join(pairs) + " }"
    return '""'


def _toml_pairs(table: dict[str, Any]) -> list[str]:
    return [f"{_toml_key(k)} = {_toml_value(v)}" for k, v in table.items() if v is not None]


def toml_text(doc: dict[str, Any]) -> str:
    """A small TOML writer for the fuzzer: scalars, then tables, then arrays of tables."""
    head: list[str] = []
    tables: list[str] = []
    for key, value in doc.items():
        if value is None:
            continue
        if isinstance(value, dict):
            tables += [f"[{_toml_key(key)}]", *_toml_pairs(value)]
        elif isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            for item in value:
                tables += [f"[[{_toml_key(key)}]]", *_toml_pairs(item)]
        else:
            head.append(f"{_toml_key(key)} = {_toml_value(value)}")
    return "\n".join(head + tables) + "\n"


def mutated_toml(seeds: Sequence[str]) -> st.SearchStrategy[str]:
    """One of ``seeds`` (TOML), edited as a tree (grammar-aware) and written again."""
    return st.builds(lambda t, n: Mutator(n).edit_toml(t), st.sampled_from(list(seeds)), SEEDS)
