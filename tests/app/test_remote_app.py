"""Remote models in the app, against a stand-in llama-server on 127.0.0.1 (fast, no network)."""

from __future__ import annotations

import sys
from pathlib import Path

from localbvi.engine.fake import FakeEngine
from localbvi.engine.remote import RemoteEngine
from localbvi.settings import settings_path
from localbvi.tui.screens.picker import PickerScreen
from localbvi.tui.widgets.model_list import ModelList
from tests.helpers import BASE, INSTRUCT, SIZE, AppFactory, screen_text, wait_until

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "remote"))
from remote_fakes import llama_server_fake


async def test_a_settings_remote_is_picked_used_and_left(fake_app: AppFactory) -> None:
    with llama_server_fake() as server:
        path = settings_path()
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(
            f'[[remote]]\nname = "gpu-box"\nbase_url = "{server.url}"\nkind = "instruct"\n'
        )
        app = fake_app(model_ref=BASE.path)
        async with app.run_test(size=SIZE) as pilot:
            await wait_until(pilot, lambda: app.model is not None)
            local = app.engine
            await pilot.press("ctrl+o")
            await wait_until(pilot, lambda: isinstance(app.screen, PickerScreen))
            models = app.screen.query_one(ModelList)
            await wait_until(pilot, lambda: any(m.remote for m in models.shown))
            await pilot.press(*"gpu")
            await wait_until(pilot, lambda: len(models.shown) == 1)
            assert "remote" in screen_text(app) and "instruct" in screen_text(app)
            await pilot.press("enter")
            await wait_until(pilot, lambda: app.model is not None and app.model.ref == "gpu-box")
            assert isinstance(app.engine, RemoteEngine) and local.info is None  # unloaded
            assert app.mode == "chat"
            text = screen_text(app)
            assert "gpu-box" in text and "server" in text
            await pilot.press(*"Hi", "enter")
            chat = app.main.chat
            await wait_until(pilot, lambda: len(chat.turns) == 2 and not chat.generating)
            assert chat.turns[1].content == "Hello there!"
            # And back to a local model: the local engine takes over again.
            app.open_model(INSTRUCT.path or "")
            await wait_until(pilot, lambda: app.model is not None and app.model.ref != "gpu-box")
            assert isinstance(app.engine, FakeEngine) and app.engine is local
            assert "server" not in screen_text(app)


async def test_model_flag_with_a_server_url_opens_on_it(fake_app: AppFactory) -> None:
    with llama_server_fake() as server:
        app = fake_app(model_ref=server.url)
        async with app.run_test(size=SIZE) as pilot:
            await wait_until(pilot, lambda: app.model is not None, what="remote load")
            assert isinstance(app.engine, RemoteEngine)
            assert "server" in screen_text(app)
