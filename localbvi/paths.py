"""Where localbvi keeps its files, following the platform's conventions (XDG on Linux).

Each location has an environment override so that tests and users can move it.
"""

from __future__ import annotations

import os
from pathlib import Path

import platformdirs

__all__ = ["cache_dir", "config_dir", "data_dir", "user_catalog_path"]

_APP = "localbvi"


def config_dir() -> Path:
    """The user's config folder (`$LOCALBVI_CONFIG_DIR`, else e.g. ~/.config/localbvi)."""
    override = os.environ.get("LOCALBVI_CONFIG_DIR")
    return Path(override) if override else Path(platformdirs.user_config_dir(_APP))


def data_dir() -> Path:
    """The user's data folder (`$LOCALBVI_DATA_DIR`, else e.g. ~/.local/share/localbvi)."""
    override = os.environ.get("LOCALBVI_DATA_DIR")
    return Path(override) if override else Path(platformdirs.user_data_dir(_APP))


def cache_dir() -> Path:
    """localbvi's own cache (`$LOCALBVI_CACHE_DIR`, else e.g. ~/.cache/localbvi)."""
    override = os.environ.get("LOCALBVI_CACHE_DIR")
    return Path(override) if override else Path(platformdirs.user_cache_dir(_APP))


def user_catalog_path() -> Path:
    """The user's catalog, merged over the bundled `models.toml`."""
    return config_dir() / "models.toml"
