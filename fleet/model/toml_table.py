"""Strict reading of TOML tables: the one place that turns TOML into typed values.

A :class:`Table` hands out typed values key by key and remembers which keys were read;
:meth:`Table.finish` then refuses any key nobody asked for. Every error names the file,
the table and the key, and says what was expected::

    configs/van.toml: [van] range_km: expected a number > 0 (kilometres), got -5
"""

from __future__ import annotations

import math
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import TypeVar

from fleet.errors import ConfigError
from fleet.identifiers import MAX_CONFIG_BYTES

_T = TypeVar("_T")
_MISSING: object = object()


def read_toml(path: Path) -> dict[str, object]:
    """Parse ``path``; a missing file or a syntax error is a :class:`ConfigError`."""
    try:
        with path.open("rb") as fh:
            data = fh.read(MAX_CONFIG_BYTES + 1)
        if len(data) > MAX_CONFIG_BYTES:
            raise ConfigError(
                f"{path}: larger than {MAX_CONFIG_BYTES:,} bytes (the limit of a config file, "
                "docs/limits.md)"
            )
        return tomllib.loads(data.decode("utf-8"))
    except FileNotFoundError as exc:
        raise ConfigError(f"{path}: file not found") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (byte {exc.start}): not a TOML file") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from exc
    except RecursionError as exc:  # tomllib recurses into nested arrays and inline tables
        raise ConfigError(f"{path}: not a config: arrays or tables nested too deep") from exc
    except (OSError, ValueError) as exc:  # ValueError: a path holding a NUL character
        raise ConfigError(f"{path}: cannot read: {exc}") from exc


