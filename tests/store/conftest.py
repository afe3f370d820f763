"""Fixtures for store tests (the Hub stand-in `hub` and `tiny_catalog` are in tests/conftest.py)."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))


@pytest.fixture(autouse=True)
def _restore_offline_flag() -> Iterator[None]:
    """`main(["--offline", …])` sets HF_HUB_OFFLINE for the whole process, as the CLI must;
    undo it after each test so that later tests are not silently offline."""
    before = os.environ.get("HF_HUB_OFFLINE")
    yield
    if before is None:
        os.environ.pop("HF_HUB_OFFLINE", None)
    else:
        os.environ["HF_HUB_OFFLINE"] = before


@pytest.fixture
def hf_cache(isolated_home: Path) -> Path:
    return isolated_home / "hf" / "hub"
