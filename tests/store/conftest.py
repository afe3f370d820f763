"""Fixtures for store tests: a real Hub stand-in on loopback and a small test catalog."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from ggufs import TINY_BASE, TINY_BASE_Q8, TINY_IT
from hubserver import HubServer

CATALOG = """
[[model]]
id = "tiny"
name = "Tiny"
family = "Tiny"
kind = "base"
sibling = "tiny-it"
repo = "test/tiny-GGUF"
params = "1M"
context_length = 2048
license = "apache-2.0"
[model.files]
Q4_K_M = { file = "tiny-Q4_K_M.gguf", size = 3145856 }
Q8_0 = { file = "tiny-Q8_0.gguf", size = 4194432 }

[[model]]
id = "tiny-it"
name = "Tiny Instruct"
family = "Tiny"
kind = "instruct"
sibling = "tiny"
repo = "test/tiny-it-GGUF"
params = "1M"
context_length = 2048
license = "apache-2.0"
[model.files]
Q4_K_M = { file = "tiny-it-Q4_K_M.gguf", size = 3145856 }
"""


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
def hub(monkeypatch: pytest.MonkeyPatch) -> Iterator[HubServer]:
    """A running Hub stand-in with the tiny test repos; HF_ENDPOINT points at it."""
    server = HubServer().start()
    server.add_repo(
        "test/tiny-GGUF", {"tiny-Q4_K_M.gguf": TINY_BASE, "tiny-Q8_0.gguf": TINY_BASE_Q8}
    )
    server.add_repo("test/tiny-it-GGUF", {"tiny-it-Q4_K_M.gguf": TINY_IT})
    monkeypatch.setenv("HF_ENDPOINT", server.url)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    yield server
    server.stop()


@pytest.fixture
def tiny_catalog(isolated_home: Path) -> Path:
    """A user catalog adding the tiny base/instruct pair served by `hub`."""
    path = isolated_home / "config" / "models.toml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(CATALOG, encoding="utf-8")
    return path


@pytest.fixture
def hf_cache(isolated_home: Path) -> Path:
    return isolated_home / "hf" / "hub"
