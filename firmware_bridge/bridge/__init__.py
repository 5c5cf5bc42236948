"""The on-van bridge: MQTT commands ⇄ serial frames (``docs/bridge.md``)."""

from firmware_bridge.bridge.config import (
    DEFAULT_STATE_PERIOD_S,
    DEFAULT_TELEMETRY_STALE_S,
    DEFAULT_TICK_S,
    DEFAULT_VCU_GRACE_S,
    BridgeSettings,
    VanProfile,
    load_signing_key,
)
from firmware_bridge.bridge.core import BridgeCore
from firmware_bridge.bridge.mission import Mission, base_waypoints, cut_segments
from firmware_bridge.bridge.order_book import AT_FIRST_NODE_M, NodeDone, OrderBook, OrderBookError
from firmware_bridge.bridge.service import BridgeService
from firmware_bridge.bridge.spool import Spool

__all__ = [
    "AT_FIRST_NODE_M",
    "DEFAULT_STATE_PERIOD_S",
    "DEFAULT_TELEMETRY_STALE_S",
    "DEFAULT_TICK_S",
    "DEFAULT_VCU_GRACE_S",
    "BridgeCore",
    "BridgeService",
    "BridgeSettings",
    "Mission",
    "NodeDone",
    "OrderBook",
    "OrderBookError",
    "Spool",
    "VanProfile",
    "base_waypoints",
    "cut_segments",
    "load_signing_key",
]
