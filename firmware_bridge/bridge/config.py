"""The bridge's settings and the files it reads: the van's signing key and MQTT login.

Both files are TOML as written by ``fleet broker credentials`` (docs/security.md). The login
file ``vans/<van>/mqtt.toml`` (and a ``--broker`` URL) is read by
:class:`fleet.mqtt.BrokerAddress`, the code the controller and the ``fleet`` command use too;
its format is documented there. The signing key::

    # vans/<van>/signing.key
    key_id = "WH-PORTO-01.k1"
    secret_hex = "…64 hex digits…"

Unknown keys, missing keys and wrong types fail with the file and key named.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from firmware_bridge import wire
from firmware_bridge.bridge.core import STATE_PERIOD_S, TELEMETRY_STALE_S, VCU_GRACE_S
from firmware_bridge.errors import BridgeError
from firmware_bridge.link import LinkConfig
from fleet.mqtt import BrokerAddress
from fleet.protocol import SigningKey

DEFAULT_STATE_PERIOD_S = STATE_PERIOD_S  # the unprompted state: 1 Hz
DEFAULT_TICK_S = 0.25  # how often the bridge checks whether a state is due
DEFAULT_VCU_GRACE_S = VCU_GRACE_S  # a lost VCU link is a warning this long, then fatal
DEFAULT_TELEMETRY_STALE_S = TELEMETRY_STALE_S  # older VCU telemetry is reported stale


class ConfigFileError(BridgeError):
    """A key file or a bridge setting is wrong (file and key named)."""


@dataclass(frozen=True, slots=True)
class VanProfile:
    """What the factsheet says about the van (defaults: the L4 light truck of configs/van.toml)."""

    model: str = "L4 light truck"
    firmware_version: str = "fleet-bridge 0.1.0"
    top_speed_mps: float = 60 / 3.6
    payload_kg: float = 1000.0
    cargo_volume_m3: float = 24.0
    battery_kwh: float = 48.0
    range_m: float = 160_000.0


@dataclass(frozen=True, slots=True)
class BridgeSettings:
    van_id: str
    serial_url: str
    broker: BrokerAddress  # fleet.mqtt: from --broker or the login file
    keys: tuple[SigningKey, ...]
    state_dir: Path
    topic_prefix: str = ""
    client_id: str = ""  # default: the van id (docs/protocol.md section 1.1)
    baud: int = 115_200  # pacing of our writes; 0: none (tests, benchmarks)
    link: LinkConfig = field(default_factory=lambda: LinkConfig(wire.Role.BRIDGE))
    spool_max_messages: int = 10_000
    max_command_age_s: float = 60.0
    # MQTT session (docs/bridge.md "Watchdogs"): a broken connection is noticed at once when
    # the socket closes, within about keepalive_s when the peer falls silent; every broker
    # operation (CONNACK, SUBACK, PUBACK) is given up after mqtt_timeout_s; a failed attempt
    # is retried after reconnect_s — so a restarted broker is back in use within ~1 s.
    reconnect_s: float = 0.5
    keepalive_s: int = 3
    mqtt_timeout_s: float = 2.0
    state_period_s: float = DEFAULT_STATE_PERIOD_S
    tick_s: float = DEFAULT_TICK_S
    vcu_grace_s: float = DEFAULT_VCU_GRACE_S
    telemetry_stale_s: float = DEFAULT_TELEMETRY_STALE_S
    profile: VanProfile = field(default_factory=VanProfile)

    def __post_init__(self) -> None:
        positive = (
            "reconnect_s",
            "keepalive_s",
            "mqtt_timeout_s",
            "state_period_s",
            "tick_s",
            "telemetry_stale_s",
        )
        for name in positive:
            if not getattr(self, name) > 0:
                raise ConfigFileError(f"bridge setting {name}={getattr(self, name)}: expected > 0")
        if not self.vcu_grace_s >= 0:
            raise ConfigFileError(f"bridge setting vcu_grace_s={self.vcu_grace_s}: expected ≥ 0")

    @property
    def mqtt_client_id(self) -> str:
        """The van id unless told otherwise: a broker from `fleet broker credentials` forces
        the client id to the login name, which for a van is its van id."""
        return self.client_id or self.van_id


MAX_FILE_BYTES = 1024 * 1024  # a key, login or settings file (docs/limits.md)


def _read_toml(path: Path, what: str) -> dict[str, Any]:
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_FILE_BYTES + 1)
        if len(data) > MAX_FILE_BYTES:
            raise ConfigFileError(f"{what} {path}: larger than {MAX_FILE_BYTES:,} bytes")
        return tomllib.loads(data.decode("utf-8"))
    except FileNotFoundError as exc:
        raise ConfigFileError(f"{what} {path}: file not found") from exc
    except UnicodeDecodeError as exc:
        raise ConfigFileError(
            f"{what} {path}: not UTF-8 text (byte {exc.start}): not a TOML file"
        ) from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigFileError(f"{what} {path}: not valid TOML: {exc}") from exc
    except RecursionError as exc:  # tomllib recurses into nested arrays and inline tables
        raise ConfigFileError(f"{what} {path}: arrays or tables nested too deep") from exc
    except (OSError, ValueError) as exc:  # ValueError: a NUL in the path
        raise ConfigFileError(f"{what} {path}: cannot read: {exc}") from exc


def _take(table: dict[str, Any], key: str, kind: type, where: str) -> Any:
    if key not in table:
        raise ConfigFileError(f"{where}: missing key {key!r}")
    value = table.pop(key)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ConfigFileError(f"{where}: {key!r} must be a {kind.__name__}, got {value!r}")
    return value


def _no_more(table: dict[str, Any], where: str) -> None:
    if table:
        raise ConfigFileError(f"{where}: unknown key(s) {', '.join(sorted(table))}")


def load_signing_key(path: Path) -> SigningKey:
    data = _read_toml(path, "signing key file")
    where = str(path)
    key_id = _take(data, "key_id", str, where)
    secret_hex = _take(data, "secret_hex", str, where)
    _no_more(data, where)
    try:
        secret = bytes.fromhex(secret_hex)
    except ValueError as exc:
        raise ConfigFileError(f"{where}: secret_hex is not hexadecimal") from exc
    try:
        return SigningKey(key_id=key_id, secret=secret)
    except ValueError as exc:
        raise ConfigFileError(f"{where}: {exc}") from exc
