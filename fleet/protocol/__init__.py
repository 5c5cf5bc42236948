"""MQTT topics and versioned message schemas, signing, and clocks. Light enough for a van."""
