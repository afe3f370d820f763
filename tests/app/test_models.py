"""The model picker and live model switching, with the FakeEngine."""

from __future__ import annotations

from pathlib import Path

from localbvi.engine.fake import FakeEngine
from localbvi.tui.screens.picker import PickerScreen
from localbvi.tui.widgets.model_list import ModelList
from tests.helpers import (
    BASE,
    INSTRUCT,
    SIZE,
    AppFactory,
    notifications,
    screen_text,
    static_services,
    wait_until,
)


async def test_picker_lists_models_with_badges_and_filters(fake_app: AppFactory) -> None:
    app = fake_app()
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(pilot, lambda: app.model is not None)
        await pilot.press("ctrl+o")
        await wait_until(pilot, lambda: isinstance(app.screen, PickerScreen))
        models = app.screen.query_one(ModelList)
        await wait_until(pilot, lambda: len(models.shown) == 5, what="model list")
        text = screen_text(app)
        for expected in ("base", "instruct", "Demo 270M IT", "Q4_K_M", "253 MB", "on disk"):
            assert expected in text
        assert "download" in text and "4.9 GB" in text and "gated" in text and "tight" in text
        await pilot.press(*"big inst")
        await pilot.pause()
        assert [m.display_name for m in models.shown] == ["Big 8B Instruct"]
        text = screen_text(app)
        assert "Big 8B Instruct" in text and "253 MB" not in text
        await pilot.press("escape")
        assert not isinstance(app.screen, PickerScreen)


async def test_switching_model_loads_it_and_follows_its_kind(fake_app: AppFactory) -> None:
    app = fake_app()
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(pilot, lambda: app.model is not None)
        assert app.mode == "chat"
        await pilot.press("ctrl+o")
        await wait_until(pilot, lambda: len(app.screen.query_one(ModelList).shown) == 5)
        await pilot.press(*"demo base", "enter")
        await wait_until(pilot, lambda: app.model is not None and app.model.ref == BASE.path)
        assert app.model is not None and app.model.kind == "base"
        assert app.mode == "completion"
        engine = app.engine
        assert isinstance(engine, FakeEngine)
        assert engine.loads == [INSTRUCT.path, BASE.path]
        text = screen_text(app)
        assert "Demo 270M" in text and "completion mode" in text


async def test_failed_load_keeps_previous_model_usable(
    fake_app: AppFactory, tmp_path: Path
) -> None:
    corrupt = tmp_path / "corrupt.gguf"
    corrupt.write_bytes(b"this is not a gguf file at all" * 100)
    app = fake_app()
    async with app.run_test(size=SIZE, notifications=True) as pilot:
        await wait_until(pilot, lambda: app.model is not None)
        app.open_model(str(corrupt))
        await wait_until(pilot, lambda: app.loading is None and len(notifications(app)) >= 2)
        assert any("Could not load corrupt.gguf" in n for n in notifications(app))
        assert any("still loaded" in n for n in notifications(app))
        assert app.model is not None and app.model.ref == INSTRUCT.path
        assert "Traceback" not in screen_text(app)
        # Still usable: a message gets a reply.
        await pilot.press(*"Hello", "enter")
        chat = app.main.chat
        await wait_until(pilot, lambda: len(chat.turns) == 2 and not chat.generating)
        assert chat.turns[1].outcome == "done"


async def test_engine_refusal_is_readable_and_previous_stays(fake_app: AppFactory) -> None:
    app = fake_app(fail_load=lambda path: "base" in path)
    async with app.run_test(size=SIZE, notifications=True) as pilot:
        await wait_until(pilot, lambda: app.model is not None)
        app.open_model(str(BASE.path), display_name="Demo 270M")
        await wait_until(pilot, lambda: app.loading is None and len(notifications(app)) >= 2)
        assert any("not a readable GGUF model" in n for n in notifications(app))
        assert app.model is not None and app.model.display_name == "Demo 270M IT"
        assert "Demo 270M IT" in screen_text(app)


async def test_mode_flag_overrides_the_kind(fake_app: AppFactory) -> None:
    app = fake_app(model_ref=INSTRUCT.path, mode="completion")
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(pilot, lambda: app.model is not None)
        assert app.mode == "completion"
        assert "Instruct model run raw" in screen_text(app)


async def test_loading_is_shown_while_it_runs(fake_app: AppFactory) -> None:
    app = fake_app(load_delay_s=1.5)
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(pilot, lambda: "loading" in screen_text(app), what="loading shown")
        await wait_until(pilot, lambda: app.model is not None, timeout=10)
        assert "loading" not in app.main.status.activity


async def test_picking_a_model_not_on_disk_downloads_then_loads(fake_app: AppFactory) -> None:
    app = fake_app(services=static_services())
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(pilot, lambda: app.model is not None)
        await pilot.press("ctrl+o")
        await wait_until(pilot, lambda: len(app.screen.query_one(ModelList).shown) == 5)
        await pilot.press(*"big 8b instruct", "enter")
        await wait_until(pilot, lambda: app.model is not None and "Big" in app.model.display_name)
        assert [t.state for t in app.downloads.tasks] == ["done"]
        assert app.model is not None and app.model.kind == "instruct"


async def test_command_palette_lists_screen_actions_and_models(fake_app: AppFactory) -> None:
    app = fake_app()
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(pilot, lambda: app.model is not None)
        await pilot.press("ctrl+p")
        # Discovery lists this screen's actions (waits, not sleeps: a busy machine is slow).
        await wait_until(pilot, lambda: "Copy reply" in screen_text(app), what="discovery")
        for action in ("Models", "Settings", "Sessions", "Help", "Mode", "Regenerate"):
            await pilot.press(*action.lower())
            await wait_until(pilot, lambda: action in screen_text(app), what=action)  # noqa: B023
            await pilot.press(*["backspace"] * len(action))
        await pilot.press(*"stop reply")
        await wait_until(pilot, lambda: "Stop reply" in screen_text(app), what="Stop reply")
        await pilot.press(*["backspace"] * len("stop reply"))
        await pilot.press(*"load model demo 270m")
        await wait_until(
            pilot, lambda: "Load model: Demo 270M" in screen_text(app), what="model hits"
        )
