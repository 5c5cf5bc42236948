"""Shared fixtures: the shipped configs, found without ../shared."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest_plugins = ["tests.support.brokers"]  # broker fixtures: embedded and Mosquitto

REPO = Path(__file__).resolve().parent.parent
CONFIGS = REPO / "configs"


@pytest.fixture(scope="session")
def configs_dir() -> Path:
    return CONFIGS


@pytest.fixture(scope="session")
def van_file() -> Path:
    return CONFIGS / "van.toml"
