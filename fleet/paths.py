"""Where the project's shipped configs and the per-user cache live."""

from __future__ import annotations

import os
from pathlib import Path

_REPO_ROOT = Path(__file__).resolve().parent.parent


def config_dir() -> Path:
    """``$FLEET_CONFIG_DIR``, else ``configs/`` beside the source tree, else ``./configs``."""
    env = os.environ.get("FLEET_CONFIG_DIR")
    if env:
        return Path(env)
    shipped = _REPO_ROOT / "configs"
    return shipped if shipped.is_dir() else Path.cwd() / "configs"


def default_van_file() -> Path:
    return config_dir() / "van.toml"


def default_site_file() -> Path:
    return config_dir() / "sites" / "porto.toml"


def cache_dir() -> Path:
    """``$FLEET_CACHE_DIR``, else ``$XDG_CACHE_HOME/fleet``, else ``~/.cache/fleet``."""
    env = os.environ.get("FLEET_CACHE_DIR")
    if env:
        return Path(env)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "fleet"
