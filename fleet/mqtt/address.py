"""Where the broker is and how to log in: a broker URL or a login file, read in one place.

``mqtt://[user:password@]host[:port]`` (port 1883) or ``mqtts://...`` (TLS, port 8883), and
the login files ``fleet broker credentials`` writes (``<identity>/mqtt.toml``,
``docs/security.md``)::

    [mqtt]
    host = "127.0.0.1"
    port = 1883
    username = "WH-PORTO-01"
    password = "…"
    [tls]                      # optional
    port = 8883
    ca_file = "ca.crt"         # relative to the file
    cert_file = "client.crt"
    key_file = "client.key"

Unknown keys, missing keys and wrong types fail with the file, table and key named.
"""

from __future__ import annotations

import ssl
import tomllib
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TypeVar
from urllib.parse import unquote, urlsplit

from fleet.errors import ConfigError
from fleet.identifiers import MAX_CONFIG_BYTES

_T = TypeVar("_T")


@dataclass(frozen=True, slots=True)
class BrokerAddress:
    host: str
    port: int
    username: str | None = None
    password: str | None = None
    tls: bool = False
    ca_file: str | None = None  # None with tls: the system's certificate authorities
    cert_file: str | None = None  # client certificate (TLS listeners that require one)
    key_file: str | None = None

    @classmethod
    def parse(cls, url: str, *, ca_file: str | None = None) -> BrokerAddress:
        """``mqtt://[user:password@]host[:port]`` or ``mqtts://...`` (TLS, default port 8883)."""
        parts = urlsplit(url)
        if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname:
            raise ConfigError(
                f"broker URL {url!r}: expected mqtt://host[:port] or mqtts://host[:port]"
            )
        try:
            port = parts.port
        except ValueError as exc:
            raise ConfigError(f"broker URL {url!r}: bad port") from exc
        tls = parts.scheme == "mqtts"
        return cls(
            host=parts.hostname,
            port=port or (8883 if tls else 1883),
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password else None,
            tls=tls,
            ca_file=ca_file,
        )

    @classmethod
    def from_login(cls, path: Path, *, tls: bool | None = False) -> BrokerAddress:
        """A login file from ``fleet broker credentials`` (``<identity>/mqtt.toml``).

        ``[mqtt]`` holds host, port, username and password. The ``[tls]`` table (port and
        certificate files, paths relative to the file) is used when ``tls`` is true (and then
        required), ignored but still checked when false, used if present when ``tls`` is None
        (the firmware bridge's ``--mqtt-config``).
        """
        data = _read_login(path)
        mqtt = _table(data, "mqtt", path)
        where = f"{path}: [mqtt]"
        address = cls(
            host=_take(mqtt, "host", str, where),
            port=_port(mqtt, where),
            username=_take(mqtt, "username", str, where),
            password=_take(mqtt, "password", str, where),
        )
        _no_more(mqtt, where)
        if "tls" in data:
            table = _table(data, "tls", path)
            where = f"{path}: [tls]"
            port = _port(table, where)
            files = {
                key: str(path.parent / _take(table, key, str, where))
                for key in ("ca_file", "cert_file", "key_file")
            }
            _no_more(table, where)
            if tls is None or tls:
                address = replace(address, port=port, tls=True, **files)
        elif tls:
            raise ConfigError(f"{path}: [tls]: this login has no [tls] table (made without --tls?)")
        _no_more(data, f"{path}: (top level)")
        return address

    def ssl_context(self) -> ssl.SSLContext | None:
        """The TLS context for this address, None for plain TCP; bad files are a ConfigError."""
        if not self.tls:
            return None
        try:
            context = ssl.create_default_context(cafile=self.ca_file)
            if self.cert_file:
                context.load_cert_chain(self.cert_file, self.key_file)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"TLS files for {self}: {exc}") from exc
        return context

    def __str__(self) -> str:
        who = f"{self.username}@" if self.username else ""
        return f"{'mqtts' if self.tls else 'mqtt'}://{who}{self.host}:{self.port}"


def _read_login(path: Path) -> dict[str, object]:
    what = f"MQTT login file {path}"
    try:
        with path.open("rb") as fh:
            data = fh.read(MAX_CONFIG_BYTES + 1)
        if len(data) > MAX_CONFIG_BYTES:
            raise ConfigError(f"{what}: larger than {MAX_CONFIG_BYTES:,} bytes")
        return tomllib.loads(data.decode("utf-8"))
    except FileNotFoundError as exc:
        raise ConfigError(f"{what}: file not found") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{what}: not UTF-8 text (byte {exc.start}): not a TOML file") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{what}: not valid TOML: {exc}") from exc
    except RecursionError as exc:  # tomllib recurses into nested arrays and inline tables
        raise ConfigError(f"{what}: arrays or tables nested too deep") from exc
    except (OSError, ValueError) as exc:  # ValueError: a NUL in the path
        raise ConfigError(f"{what}: cannot read: {exc}") from exc


def _table(data: dict[str, object], key: str, path: Path) -> dict[str, object]:
    value = data.pop(key, None)
    if not isinstance(value, dict):
        raise ConfigError(f"{path}: expected a table [{key}], got {value!r}")
    return value


def _take(table: dict[str, object], key: str, kind: type[_T], where: str) -> _T:
    if key not in table:
        raise ConfigError(f"{where} {key}: missing")
    value = table.pop(key)
    if not isinstance(value, kind) or isinstance(value, bool):
        kind_name = {str: "a string", int: "an integer"}.get(kind, kind.__name__)
        raise ConfigError(f"{where} {key}: expected {kind_name}, got {value!r}")
    return value


def _port(table: dict[str, object], where: str) -> int:
    port = _take(table, "port", int, where)
    if not 0 < port < 65536:
        raise ConfigError(f"{where} port: expected a TCP port 1..65535, got {port}")
    return port


def _no_more(table: dict[str, object], where: str) -> None:
    if table:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(sorted(table))}")
