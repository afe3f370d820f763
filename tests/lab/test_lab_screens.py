"""The compare, X-ray, experiments and token-probability screens, driven with Pilot.

Most tests run on FakeEngines (fast, scripted); the last ones on the real Gemma engines.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from textual.pilot import Pilot

from localbvi.engine.fake import FakeEngine
from localbvi.engine.types import Message
from localbvi.tui import LocalbviApp, make_app
from localbvi.tui.screens.compare import CompareScreen
from localbvi.tui.screens.experiments import ExperimentsScreen
from localbvi.tui.screens.token_probs import TokenProbsScreen
from localbvi.tui.screens.xray import XrayScreen
from localbvi.tui.services import StaticServices
from localbvi.tui.state import AppSettings, ModelChoice
from tests.helpers import (
    BASE,
    INSTRUCT,
    FakeEngines,
    fake_pair,
    lab_app,
    open_compare,
    run_both,
    wait_until,
)

if TYPE_CHECKING:
    from tests.store.hubserver import HubServer

SIZE = (120, 36)


def pane_text(screen: CompareScreen, side: str) -> str:
    return screen.pane(side).text  # type: ignore[arg-type]


async def test_ctrl_b_opens_the_catalog_pair_and_both_sides_stream() -> None:
    app = lab_app()
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(pilot, lambda: app.model is not None)
        await pilot.press("ctrl+b")
        await wait_until(pilot, lambda: isinstance(app.screen, CompareScreen), what="compare")
        screen = app.screen
        assert isinstance(screen, CompareScreen)
        assert screen.names == ("Demo 270M", "Demo 270M IT")
        await wait_until(pilot, lambda: screen.engines is not None, what="both models loaded")
        await pilot.press(*"What is 2+2?", "enter")
        await wait_until(pilot, lambda: not screen.running and len(screen.runs) == 2)
        base, instruct = screen.engines  # type: ignore[misc]
        assert isinstance(base, FakeEngine) and isinstance(instruct, FakeEngine)
        assert base.loads == [BASE.path] and instruct.loads == [INSTRUCT.path]
        assert base.requests == [("complete", "What is 2+2?")]
        assert instruct.requests == [("chat", (Message("user", "What is 2+2?"),))]
        assert "keeps writing the same document" in pane_text(screen, "base")
        assert pane_text(screen, "instruct").startswith("Sure! Here is an answer")
        base_stats = screen.pane("base").stats
        assert "11 tokens" in base_stats and "tok/s" in base_stats and "EOS" in base_stats
        assert "raw completion" in str(screen.pane("base").query_one(".pane-title").render())
    # Closing the app closed the compare view's own engines.
    assert base.info is None and instruct.info is None


async def test_escape_cancels_both_then_closes() -> None:
    app = lab_app()
    engines = fake_pair(tokens_per_s=40, stop_after_script=False)
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_compare(pilot, app, CompareScreen(engines=engines))
        screen.run_prompt("Tell me a story")
        await wait_until(pilot, lambda: len(pane_text(screen, "base")) > 10, what="streaming")
        await pilot.press("escape")
        await wait_until(pilot, lambda: not screen.running, timeout=2, what="stopped")
        assert screen.pane("base").stats.endswith("cancelled")
        assert screen.pane("instruct").stats.endswith("cancelled")
        assert engines[1].requests == []  # the second side never started
        assert app.screen is screen
        await pilot.press("escape")
        await wait_until(pilot, lambda: app.screen is not screen, what="closed")
    assert engines[0].info is not None  # engines handed in stay the caller's


async def test_rerun_with_a_new_seed_and_swap_modes() -> None:
    app = lab_app()
    engines = fake_pair()
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_compare(pilot, app, CompareScreen(engines=engines))
        await run_both(pilot, screen, "Hi")
        await pilot.press("ctrl+r")
        await wait_until(pilot, lambda: not screen.running and len(engines[1].requests) == 2)
        assert screen.seed is not None
        assert f"seed {screen.seed}" in str(screen.query_one("#compare-lesson").render())
        await pilot.press("f7")  # base through the instruct template, instruct raw
        await wait_until(pilot, lambda: not screen.running and len(engines[1].requests) == 3)
        assert engines[1].requests[-1] == ("complete", "Hi")
        kind, prompt = engines[0].requests[-1]
        assert kind == "complete" and "<start_of_turn>user\nHi" in str(prompt)
        assert "chat, swapped template" in str(
            screen.pane("base").query_one(".pane-title").render()
        )


async def test_experiment_key_runs_the_few_shot_experiment() -> None:
    app = lab_app()
    engines = fake_pair()
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_compare(pilot, app, CompareScreen(engines=engines))
        await pilot.press("ctrl+t")
        await wait_until(pilot, lambda: isinstance(app.screen, ExperimentsScreen))
        await pilot.press("down", "down", "down", "down", "down", "enter")
        await wait_until(pilot, lambda: app.screen is screen and len(screen.runs) == 2)
        kind, base_prompt = engines[0].requests[-1]
        assert kind == "complete" and str(base_prompt).startswith(
            "Q: What is the capital of Italy?"
        )
        assert engines[1].requests[-1] == (
            "chat",
            (Message("user", "What is the capital of France?"),),
        )
        lesson = str(screen.query_one("#compare-lesson").render())
        assert lesson.startswith("Few-shot prompting steers a base model:")
        assert screen.sampling().stop == ("\n\n", "\nQ:")


async def test_xray_shows_the_rendered_prompt_and_sends_edited_text() -> None:
    app = lab_app()
    engines = fake_pair()
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_compare(pilot, app, CompareScreen(engines=engines))
        await run_both(pilot, screen, "Hello")
        await pilot.press("f3")
        await wait_until(pilot, lambda: isinstance(app.screen, XrayScreen))
        xray = app.screen
        assert isinstance(xray, XrayScreen)
        await wait_until(pilot, lambda: xray.prepared is not None)
        rendered = engines[1].render([Message("user", "Hello")]).text
        assert xray.shown_text == rendered
        count = str(xray.query_one("#xray-count").render())
        assert count.startswith(f"{len(rendered.split(' '))} tokens of a 4096-token context")
        await pilot.press("b")
        assert xray.boundaries
        await pilot.press("e")
        await pilot.press(*" (edited)")
        await pilot.press("ctrl+g")
        await wait_until(pilot, lambda: app.screen is screen and not screen.running)
        await wait_until(pilot, lambda: len(engines[1].requests) == 2)
        kind, sent = engines[1].requests[-1]
        assert kind == "complete" and sent == rendered + " (edited)"
        assert "edited X-ray" in str(screen.pane("instruct").query_one(".pane-title").render())


async def test_token_probabilities_and_branching() -> None:
    app = lab_app()
    engines = fake_pair()
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_compare(pilot, app, CompareScreen(engines=engines))
        await run_both(pilot, screen, "Once")
        await pilot.press("f4")
        await wait_until(pilot, lambda: isinstance(app.screen, TokenProbsScreen))
        probs = app.screen
        assert isinstance(probs, TokenProbsScreen)
        await pilot.press("down")  # token 2: " then"
        await pilot.pause()
        assert probs.selected_index == 1
        from localbvi.tui.widgets.token_probs import AlternativeList

        bars = probs.query_one(AlternativeList)
        lines = [str(bars.get_option_at_index(i).prompt) for i in range(bars.option_count)]
        assert lines[0].startswith("▶ ████████████") and "60.0%" in lines[0]
        assert "' maybe'" in lines[1] and "30.0%" in lines[1]
        await pilot.press("tab", "down", "enter")
        await wait_until(pilot, lambda: app.screen is screen)
        await wait_until(pilot, lambda: not screen.running and screen.runs["base"].branched_at == 1)
        kind, ids = engines[0].requests[-1]
        assert kind == "complete" and isinstance(ids, list) and ids[-2:] == [0, 901]
        assert pane_text(screen, "base").startswith(" and maybe and then")
        assert "branched at token 2" in str(screen.pane("base").query_one(".pane-title").render())


async def test_real_engines_compare_and_xray(base_engine: Any, instruct_engine: Any) -> None:
    app = lab_app(settings=AppSettings(temperature=0.0, max_tokens=6))
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_compare(
            pilot,
            app,
            CompareScreen(engines=(base_engine, instruct_engine), names=("Gemma pt", "Gemma it")),
        )
        screen.run_prompt("What is 2+2?")
        await wait_until(pilot, lambda: not screen.running and len(screen.runs) == 2, timeout=120)
        assert pane_text(screen, "base").startswith("\n\nWhat is 2+")  # a worksheet
        assert "6 tokens" in screen.pane("base").stats
        await pilot.press("f2")
        await wait_until(pilot, lambda: isinstance(app.screen, XrayScreen))
        xray = app.screen
        assert isinstance(xray, XrayScreen)
        await wait_until(pilot, lambda: xray.prepared is not None, timeout=30)
        assert xray.shown_text == "<bos>What is 2+2?"
        await pilot.press("escape")
        await pilot.press("f3")
        await wait_until(
            pilot, lambda: isinstance(app.screen, XrayScreen) and app.screen is not xray
        )
        xray2 = app.screen
        assert isinstance(xray2, XrayScreen)
        await wait_until(pilot, lambda: xray2.prepared is not None, timeout=30)
        expected = instruct_engine.render([Message("user", "What is 2+2?")]).text
        assert xray2.shown_text == expected
        assert expected.startswith("<bos><start_of_turn>user\nWhat is 2+2?<end_of_turn>")
        await pilot.press("escape")
        await pilot.press("f4")
        await wait_until(pilot, lambda: isinstance(app.screen, TokenProbsScreen))
        probs = app.screen
        assert isinstance(probs, TokenProbsScreen)
        top = probs.run.tokens[0]
        assert len(top.alternatives) == 5 and top.alternatives[0].id == top.id


def stats(screen: CompareScreen, side: str) -> str:
    from textual.widgets import Label

    return str(screen.pane(side).query_one(".pane-stats", Label).render())  # type: ignore[arg-type]


def title(screen: CompareScreen, side: str) -> str:
    return str(screen.pane(side).query_one(".pane-title").render())  # type: ignore[arg-type]


MISSING_IT = ModelChoice(
    ref="demo-it", display_name="Demo 270M IT", kind="instruct", size=253_000_000
)


async def open_pair_with_missing_sibling(pilot: Pilot[Any], app: LocalbviApp) -> CompareScreen:
    await wait_until(pilot, lambda: app.model is not None, what="the app's model")
    await pilot.press("ctrl+b")
    await wait_until(pilot, lambda: isinstance(app.screen, CompareScreen), what="compare")
    screen = app.screen
    assert isinstance(screen, CompareScreen)
    await wait_until(pilot, lambda: "not loaded" in stats(screen, "instruct"), what="the reason")
    return screen


async def test_a_missing_sibling_offline_says_why_and_its_download_fails_readably() -> None:
    """Offline with only the base model: the pane says what is missing; ctrl+y tries the
    download and the pane says why it failed; the view stays usable."""
    engine = FakeEngine()
    services = StaticServices(
        pairs=[(BASE, MISSING_IT)], local=[BASE], downloads={"demo-it": "/x.gguf"}, online=False
    )
    app = make_app(lambda: engine, model_ref=BASE.path, services=services, check_online=False)
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_pair_with_missing_sibling(pilot, app)
        reason = stats(screen, "instruct")
        assert "Demo 270M IT is not on disk" in reason and "ctrl+y downloads it (253 MB)" in reason
        assert stats(screen, "base") == "ready"
        await pilot.press("ctrl+y")
        await wait_until(pilot, lambda: "download failed" in stats(screen, "instruct"))
        assert "offline" in stats(screen, "instruct")
        assert screen.engines is None and app.screen is screen


async def test_a_missing_sibling_downloads_with_progress_in_its_pane_then_runs() -> None:
    engine = FakeEngine()
    services = StaticServices(
        pairs=[(BASE, MISSING_IT)],
        local=[BASE],
        downloads={"demo-it": "/models/demo-270m-it.gguf"},
        online=True,
        download_s=1.5,
        steps=15,
    )
    factory = FakeEngines()
    made = factory.made

    app = make_app(lambda: engine, model_ref=BASE.path, services=services, check_online=False)
    app.engine_factory = factory  # type: ignore[attr-defined]
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_pair_with_missing_sibling(pilot, app)
        await pilot.press("ctrl+y")
        pane = screen.pane("instruct")
        await wait_until(
            pilot,
            lambda: "%" in stats(screen, "instruct") and " of 253 MB" in stats(screen, "instruct"),
            what="download progress in the pane",
        )
        assert pane.downloading and stats(screen, "instruct").startswith(
            "downloading Demo 270M IT…"
        )
        assert [t.ref for t in app.downloads.tasks] == ["demo-it"]  # the app's own downloads
        await wait_until(pilot, lambda: screen.engines is not None, timeout=15, what="loaded")
        assert not pane.downloading and stats(screen, "instruct") == "ready"
        assert app.downloads.tasks[0].state == "done"
        assert [e.loads for e in made] == [[BASE.path], ["/models/demo-270m-it.gguf"]]
        await run_both(pilot, screen, "Hi")
        assert made[1].requests == [("chat", (Message("user", "Hi"),))]


async def test_escape_cancels_a_sibling_download() -> None:
    engine = FakeEngine()
    services = StaticServices(
        pairs=[(BASE, MISSING_IT)],
        local=[BASE],
        downloads={"demo-it": "/models/demo-270m-it.gguf"},
        download_s=20.0,
        steps=200,
    )
    app = make_app(lambda: engine, model_ref=BASE.path, services=services, check_online=False)
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_pair_with_missing_sibling(pilot, app)
        await pilot.press("ctrl+y")
        await wait_until(pilot, lambda: "%" in stats(screen, "instruct"), what="progress")
        await pilot.press("escape")
        await wait_until(pilot, lambda: "download cancelled" in stats(screen, "instruct"))
        assert app.screen is screen and app.downloads.tasks[0].state == "cancelled"


async def test_each_side_has_its_own_model_picker() -> None:
    other = ModelChoice(
        ref="/models/my-finetune.gguf",
        display_name="my-finetune.gguf",
        kind=None,
        path="/models/my-finetune.gguf",
        source="imported",
    )
    engine = FakeEngine()
    services = StaticServices(pairs=[(BASE, INSTRUCT)], local=[BASE, INSTRUCT, other])
    app = make_app(lambda: engine, model_ref=INSTRUCT.path, services=services, check_online=False)
    factory = FakeEngines()
    made = factory.made

    async with app.run_test(size=SIZE) as pilot:
        screen = await open_compare(
            pilot, app, CompareScreen(BASE, INSTRUCT, engine_factory=factory)
        )
        from localbvi.tui.screens.picker import PickerScreen

        await pilot.press("ctrl+n")  # the instruct side
        await wait_until(pilot, lambda: isinstance(app.screen, PickerScreen), what="picker")
        await pilot.pause(0.3)
        await pilot.press(*"finetune")
        await pilot.pause(0.2)
        await pilot.press("enter")
        await wait_until(pilot, lambda: app.screen is screen, what="back on compare")
        await wait_until(
            pilot, lambda: screen.engines is not None and stats(screen, "instruct") == "ready"
        )
        assert screen.names == ("Demo 270M", "my-finetune.gguf")
        assert "instruct · my-finetune.gguf" in title(screen, "instruct")
        instruct_engine = made[1]
        assert instruct_engine.loads == [INSTRUCT.path, "/models/my-finetune.gguf"]
        # The base side is untouched; a model for it comes from its own key.
        assert made[0].loads == [BASE.path]
        await pilot.press("ctrl+o")
        await wait_until(pilot, lambda: isinstance(app.screen, PickerScreen), what="picker")
        await pilot.pause(0.3)
        await pilot.press(*"Demo 270M IT")
        await pilot.pause(0.2)
        await pilot.press("enter")
        await wait_until(pilot, lambda: app.screen is screen and screen.names[0] == "Demo 270M IT")
        await wait_until(pilot, lambda: stats(screen, "base") == "ready")
        assert made[0].loads == [BASE.path, INSTRUCT.path]
        await run_both(pilot, screen, "Hi")
        assert made[0].requests == [("complete", "Hi")]  # the base side is still raw
        assert made[1].requests == [("chat", (Message("user", "Hi"),))]


async def test_missing_models_download_from_a_real_hub_server_then_load(
    isolated_home: Path, hub: HubServer, tiny_catalog: Path
) -> None:
    """The real store and downloader against a Hub stand-in on loopback: both sides missing,
    ctrl+y fetches both into the HF cache, then each side loads the downloaded file."""
    from localbvi.tui.services import Services
    from tests.store.ggufs import TINY_BASE

    services = Services()
    ((base, instruct),) = [p for p in services.catalog_pairs(2048) if p[0].ref.startswith("tiny")]
    assert base.path is None and instruct.path is None  # nothing on disk yet
    factory = FakeEngines()
    made = factory.made

    app = make_app(factory, services=services, check_online=False)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause(0.2)
        screen = CompareScreen(base, instruct, engine_factory=factory)
        await app.push_screen(screen)
        await wait_until(pilot, lambda: "ctrl+y downloads it" in stats(screen, "instruct"))
        assert "Tiny is not on disk" in stats(screen, "base")
        assert "(3.1 MB)" in stats(screen, "base")
        await pilot.press("ctrl+y")
        await wait_until(pilot, lambda: screen.engines is not None, timeout=60, what="loads")
        assert [t.state for t in app.downloads.tasks] == ["done", "done"]
        loaded = [e.loads[-1] for e in made[1:]]
        assert [Path(p).name for p in loaded] == ["tiny-Q4_K_M.gguf", "tiny-it-Q4_K_M.gguf"]
        assert Path(loaded[0]).read_bytes() == TINY_BASE
        assert str(isolated_home) in loaded[0]  # in the (isolated) HF cache
        assert stats(screen, "base") == stats(screen, "instruct") == "ready"
        assert len(hub.get_requests("GET")) >= 2


async def test_a_picked_model_that_fails_to_load_leaves_the_side_as_it_was() -> None:
    broken = ModelChoice(
        ref="/models/corrupt.gguf",
        display_name="corrupt.gguf",
        kind=None,
        path="/models/corrupt.gguf",
    )
    app = lab_app()
    factory = FakeEngines()
    made = factory.made

    async with app.run_test(size=SIZE) as pilot:
        screen = await open_compare(
            pilot, app, CompareScreen(BASE, INSTRUCT, engine_factory=factory)
        )
        screen.use_model("instruct", broken)
        await wait_until(pilot, lambda: "still Demo 270M IT" in stats(screen, "instruct"))
        assert "no model file at /models/corrupt.gguf" in stats(screen, "instruct")
        assert screen.names == ("Demo 270M", "Demo 270M IT")
        assert "instruct · Demo 270M IT" in title(screen, "instruct")
        await run_both(pilot, screen, "Hi")
        assert made[1].info is not None and made[1].info.path == INSTRUCT.path
        assert made[1].requests == [("chat", (Message("user", "Hi"),))]
