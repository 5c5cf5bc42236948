"""The MQTT adapter shared by the controller, the firmware bridge, the CLI, the console and the
simulator: where the broker is (:class:`BrokerAddress`, from a URL or a login file) and one
session with it (:class:`MqttLink`, paho through its documented external-loop API).

It imports nothing of ``fleet`` but the error root and the size limits, so the firmware bridge
may use it (``pyproject.toml``, import-linter contracts).
"""

from fleet.mqtt.address import BrokerAddress
from fleet.mqtt.errors import BrokerError, SubscriptionRefused
from fleet.mqtt.link import MAX_PUBLISHES_IN_FLIGHT, NODELAY, MqttLink, OnMessage, Will

__all__ = [
    "MAX_PUBLISHES_IN_FLIGHT",
    "NODELAY",
    "BrokerAddress",
    "BrokerError",
    "MqttLink",
    "OnMessage",
    "SubscriptionRefused",
    "Will",
]
