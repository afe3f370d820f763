"""Searching the Hub from the app: picker → ctrl+f → results → Enter downloads and loads.

The real store (`Services`) talks to the Hub stand-in on loopback (search, model info,
file trees, downloads) and the app's online check asks it over HTTP; the engine is the
FakeEngine, so the test checks what is listed, what is downloaded and which file is loaded.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import SIZE, screen_text, track_notifications, wait_until

sys.path.insert(0, str(Path(__file__).parents[1] / "store"))

from ggufs import make_gguf
from hubapi_server import HubApiServer

from localbvi.engine.fake import FakeEngine
from localbvi.tui import LocalbviApp, make_app
from localbvi.tui.screens.hub_search import HubSearchScreen
from localbvi.tui.screens.picker import PickerScreen
from localbvi.tui.services import Services

TINY_Q4 = make_gguf("tiny chat", 6000, seed=7)


@pytest.fixture
def hub(monkeypatch: pytest.MonkeyPatch) -> Iterator[HubApiServer]:
    server = HubApiServer().start()
    server.add_model(
        "acme/Tiny-Chat-GGUF",
        files={"Tiny-Chat-Q4_K_M.gguf": TINY_Q4, "Tiny-Chat-Q8_0.gguf": b"q8"},
        sizes={"Tiny-Chat-Q8_0.gguf": 900_000_000_000},
        tags=["gguf"],
        downloads=500,
    )
    server.add_model(
        "gate/Tiny-Chat-Locked-GGUF",
        files={"locked-Q4_K_M.gguf": b"x"},
        tags=["gguf"],
        gated=True,
        downloads=20,
    )
    monkeypatch.setenv("HF_ENDPOINT", server.url)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("LOCALBVI_FAKE_AVAILABLE_RAM", str(8_000_000_000))
    yield server
    server.stop()


def build(engine: FakeEngine) -> LocalbviApp:
    return track_notifications(
        make_app(lambda: engine, model_ref=None, services=Services(), check_online=True)
    )


async def test_a_hub_result_downloads_and_loads(hub: HubApiServer, isolated_home: Path) -> None:
    engine = FakeEngine()
    app = build(engine)
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(pilot, lambda: app.online is True, what="the online check")
        await pilot.press("ctrl+o")
        await wait_until(pilot, lambda: isinstance(app.screen, PickerScreen))
        await pilot.press(*"tiny chat", "ctrl+f")
        await wait_until(pilot, lambda: isinstance(app.screen, HubSearchScreen))
        screen = app.screen
        assert isinstance(screen, HubSearchScreen)
        await wait_until(pilot, lambda: len(screen.results) == 3, what="the search results")
        text = screen_text(app)
        lines = [" ".join(x.split()) for x in text.splitlines() if "Tiny-Chat" in x]
        assert any("acme/Tiny-Chat-GGUF Q4_K_M 6.2 kB fits" in x for x in lines), lines
        assert any("acme/Tiny-Chat-GGUF Q8_0 900 GB won't fit" in x for x in lines), lines
        assert any("gate/Tiny-Chat-Locked-GGUF" in x and "gated" in x for x in lines), lines
        assert "3 files in 2 repositories for 'tiny chat'" in text
        query = next(q for q in hub.queries if "search" in q)
        assert query["search"] == "tiny chat" and query["filter"] == "gguf"

        await pilot.press("enter")  # the first row: the most downloaded repo, smallest file
        await wait_until(pilot, lambda: len(engine.loads) == 1, what="the model load")
        loaded = Path(engine.loads[0])
        assert loaded.name == "Tiny-Chat-Q4_K_M.gguf"
        assert loaded.read_bytes() == TINY_Q4
        assert (isolated_home / "hf" / "hub") in loaded.parents
        assert not isinstance(app.screen, (PickerScreen, HubSearchScreen))


async def test_an_unreachable_hub_is_one_line_in_the_dialog(
    hub: HubApiServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = FakeEngine()
    app = build(engine)
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(pilot, lambda: app.online is not None, what="the online check")
        monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
        await pilot.press("ctrl+o")
        await wait_until(pilot, lambda: isinstance(app.screen, PickerScreen))
        await pilot.press("ctrl+f")
        await wait_until(pilot, lambda: isinstance(app.screen, HubSearchScreen))
        await pilot.press(*"tiny", "enter")
        await wait_until(pilot, lambda: "cannot reach" in screen_text(app), what="the error")
        text = " ".join(screen_text(app).split())
        assert "cannot reach http://127.0.0.1:9" in text and "offline" in text
        await pilot.press("escape")
        assert isinstance(app.screen, PickerScreen)
        assert engine.loads == []
