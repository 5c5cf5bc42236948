"""The vendored Leaflet is the pinned release, byte for byte (VENDOR.md lists the sums)."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import fleet.viz

LEAFLET = Path(fleet.viz.__file__).parent / "static" / "leaflet"


def test_vendored_leaflet_matches_the_recorded_checksums() -> None:
    vendor = (LEAFLET / "VENDOR.md").read_text(encoding="utf-8")
    sums = re.findall(r"^([0-9a-f]{64})  (\S+)$", vendor, re.M)
    assert {name for _, name in sums} == {
        "leaflet.js",
        "leaflet.css",
        "images/layers.png",
        "images/layers-2x.png",
        "LICENSE",
    }
    for digest, name in sums:
        assert hashlib.sha256((LEAFLET / name).read_bytes()).hexdigest() == digest, name
    assert "BSD 2-Clause" in (LEAFLET / "LICENSE").read_text(encoding="utf-8")
