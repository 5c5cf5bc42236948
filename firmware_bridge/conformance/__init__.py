"""Conformance kits for outsiders: scripted cases that test a peer through its wire only.

:mod:`firmware_bridge.conformance.vcu` tests a vehicle control unit over its serial line
(``firmware-bridge conformance vcu``; ``docs/conformance.md``).
"""

from firmware_bridge.conformance.vcu import (
    CASE_NAMES,
    CaseResult,
    Report,
    Status,
    run_vcu_conformance,
    shell_reset,
)

__all__ = [
    "CASE_NAMES",
    "CaseResult",
    "Report",
    "Status",
    "run_vcu_conformance",
    "shell_reset",
]
