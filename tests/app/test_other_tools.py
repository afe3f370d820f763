"""Models other tools downloaded, as the app shows them: welcome screen and picker, with source.

The real store (`Services`) scans fixture folders laid out like Ollama's and LM Studio's;
the engine is the FakeEngine, so the test checks what is listed and which file is loaded.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from tests.helpers import SIZE, screen_text, track_notifications, wait_until

sys.path.insert(0, str(Path(__file__).parents[1] / "store"))

from ggufs import make_gguf
from othertools import lmstudio_model, ollama_model

from localbvi.engine.fake import FakeEngine
from localbvi.tui import make_app
from localbvi.tui.screens.picker import PickerScreen
from localbvi.tui.screens.welcome import WelcomeScreen
from localbvi.tui.services import Services
from localbvi.tui.widgets.model_list import ModelList


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # the real store never reaches for the network


async def test_discovered_models_show_their_source_and_load_in_place() -> None:
    blob = ollama_model("llama3.2:1b", make_gguf("llama", 6000, seed=5), file_type="Q8_0")
    lm = lmstudio_model("pub", "Mine-GGUF", "mine-Q5_K_M.gguf", make_gguf("mine", 6000, seed=6))
    engine = FakeEngine()
    app = track_notifications(
        make_app(lambda: engine, model_ref=None, services=Services(), check_online=False)
    )
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(pilot, lambda: isinstance(app.screen, WelcomeScreen))
        local = app.screen.query_one("#local", ModelList)
        await wait_until(pilot, lambda: len(local.models) >= 2, what="the on-disk list")
        text = screen_text(app)
        line = next(x for x in text.splitlines() if "llama3.2:1b" in x)
        assert "Ollama" in line and "Q8_0" in line
        assert any("mine-Q5_K_M" in x and "LM Studio" in x for x in text.splitlines())

        await pilot.press("ctrl+o")
        await wait_until(pilot, lambda: isinstance(app.screen, PickerScreen))
        models = app.screen.query_one(ModelList)
        await wait_until(pilot, lambda: len(models.shown) > 2, what="the picker's list")
        await pilot.press(*"ollama")
        await pilot.pause()
        assert [m.display_name for m in models.shown] == ["llama3.2:1b"]
        line = next(x for x in screen_text(app).splitlines() if "llama3.2:1b" in x)
        assert "Ollama" in line
        await pilot.press("enter")
        await wait_until(pilot, lambda: app.model is not None, what="the model to load")
        assert engine.loads == [str(blob)]  # Ollama's own file, not a copy
        assert app.model is not None and app.model.display_name == "llama3.2:1b"
    assert blob.exists() and lm.exists()
