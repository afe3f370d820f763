"""The settings file in the app: loaded at start, written by Save, keys rebound."""

from __future__ import annotations

import asyncio
import time

import pytest
from textual.widgets import Input, Label

from localbvi.settings import load_settings, setting_spec, settings_path
from localbvi.tui.screens.settings import SettingsScreen
from localbvi.tui.screens.welcome import WelcomeScreen
from tests.helpers import (
    BASE,
    INSTRUCT,
    SIZE,
    AppFactory,
    notifications,
    screen_text,
    wait_until,
)


def write_settings(text: str) -> None:
    path = settings_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


async def test_a_broken_file_notifies_with_its_line_and_defaults_apply(
    fake_app: AppFactory,
) -> None:
    write_settings('theme = "nord"\n[sampling\ntemperature = 0.1\n')
    app = fake_app(model_ref=None)
    async with app.run_test(size=SIZE, notifications=True) as pilot:
        await wait_until(pilot, lambda: isinstance(app.screen, WelcomeScreen))
        problem = next(n for n in notifications(app) if "Settings file" in n)
        assert "not valid TOML" in problem and "line 2" in problem
        assert str(settings_path()) in problem
        assert app.settings.sampling.temperature == 0.8 and app.theme == "textual-dark"
        assert "Traceback" not in screen_text(app)


async def test_file_values_apply_model_mode_sampling_context_theme(fake_app: AppFactory) -> None:
    write_settings(
        f'model = "{BASE.path}"\nmode = "chat"\ntheme = "nord"\n'
        "[engine]\nn_ctx = 2048\n[sampling]\ntemperature = 0.2\nmax_tokens = 7\n"
    )
    app = fake_app(model_ref=None)
    async with app.run_test(size=SIZE) as pilot:
        # No --model: the file's model opens directly, in the file's mode.
        await wait_until(pilot, lambda: app.model is not None, what="file's model")
        assert app.model is not None and app.model.ref == BASE.path
        assert app.mode == "chat" and app.theme == "nord"
        assert "ctx 0/2048" in screen_text(app)
        sampling = app.settings.to_sampling()
        assert sampling.temperature == 0.2 and sampling.max_tokens == 7


async def test_save_writes_toml_the_loader_reads_back(fake_app: AppFactory) -> None:
    write_settings('[keys]\n"app.help" = "f2"\n')
    app = fake_app()
    async with app.run_test(size=SIZE, notifications=True) as pilot:
        await wait_until(pilot, lambda: app.model is not None)
        await pilot.press("ctrl+s")
        await wait_until(pilot, lambda: isinstance(app.screen, SettingsScreen))
        app.screen.query_one("#top_k", Input).value = "7"
        app.screen.query_one("#n_threads", Input).value = "3"
        await pilot.press("ctrl+s")
        await wait_until(pilot, lambda: not isinstance(app.screen, SettingsScreen))
        loaded = load_settings()
        assert loaded.problem is None
        assert loaded.settings.sampling.top_k == 7 and loaded.settings.engine.n_threads == 3
        assert dict(loaded.settings.keys) == {"app.help": "f2"}  # kept, not dropped
        assert any(f"Written to {settings_path()}" in n for n in notifications(app))


async def test_a_key_override_rebinds_the_action(fake_app: AppFactory) -> None:
    from localbvi.tui.screens.help import HelpScreen

    write_settings('[keys]\n"app.help" = "f2"\n"no.such" = "f9"\n')
    app = fake_app()
    async with app.run_test(size=SIZE, notifications=True) as pilot:
        await wait_until(pilot, lambda: app.model is not None)
        assert any("unknown action id no.such" in n for n in notifications(app))
        await pilot.press("f1")
        await pilot.pause()
        assert not isinstance(app.screen, HelpScreen)
        await pilot.press("f2")
        await wait_until(pilot, lambda: isinstance(app.screen, HelpScreen), what="help on f2")
        assert "f2" in screen_text(app)


async def test_instruct_default_from_file_with_mode_flag(fake_app: AppFactory) -> None:
    write_settings(f'model = "{INSTRUCT.path}"\nmode = "completion"\n')
    app = fake_app(model_ref=None)
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(pilot, lambda: app.model is not None)
        assert app.mode == "completion"


BROKEN = b'theme = "nord"\n[sampling\ntemperature = 0.1\n\n[[remote]]\nname = "box"\nbase_url = "http://box:8080/v1"\n'


