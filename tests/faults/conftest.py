"""One small world for every fault test of the session (its plan comes from `fleet plan`)."""

from __future__ import annotations

import pytest

from tests.faults.world import World, build_world


@pytest.fixture(scope="session")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    return build_world(tmp_path_factory.mktemp("fault-world"))