class Table:
    """A view on one TOML table that hands out checked values and rejects unknown keys."""

    def __init__(self, data: Mapping[str, object], file: Path, name: str) -> None:
        self._data = data
        self.file = file
        self.name = name
        self._used: set[str] = set()

    @classmethod
    def root(cls, path: Path) -> Table:
        return cls(read_toml(path), path, "")

    # -- error helpers ---------------------------------------------------------------
    def where(self, key: str | None = None) -> str:
        table = f"[{self.name}]" if self.name else "(top level)"
        return f"{self.file}: {table}" + (f" {key}" if key else "")

    def error(self, key: str | None, message: str) -> ConfigError:
        return ConfigError(f"{self.where(key)}: {message}")

    # -- access ---------------------------------------------------------------------
    def has(self, key: str) -> bool:
        return key in self._data

    def keys(self) -> list[str]:
        return list(self._data)

    def _get(self, key: str, default: object) -> object:
        self._used.add(key)
        if key in self._data:
            return self._data[key]
        if default is _MISSING:
            raise self.error(key, "missing (required key)")
        return default

    def number(
        self,
        key: str,
        unit: str,
        *,
        gt: float | None = None,
        ge: float | None = None,
        lt: float | None = None,
        le: float | None = None,
        default: float | object = _MISSING,
    ) -> float:
        """A float or int value in ``unit``, checked against the given bounds."""
        value = self._get(key, default)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self.error(key, f"expected a number ({unit}), got {value!r}")
        try:
            number = float(value)
        except OverflowError:  # a whole number beyond any float (TOML has no bound on them)
            number = float("inf")
        if number != number or number in (float("inf"), float("-inf")):
            raise self.error(key, f"expected a finite number ({unit}), got {value!r}")
        checks = (
            (gt, ">", number > (gt or 0)),
            (ge, ">=", number >= (ge or 0)),
            (lt, "<", number < (lt or 0)),
            (le, "<=", number <= (le or 0)),
        )
        for bound, sign, ok in checks:
            if bound is not None and not ok:
                raise self.error(key, f"expected a number {sign} {bound:g} ({unit}), got {value!r}")
        return number

    def integer(
        self,
        key: str,
        unit: str,
        *,
        ge: int | None = None,
        le: int | None = None,
        default: int | object = _MISSING,
    ) -> int:
        value = self._get(key, default)
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.error(key, f"expected a whole number ({unit}), got {value!r}")
        if ge is not None and value < ge:
            raise self.error(key, f"expected a whole number >= {ge} ({unit}), got {value!r}")
        if le is not None and value > le:
            raise self.error(key, f"expected a whole number <= {le} ({unit}), got {value!r}")
        return value

    def string(self, key: str, *, default: str | object = _MISSING, nonempty: bool = True) -> str:
        value = self._get(key, default)
        if not isinstance(value, str):
            raise self.error(key, f"expected a string, got {value!r}")
        if nonempty and not value.strip():
            raise self.error(key, "expected a non-empty string")
        return value

    def boolean(self, key: str, *, default: bool | object = _MISSING) -> bool:
        value = self._get(key, default)
        if not isinstance(value, bool):
            raise self.error(key, f"expected true or false, got {value!r}")
        return value

    def choice(
        self, key: str, options: tuple[str, ...], *, default: str | object = _MISSING
    ) -> str:
        value = self.string(key, default=default)
        if value not in options:
            raise self.error(key, f"expected one of {', '.join(options)}, got {value!r}")
        return value

    def string_list(self, key: str, *, default: list[str] | object = _MISSING) -> list[str]:
        value = self._get(key, default)
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise self.error(key, f"expected a list of strings, got {value!r}")
        return list(value)

    def number_list(
        self, key: str, unit: str, *, default: list[float] | object = _MISSING
    ) -> list[float]:
        value = self._get(key, default)
        if not isinstance(value, list) or not all(
            isinstance(v, int | float) and not isinstance(v, bool) for v in value
        ):
            raise self.error(key, f"expected a list of numbers ({unit}), got {value!r}")
        numbers = []
        for v in value:
            try:
                number = float(v)
            except OverflowError:  # a whole number beyond any float
                number = float("inf")
            if not math.isfinite(number):
                raise self.error(key, f"expected a list of finite numbers ({unit}), got {v!r}")
            numbers.append(number)
        return numbers

    def path(self, key: str, *, default: str | object = _MISSING) -> Path:
        """A file path, relative paths taken from the directory of this TOML file."""
        raw = Path(self.string(key, default=default))
        return raw if raw.is_absolute() else (self.file.parent / raw)

    def table(self, key: str, *, optional: bool = False) -> Table:
        value = self._get(key, {} if optional else _MISSING)
        if not isinstance(value, dict):
            raise self.error(key, f"expected a table [{self._child(key)}], got {value!r}")
        return Table(value, self.file, self._child(key))

    def tables(self, key: str, *, optional: bool = False) -> list[Table]:
        """An array of tables (``[[key]]``)."""
        value = self._get(key, [] if optional else _MISSING)
        if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
            raise self.error(
                key, f"expected an array of tables [[{self._child(key)}]], got {value!r}"
            )
        return [Table(v, self.file, f"{self._child(key)}[{i}]") for i, v in enumerate(value)]

    def _child(self, key: str) -> str:
        return f"{self.name}.{key}" if self.name else key

    def finish(self) -> None:
        """Refuse every key that was not read: a typo never passes silently."""
        unknown = sorted(set(self._data) - self._used)
        if unknown:
            raise self.error(
                unknown[0],
                "unknown key"
                + (f" (also unknown: {', '.join(unknown[1:])})" if unknown[1:] else ""),
            )


def parse_clock(value: str, where: str) -> int:
    """``"HH:MM"`` or ``"HH:MM:SS"`` → seconds since local midnight."""
    parts = value.split(":")
    try:
        if len(parts) not in (2, 3):
            raise ValueError
        h, m = int(parts[0]), int(parts[1])
        s = int(parts[2]) if len(parts) == 3 else 0
        if not (0 <= h <= 24 and 0 <= m < 60 and 0 <= s < 60) or (h == 24 and (m or s)):
            raise ValueError
    except ValueError as exc:
        raise ConfigError(f"{where}: expected a time HH:MM, got {value!r}") from exc
    return h * 3600 + m * 60 + s
