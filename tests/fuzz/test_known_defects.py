"""The defects fuzzing found in other parts, reproduced (``known_defects.py``).

Each test states what a user needs and fails today for the reason given; ``strict`` turns
the fix into a failure here too, so that the entry in ``known_defects.py`` and the marker
are removed together and the fuzz targets count the input as a crash again if it returns.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from firmware_bridge import wire
from firmware_bridge.bridge.core import BridgeCore, PublishState
from fleet.protocol import (
    CommandVerifier,
    derive_van_key,
)
from tests.fuzz.known_defects import KNOWN_DEFECTS
from tests.support import protocol_examples as ex

REPO = Path(__file__).resolve().parents[2]
KEY = derive_van_key(ex.MASTER_SECRET, ex.VAN)
HEADER = "parcel_id,lon,lat,weight_kg,volume_m3,earliest,latest\n"


def _defect(defect_id: str) -> str:
    (found,) = [d for d in KNOWN_DEFECTS if d.id == defect_id]
    return f"{found.owner}: {found.summary}"


def _telemetry(**fields: int) -> wire.Telemetry:
    base = dict(
        uptime_ms=1, lon_e7=-86110000, lat_e7=411496000, heading_cdeg=0, speed_cmps=0,
        soc_cpct=8000, range_m=100_000, odometer_m=0, mission_id=0, last_wp=wire.WP_NONE,
        wp_queued=0, drive_state=wire.DriveState.IDLE, door=wire.DoorState.CLOSED,
        fault_bits=0, estop_id=0,
    )  # fmt: skip
    return wire.Telemetry(**{**base, **fields})  # type: ignore[arg-type]


@pytest.mark.xfail(
    raises=ValidationError, strict=True, reason=_defect("bridge-telemetry-out-of-range")
)
@pytest.mark.parametrize("field", [{"speed_cmps": 20_000}, {"range_m": 20_000_000}])
def test_an_implausible_vcu_reading_is_reported_not_fatal_to_the_bridge(
    field: dict[str, int],
) -> None:
    core = BridgeCore(ex.VAN, CommandVerifier(ex.VAN, [KEY]), mission_ids=1)
    core.on_link_up()
    actions = core.on_telemetry(_telemetry(**field), ex.NOW_S)
    assert any(isinstance(a, PublishState) for a in actions)