async def test_save_never_overwrites_a_file_that_could_not_be_read(fake_app: AppFactory) -> None:
    path = settings_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(BROKEN)
    beside = path.with_name("settings.saved.toml")
    app = fake_app()
    async with app.run_test(size=SIZE, notifications=True) as pilot:
        await wait_until(pilot, lambda: app.model is not None)
        assert any("Save will not overwrite this file" in n for n in notifications(app))
        await pilot.press("ctrl+s")
        await wait_until(pilot, lambda: isinstance(app.screen, SettingsScreen))
        # The dialog says where Save goes before the user presses it.
        await wait_until(
            pilot, lambda: "settings.toml is left exactly as it is" in screen_text(app)
        )
        app.screen.query_one("#top_k", Input).value = "7"
        await pilot.press("ctrl+s")
        await wait_until(pilot, lambda: not isinstance(app.screen, SettingsScreen))
        saved = next(n for n in notifications(app) if n.startswith("Settings saved"))
        assert f"Settings saved to {beside.name}" in saved and str(beside) in saved
        assert "not valid TOML" in saved and "line 2" in saved
    assert path.read_bytes() == BROKEN  # the [[remote]] entry and all, byte for byte
    assert load_settings(beside).settings.sampling.top_k == 7


COMMENTED = """\
# my settings, by hand
theme = "nord"  # dark
favourite_colour = "green"

[sampling]
# focused answers
temperature = 0.3   # low
my_note = "mine"    # not a setting: kept
top_k = 20

[engine]
n_ctx = 2048  # small laptop

[[remote]]
name = "box"
base_url = "http://box:8080/v1"  # upstairs
"""


async def test_save_changes_only_the_edited_values_byte_for_byte(fake_app: AppFactory) -> None:
    write_settings(COMMENTED)
    app = fake_app()
    async with app.run_test(size=SIZE, notifications=True) as pilot:
        await wait_until(pilot, lambda: app.model is not None)
        await pilot.press("ctrl+s")
        await wait_until(pilot, lambda: isinstance(app.screen, SettingsScreen))
        target = app.screen.query_one("#settings-target", Label)
        assert str(target.content) == f"Save writes {settings_path()}"
        app.screen.query_one("#top_k", Input).value = "9"  # a value in the file
        app.screen.query_one("#n_threads", Input).value = "3"  # a key the file lacks
        app.screen.query_one("#connect_timeout", Input).value = "5"  # a table it lacks
        await pilot.press("ctrl+s")
        await wait_until(pilot, lambda: not isinstance(app.screen, SettingsScreen))
    threads_help = setting_spec("engine.n_threads").help
    timeout_help = setting_spec("network.connect_timeout").help
    expected = (
        COMMENTED.replace("top_k = 20", "top_k = 9").replace(
            "# small laptop\n", f"# small laptop\n# {threads_help}\nn_threads = 3\n"
        )
        + f"\n[network]\n# {timeout_help}\nconnect_timeout = 5.0\n"
    )
    # Comments, order, unknown keys and the server entry: all as they were, byte for byte.
    assert settings_path().read_text() == expected
    loaded = load_settings()
    assert (loaded.settings.sampling.top_k, loaded.settings.engine.n_threads) == (9, 3)
    assert loaded.settings.network.connect_timeout == 5.0


HOSTILE = {
    "unknown theme": 'theme = "no-such-theme"\n',
    "theme with terminal codes": 'theme = "\\u001b]0;pwned\\u0007nord"\n',
    "huge theme name (2 MB file)": 'theme = "' + "x" * 2_000_000 + '"\n',
    "quit moved to another key": '[keys]\n"app.quit" = "x"\n"no.such" = "f9"\n',
    "quit bound to nothing": '[keys]\n"app.quit" = ",,,"\n',
    "ctrl+q given to help": '[keys]\n"app.help" = "ctrl+q"\n',
    "keys that are not keys": '[keys]\n"app.help" = "ctrl+!!!"\n"app.log" = 5\n',
    "nested 10k deep": "x = " + "[" * 10_000 + "]" * 10_000 + "\n",
}


@pytest.mark.parametrize("case", list(HOSTILE))
async def test_a_hostile_settings_file_starts_and_quits_with_ctrl_q(
    fake_app: AppFactory, case: str
) -> None:
    write_settings(HOSTILE[case])
    app = fake_app(model_ref=None)
    async with app.run_test(size=SIZE, notifications=True) as pilot:
        await wait_until(pilot, lambda: isinstance(app.screen, WelcomeScreen))
        told = [n for n in notifications(app) if "settings" in n.lower()]
        assert told, "the problem is reported"
        assert all(len(n) < 2000 and "\x1b" not in n for n in told)
        assert "Traceback" not in screen_text(app)
        await pilot.press("ctrl+q")
        deadline = time.monotonic() + 5
        while app.is_running and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        assert not app.is_running, "ctrl+q did not quit"
