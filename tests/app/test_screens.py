"""Settings, log, help, downloads and the welcome screen, with the FakeEngine."""

from __future__ import annotations

from textual.widgets import Input, Select

from localbvi.engine.fake import FakeEngine
from localbvi.settings import Settings, load_settings, settings_path
from localbvi.tui.screens.downloads import DownloadsScreen
from localbvi.tui.screens.help import HelpScreen
from localbvi.tui.screens.log import LogScreen
from localbvi.tui.screens.settings import SettingsScreen, parse_settings
from localbvi.tui.screens.welcome import WelcomeScreen
from localbvi.tui.state import AppSettings
from localbvi.tui.widgets.pair_list import PairList
from tests.helpers import (
    INSTRUCT,
    SIZE,
    AppFactory,
    notifications,
    screen_text,
    static_services,
    wait_until,
)


async def test_settings_preset_and_seed_apply_to_the_next_request(fake_app: AppFactory) -> None:
    app = fake_app()
    async with app.run_test(size=SIZE, notifications=True) as pilot:
        await wait_until(pilot, lambda: app.model is not None)
        await pilot.press("ctrl+s")
        await wait_until(pilot, lambda: isinstance(app.screen, SettingsScreen))
        screen = app.screen
        screen.query_one("#preset", Select).value = "deterministic"
        await pilot.pause()
        assert screen.query_one("#temperature", Input).value == "0.0"
        screen.query_one("#seed", Input).value = "42"
        screen.query_one("#n_ctx", Input).value = "2048"
        await pilot.press("ctrl+s")
        await wait_until(pilot, lambda: not isinstance(app.screen, SettingsScreen))
        assert app.settings_form().preset == "deterministic"
        assert app.settings.sampling.temperature == 0.0 and app.settings.sampling.seed == 42
        assert app.settings.engine.n_ctx == 2048
        assert any("apply on the next load" in n for n in notifications(app))
        # Save wrote the settings file, and said where.
        saved = load_settings()
        assert saved.problem is None and saved.settings == app.settings
        assert any(str(saved.path) in n for n in notifications(app))
        # The loaded model keeps its context until the next load.
        assert "ctx 0/4096" in screen_text(app)


async def test_settings_reject_bad_values_inline(fake_app: AppFactory) -> None:
    app = fake_app()
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(pilot, lambda: app.model is not None)
        await pilot.press("ctrl+s")
        await wait_until(pilot, lambda: isinstance(app.screen, SettingsScreen))
        app.screen.query_one("#temperature", Input).value = "hot"
        await pilot.press("ctrl+s")
        await pilot.pause()
        assert isinstance(app.screen, SettingsScreen)
        assert "Temperature must be a number" in screen_text(app)
        await pilot.press("escape")
        assert app.settings.sampling.temperature == Settings().sampling.temperature
        assert not settings_path().exists()


def test_parse_settings_names_the_preset() -> None:
    raw = {
        "temperature": "1.1",
        "top_p": "0.98",
        "top_k": "100",
        "min_p": "0.02",
        "repeat_penalty": "1.05",
        "max_tokens": "64",
        "seed": "",
        "n_ctx": "4096",
        "n_threads": "",
        "n_gpu_layers": "auto",
    }
    settings = parse_settings(AppSettings(), raw)
    assert settings.preset == "creative" and settings.settings.sampling.seed is None
    assert parse_settings(AppSettings(), {**raw, "temperature": "0.3"}).preset == "custom"
    gpu = parse_settings(AppSettings(), {**raw, "n_gpu_layers": "12"}).settings.engine.n_gpu_layers
    assert gpu == 12


async def test_log_shows_the_engine_log(fake_app: AppFactory) -> None:
    app = fake_app()
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(pilot, lambda: app.model is not None)
        await pilot.press("ctrl+l")
        await wait_until(pilot, lambda: "fake engine: model ready" in screen_text(app))
        assert "llama_context: n_ctx = 4096" in screen_text(app)
        await pilot.press("escape")
        assert not isinstance(app.screen, LogScreen)


