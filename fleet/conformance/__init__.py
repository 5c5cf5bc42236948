"""Conformance kits: drive an implementation of a fleet protocol through its wire only.

``fleet conformance van`` (:mod:`fleet.conformance.van_kit`) plays the controller on an MQTT
broker and puts any van — ours, or one a vendor built from ``docs/protocol.md`` — through
scripted cases: connection and last will, factsheet, states, orders and their updates, every
refusal, pause, resume, emergency stops (also after a controller restart), cancel, and a
restart of the van. Each case passes, fails, or is skipped with the reason (never passed
without evidence). ``docs/conformance.md`` says how a vendor runs it and what each case checks.

The kit talks to the van only through the broker (``fleet.mqtt``, the MQTT adapter)
and shares no code with our van: it builds and signs commands with ``fleet.protocol`` and
checks what comes back against the documented rules.
"""

from fleet.conformance.report import CaseResult, Outcome, Report
from fleet.conformance.van_kit import VAN_CASES, VanKitSettings, run_van_conformance

__all__ = ["VAN_CASES", "CaseResult", "Outcome", "Report", "VanKitSettings", "run_van_conformance"]
