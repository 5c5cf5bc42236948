"""The vendored Swagger UI is the pinned release, byte for byte (VENDOR.md lists the sums)."""

from __future__ import annotations

import hashlib
import re

from fleet.console.app import STATIC

SWAGGER = STATIC / "swagger"


def test_vendored_swagger_ui_matches_the_recorded_checksums() -> None:
    sums = re.findall(
        r"^([0-9a-f]{64})  (\S+)$", (SWAGGER / "VENDOR.md").read_text(encoding="utf-8"), re.M
    )
    assert {name for _, name in sums} == {
        "swagger-ui-bundle.js",
        "swagger-ui.css",
        "swagger-ui-bundle.js.LICENSE.txt",
        "LICENSE",
        "NOTICE",
    }
    for digest, name in sums:
        assert hashlib.sha256((SWAGGER / name).read_bytes()).hexdigest() == digest, name
    assert "Apache License" in (SWAGGER / "LICENSE").read_text(encoding="utf-8")