async def test_help_lists_every_binding(fake_app: AppFactory) -> None:
    app = fake_app()
    async with app.run_test(size=(100, 150)) as pilot:
        await wait_until(pilot, lambda: app.model is not None)
        await pilot.press("f1")
        await wait_until(pilot, lambda: isinstance(app.screen, HelpScreen))
        text = screen_text(app)
        for words in (
            "Send the message",
            "Stop reply",
            "Regenerate",
            "Edit last",
            "Copy reply",
            "Copy message",
            "Continue",
            "Models",
            "Settings",
            "Downloads",
            "Log",
            "Download pair",
            "Cancel download",
            "Resume download",
            "Command palette",
            # The compare screen's keys, and the sessions screen's.
            "Re-run, new seed",
            "X-ray base",
            "Probs instruct",
            "Swap modes",
            "Sessions",
            "Export Markdown",
        ):
            assert words in text, words
        await pilot.press("escape")
        assert not isinstance(app.screen, HelpScreen)


async def test_welcome_offers_pairs_and_models_on_disk(fake_app: AppFactory) -> None:
    app = fake_app(model_ref=None)
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(pilot, lambda: isinstance(app.screen, WelcomeScreen))
        await wait_until(pilot, lambda: "my-finetune.gguf" in screen_text(app))
        text = screen_text(app)
        assert "A base model has only learned to continue text" in text
        assert "Demo 270M" in text and "Big 8B" in text and "gated" in text
        assert "Offline" not in text
        # Enter on a model on disk opens it and leaves the welcome screen.
        app.screen.query_one("#local").focus()
        await pilot.press("down", "down", "enter")
        await wait_until(pilot, lambda: app.model is not None)
        assert app.model is not None and app.model.display_name == "Demo 270M IT"
        assert not isinstance(app.screen, WelcomeScreen)


async def test_welcome_offline_says_so(fake_app: AppFactory) -> None:
    app = fake_app(model_ref=None, services=static_services(online=False))
    async with app.run_test(size=SIZE, notifications=True) as pilot:
        await wait_until(pilot, lambda: "Offline" in screen_text(app), what="offline note")
        assert "only models on disk" in screen_text(app)
        app.screen.query_one(PairList).focus()
        await pilot.press("down", "d")
        await pilot.pause()
        assert any("Offline" in n for n in notifications(app))
        assert app.downloads.tasks == []


async def test_welcome_downloads_a_pair_with_progress_then_loads(fake_app: AppFactory) -> None:
    services = static_services(on_disk=False)
    services.download_s = 1.0
    app = fake_app(model_ref=None, services=services)
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(pilot, lambda: isinstance(app.screen, WelcomeScreen))
        pairs = app.screen.query_one(PairList)
        await wait_until(pilot, lambda: len(pairs.pairs) == 2)
        pairs.focus()
        await pilot.press("d")
        await wait_until(pilot, lambda: "MB /" in screen_text(app), what="progress shown")
        await wait_until(pilot, lambda: app.model is not None, timeout=10)
        assert [t.state for t in app.downloads.tasks] == ["done", "done"]
        assert app.model is not None and app.model.display_name == "Demo 270M IT"
        assert not isinstance(app.screen, WelcomeScreen)


async def test_downloads_screen_cancel_and_resume(fake_app: AppFactory) -> None:
    services = static_services()
    services.download_s = 3.0
    services.steps = 30
    app = fake_app(services=services)
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(pilot, lambda: app.model is not None)
        big = services.pairs[1][0]
        task = app.start_download(big)
        await pilot.press("f5")
        await wait_until(pilot, lambda: isinstance(app.screen, DownloadsScreen))
        await wait_until(pilot, lambda: "Big 8B" in screen_text(app) and "GB /" in screen_text(app))
        assert "Cancel download" in screen_text(app)  # the row has focus: its keys show
        await pilot.press("c")
        await wait_until(pilot, lambda: task.state == "cancelled")
        await wait_until(pilot, lambda: "cancelled" in screen_text(app))
        services.download_s = 0.2
        await pilot.press("r")
        await wait_until(pilot, lambda: task.state == "done", timeout=5)
        await wait_until(pilot, lambda: "done" in screen_text(app))
        engine = app.engine
        assert isinstance(engine, FakeEngine)
        assert engine.loads == [INSTRUCT.path]  # a plain download does not load
