"""SVG snapshots of the main screens at a fixed size, with a deterministic FakeEngine.

Update after an intended change with `pytest tests/app/test_snapshots.py --snapshot-update`
and look at the SVGs before committing them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from textual.pilot import Pilot
from textual.widgets import Markdown

from localbvi.engine.fake import FakeEngine
from localbvi.tui import LocalbviApp, make_app
from localbvi.tui.screens.compare import CompareScreen
from localbvi.tui.screens.experiments import ExperimentsScreen
from localbvi.tui.screens.picker import PickerScreen
from localbvi.tui.screens.token_probs import TokenProbsScreen
from localbvi.tui.screens.welcome import WelcomeScreen
from localbvi.tui.screens.xray import XrayScreen
from localbvi.tui.widgets.model_list import ModelList
from tests.helpers import (
    BASE,
    INSTRUCT,
    SIZE,
    fake_pair,
    open_compare,
    run_both,
    static_services,
    wait_until,
)

SnapCompare = Callable[..., bool]


def app_for(model: str | None, **engine: Any) -> LocalbviApp:
    fake = FakeEngine(fixed_stats=True, tokens_per_s=500, ttft_s=0.05, **engine)
    # No online probe: the snapshot must not depend on the network.
    return make_app(lambda: fake, model_ref=model, services=static_services(), check_online=False)


async def steady(pilot: Pilot[Any]) -> None:
    """A blinking cursor is drawn or not depending on timing: keep it on for snapshots.

    Every screen of the stack: a dialog shows the screen under it (and its prompt's cursor)
    through its translucent background.
    """
    for screen in pilot.app.screen_stack:
        for widget in screen.query("Input, TextArea"):
            widget.cursor_blink = False  # type: ignore[attr-defined]
    await pilot.pause()


async def loaded(pilot: Pilot[Any]) -> None:
    app = pilot.app
    assert isinstance(app, LocalbviApp)
    await wait_until(pilot, lambda: app.model is not None)
    app.clear_notifications()


def test_welcome(snap_compare: SnapCompare) -> None:
    app = app_for(None)

    async def ready(pilot: Pilot[Any]) -> None:
        def listed() -> bool:
            found = app.screen.query(ModelList)
            return (
                isinstance(app.screen, WelcomeScreen)
                and bool(found)
                and len(found.first().models) == 3
            )

        await wait_until(pilot, listed)

        await steady(pilot)

    assert snap_compare(app, terminal_size=SIZE, run_before=ready)


def test_chat_after_a_reply(snap_compare: SnapCompare) -> None:
    app = app_for(INSTRUCT.path)

    async def chat(pilot: Pilot[Any]) -> None:
        await loaded(pilot)
        await pilot.press(*"What is 2+2?", "enter")
        chat = app.main.chat
        await wait_until(pilot, lambda: app.main.status.tokens_per_s is not None)
        await wait_until(pilot, lambda: len(chat.turns[1].query(Markdown)) == 1)
        await pilot.pause(0.3)
        app.clear_notifications()

        await steady(pilot)

    assert snap_compare(app, terminal_size=SIZE, run_before=chat)


def test_chat_cancelled_reply(snap_compare: SnapCompare) -> None:
    app = app_for(INSTRUCT.path, stop_after_script=False)

    async def cancel(pilot: Pilot[Any]) -> None:
        await loaded(pilot)
        fake = app.engine
        assert isinstance(fake, FakeEngine)
        fake.tokens_per_s = 5  # escape lands before the second token, even on a busy machine
        await pilot.press(*"Hello", "enter")
        chat = app.main.chat
        await wait_until(pilot, lambda: len(chat.turns) == 2 and len(chat.turns[1].content) > 0)
        await pilot.press("escape")
        await wait_until(pilot, lambda: not chat.generating)
        # The partial text depends on timing: show a fixed one with the cancelled mark.
        chat.turns[1].content = ""
        chat.turns[1].query_one(".message-body").update("Sure! Here is")  # type: ignore[attr-defined]
        await pilot.pause(0.1)
        app.clear_notifications()

        await steady(pilot)

    assert snap_compare(app, terminal_size=SIZE, run_before=cancel)


def test_completion_after_a_continuation(snap_compare: SnapCompare) -> None:
    app = app_for(BASE.path)

    async def complete(pilot: Pilot[Any]) -> None:
        await loaded(pilot)
        await pilot.press(*"Once upon a time", "ctrl+g")
        view = app.main.completion
        await wait_until(pilot, lambda: view.document.generated != [] and not view.generating)
        await pilot.pause(0.1)
        app.clear_notifications()

        await steady(pilot)

    assert snap_compare(app, terminal_size=SIZE, run_before=complete)


def test_picker(snap_compare: SnapCompare) -> None:
    app = app_for(INSTRUCT.path)

    async def pick(pilot: Pilot[Any]) -> None:
        await loaded(pilot)
        await pilot.press("ctrl+o")
        await wait_until(pilot, lambda: isinstance(app.screen, PickerScreen))
        await wait_until(pilot, lambda: len(app.screen.query_one(ModelList).shown) == 5)

        await steady(pilot)

    assert snap_compare(app, terminal_size=SIZE, run_before=pick)


def test_settings(snap_compare: SnapCompare, monkeypatch: pytest.MonkeyPatch) -> None:
    # The dialog names the settings file: a fixed path keeps the snapshot the same.
    monkeypatch.setenv("LOCALBVI_SETTINGS", "/home/me/.config/localbvi/settings.toml")
    app = app_for(INSTRUCT.path)

    async def settings(pilot: Pilot[Any]) -> None:
        await loaded(pilot)
        await pilot.press("ctrl+s")
        await pilot.pause(0.2)

        await steady(pilot)

    assert snap_compare(app, terminal_size=SIZE, run_before=settings)


def test_help(snap_compare: SnapCompare) -> None:
    app = app_for(INSTRUCT.path)

    async def show_help(pilot: Pilot[Any]) -> None:
        await loaded(pilot)
        await pilot.press("f1")
        await pilot.pause(0.2)

        await steady(pilot)

    assert snap_compare(app, terminal_size=SIZE, run_before=show_help)


def compare_app() -> tuple[LocalbviApp, CompareScreen]:
    """The app and a compare view on two scripted engines (fixed stats)."""
    engines = fake_pair(fixed_stats=True)
    return app_for(INSTRUCT.path), CompareScreen(engines=engines, base=BASE, instruct=INSTRUCT)


async def compared(pilot: Pilot[Any], app: LocalbviApp, screen: CompareScreen) -> None:
    await open_compare(pilot, app, screen)
    await run_both(pilot, screen, "Hello")
    await pilot.pause(0.1)
    app.clear_notifications()


@pytest.mark.parametrize(
    ("keys", "shown"),
    [
        ((), CompareScreen),
        (("f3",), XrayScreen),
        (("f3", "e"), XrayScreen),
        (("f4",), TokenProbsScreen),
        (("ctrl+t",), ExperimentsScreen),
    ],
    ids=["compare", "xray", "xray-editing", "probs", "experiments"],
)
def test_lab_views(snap_compare: SnapCompare, keys: tuple[str, ...], shown: type[Any]) -> None:
    app, screen = compare_app()

    async def open_view(pilot: Pilot[Any]) -> None:
        await compared(pilot, app, screen)
        for key in keys:
            await pilot.press(key)
            await wait_until(pilot, lambda: isinstance(app.screen, shown))
            await pilot.pause(0.2)
        await steady(pilot)

    assert snap_compare(app, terminal_size=SIZE, run_before=open_view)
