"""On-van bridge: MQTT commands to serial frames for the vehicle control unit, and back."""
