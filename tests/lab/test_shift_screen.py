"""The token shift view (issue 10), driven with Pilot.

Layout and keys on FakeEngines (scripted answer and ranks); the last test on the real Gemma
pair, checking the figures shown against the domain's own `run_shift`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from textual.pilot import Pilot

from localbvi.engine.fake import DEFAULT_SCORE_RANKS, FakeEngine
from localbvi.engine.types import LoadConfig, Message
from localbvi.lab.shift import category, run_shift
from localbvi.tui import LocalbviApp, make_app
from localbvi.tui.screens.compare import CompareScreen
from localbvi.tui.screens.shift import ShiftScreen
from localbvi.tui.services import StaticServices
from localbvi.tui.state import AppSettings, ModelChoice
from localbvi.tui.widgets.shift_view import ShiftView
from tests.helpers import (
    BASE,
    INSTRUCT,
    ProbsFakeEngine,
    fake_pair,
    notifications,
    screen_text,
    track_notifications,
)
from tests.helpers import wait_until as _wait_until

SIZE = (130, 40)


async def wait_until(
    pilot: Pilot[Any], condition: Any, timeout: float = 15.0, what: str = ""
) -> None:
    """tests.helpers.wait_until with a longer default: the test machine is shared."""
    await _wait_until(pilot, condition, timeout, what)


def build_app(services: StaticServices | None = None, **engine_kwargs: Any) -> LocalbviApp:
    engine = ProbsFakeEngine(**engine_kwargs)
    app = make_app(
        lambda: engine,
        model_ref=INSTRUCT.path,
        services=services or StaticServices(pairs=[(BASE, INSTRUCT)], local=[BASE, INSTRUCT]),
        check_online=False,
    )
    return track_notifications(app)


async def open_shift(pilot: Pilot[Any], app: LocalbviApp, screen: ShiftScreen) -> ShiftScreen:
    await wait_until(pilot, lambda: app.model is not None, what="the app's model")
    app.push_screen(screen)
    await wait_until(pilot, lambda: app.screen is screen and screen.is_mounted, what="shift")
    return screen


async def scored(
    pilot: Pilot[Any], app: LocalbviApp, base: FakeEngine, instruct: FakeEngine
) -> ShiftScreen:
    """The view on "Hi", once its first result (or error) is in."""
    screen = await open_shift(pilot, app, ShiftScreen("Hi", base=base, instruct=instruct))
    await wait_until(pilot, lambda: finished(screen))
    return screen


def finished(screen: ShiftScreen) -> bool:
    return not screen.running and (screen.result is not None or bool(screen.error))


def detail(screen: ShiftScreen) -> str:
    return str(screen.query_one("#shift-token").render())


def summary(screen: ShiftScreen) -> str:
    return str(screen.query_one("#shift-summary").render())


CATEGORIES = {"unshifted", "marginal", "shifted"}


def expected_percentages(ranks: Sequence[int]) -> dict[str, str]:
    cats = [category(r) for r in ranks]
    return {
        c: f"{100 * cats.count(c) / len(cats):.1f} %" for c in ("unshifted", "marginal", "shifted")
    }


async def test_from_compare_the_answer_is_coloured_with_figures_and_alternatives() -> None:
    app = build_app()
    base, instruct = fake_pair()
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(pilot, lambda: app.model is not None)
        compare = CompareScreen(engines=(base, instruct))
        app.push_screen(compare)
        await wait_until(pilot, lambda: app.screen is compare and compare.is_mounted)
        compare.run_prompt("What is 2+2?")
        await wait_until(pilot, lambda: not compare.running and len(compare.runs) == 2)
        await pilot.press("f9")
        await wait_until(pilot, lambda: isinstance(app.screen, ShiftScreen), what="shift view")
        screen = app.screen
        assert isinstance(screen, ShiftScreen)
        await wait_until(pilot, lambda: finished(screen), what="the shift result")
        assert screen.result is not None and not screen.error
        # The compare view's own engines were borrowed, not loaded again.
        assert screen.base is base and screen.instruct is instruct
        assert instruct.requests[-1] == ("chat", (Message("user", "What is 2+2?"),))
        shown = screen_text(app)
        assert "Question: What is 2+2?" in shown
        assert "done: 12 tokens scored" in shown
        ranks = [DEFAULT_SCORE_RANKS[i % len(DEFAULT_SCORE_RANKS)] for i in range(12)]
        pct = expected_percentages(ranks)
        figures = summary(screen)
        for cat in ("unshifted", "marginal", "shifted"):
            assert f"{cat} {pct[cat]}" in figures
        assert "■ unshifted: the base model's own first choice" in figures
        shifted = [screen.result.tokens[i].text for i, r in enumerate(ranks) if r > 3]
        assert "most shifted: " + ", ".join(f"{t!r} ×1" for t in shifted) in figures
        assert "KL by position: " in figures and "77.7 / 14.5 / 7.8 %" in figures
        # Each token is drawn in its category's style, the selected one reversed.
        answer = screen.view.render()
        assert str(answer) == screen.result.answer
        # The first token is selected: its detail shows the base model's choices.
        assert "token 1 of 12: 'Sure'" in detail(screen)
        assert "rank in the base model: 1" in detail(screen)
        assert "instruct prob 60.0%" in detail(screen)


async def test_keys_and_clicks_move_between_tokens() -> None:
    app = build_app()
    base, instruct = fake_pair()
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_shift(
            pilot, app, ShiftScreen("Hi", base=base, instruct=instruct, names=("B", "I"))
        )
        await wait_until(pilot, lambda: finished(screen))
        assert screen.result is not None
        assert app.focused is screen.view
        await pilot.press("right", "right")
        assert screen.view.index == 2
        assert "token 3 of 12: ' Here'" in detail(screen)
        assert "marginal" in detail(screen) and "rank in the base model: 2" in detail(screen)
        # The base model's top choices, with the instruct token marked at its rank.
        lines = detail(screen).splitlines()
        first = lines.index("The base model's top choices here:")
        assert "' alt1'" in lines[first + 1] and "50.0%" in lines[first + 1]
        assert lines[first + 2].startswith("▶") and "' Here'" in lines[first + 2]
        await pilot.press("n")  # the next shifted token
        assert screen.view.index == 5
        assert "shifted" in detail(screen) and "rank in the base model: 5" in detail(screen)
        await pilot.press("end")
        assert screen.view.index == 11 and "token 12 of 12" in detail(screen)
        await pilot.press("left")
        assert screen.view.index == 10
        # A click on a token selects it: "Sure! Here" — column 6 is inside " Here".
        await pilot.click(ShiftView, offset=(6, 0))
        await wait_until(pilot, lambda: screen.view.index == 2, what="the clicked token")
        assert "token 3 of 12" in detail(screen)
        # The caret under the KL sparkline follows the cursor.
        caret = summary(screen).splitlines()
        kl = next(i for i, line in enumerate(caret) if line.startswith("KL by position: "))
        assert caret[kl + 1].index("▲") == len("KL by position: ") + 2


async def test_the_frame_switches_and_runs_again() -> None:
    app = build_app()
    base, instruct = fake_pair()
    async with app.run_test(size=SIZE) as pilot:
        screen = await scored(pilot, app, base, instruct)
        assert screen.result is not None and screen.result.frame == "plain"
        assert screen.result.base_prompt.startswith("# Query:")
        await pilot.press("f")
        await wait_until(
            pilot, lambda: finished(screen) and screen.result is not None
            and screen.result.frame == "raw", what="the raw frame",
        )  # fmt: skip
        assert screen.result is not None and screen.result.base_prompt == "Hi\n"
        assert "frame: raw" in detail(screen)
        await pilot.press("f")
        await wait_until(
            pilot, lambda: finished(screen) and screen.result is not None
            and screen.result.frame == "template", what="the template frame",
        )  # fmt: skip
        assert screen.result is not None
        assert screen.result.base_prompt.startswith("<bos><start_of_turn>user\nHi")
        # Each switch re-scored the one answer: the instruct model answered once.
        assert [kind for kind, _ in instruct.requests] == ["chat"]
        assert len(base.score_requests) == 3
        assert len({req.answer for req in base.score_requests}) == 1
        assert (
            str(screen.view.render())
            == screen.result.answer
            == "Sure! Here is an answer from the **fake** instruct model."
        )


def record_status(screen: ShiftScreen) -> list[str]:
    """Every status line the screen shows, in order (polling could miss a short one)."""
    seen: list[str] = []
    show = screen._set_status

    def recording(text: str, style: str = "") -> None:
        seen.append(text)
        show(text, style)

    screen._set_status = recording  # type: ignore[method-assign]
    return seen


class SlowScoring:
    """A shift view on fake models whose scoring takes a second per chunk of 4 tokens."""

    def __init__(self) -> None:
        self.app = build_app()
        self.base, self.instruct = fake_pair(score_chunk_s=1.0)
        self.screen = ShiftScreen("Hi", base=self.base, instruct=self.instruct)
        self.statuses = record_status(self.screen)

    async def until_scoring(self, pilot: Pilot[Any]) -> None:
        """Open the view and wait for the first chunk of the plain frame's scoring."""
        await open_shift(pilot, self.app, self.screen)
        await wait_until(
            pilot, lambda: any("scoring 4/12" in t for t in self.statuses), what="4/12"
        )


async def test_scoring_shows_its_progress_and_escape_stops_it_between_chunks() -> None:
    lab = SlowScoring()
    screen, statuses, base, instruct = lab.screen, lab.statuses, lab.base, lab.instruct
    async with lab.app.run_test(size=SIZE) as pilot:
        await lab.until_scoring(pilot)
        line = next(t for t in statuses if "scoring 4/12" in t)
        assert line == "scoring 4/12 with the base model, plain frame (escape stops)"
        await pilot.press("escape")
        await wait_until(pilot, lambda: not screen.running, timeout=5, what="stopped")
        assert screen.result is None and "scoring cancelled" in screen.status
        # It stopped between chunks: the last of the three never ran.
        scored = [t for t in statuses if t.startswith("scoring ") and "/12" in t]
        assert not any("scoring 12/12" in t for t in scored), scored
        # The answer stays on screen, and f re-scores it without asking the model again.
        assert screen.answer is not None
        assert str(screen.view.render()) == screen.answer.text
        await pilot.press("f")
        await wait_until(pilot, lambda: finished(screen), timeout=15, what="re-scored")
        assert screen.result is not None and screen.result.frame == "raw"
        assert "done: 12 tokens scored" in screen.status
        assert any("scoring 4/12 with the base model, raw frame" in t for t in statuses)
        assert [kind for kind, _ in instruct.requests] == ["chat"]
        assert len(base.score_requests) == 2


async def test_a_frame_switch_while_scoring_re_scores_under_the_new_frame() -> None:
    lab = SlowScoring()
    screen, statuses, base, instruct = lab.screen, lab.statuses, lab.base, lab.instruct
    async with lab.app.run_test(size=SIZE) as pilot:
        await lab.until_scoring(pilot)
        await pilot.press("f")
        await wait_until(
            pilot, lambda: finished(screen) and screen.result is not None, timeout=15,
            what="the raw frame's result",
        )  # fmt: skip
        assert screen.result is not None and screen.result.frame == "raw"
        assert not any("scoring 12/12" in t and "plain" in t for t in statuses)
        assert [kind for kind, _ in instruct.requests] == ["chat"]
        assert len(base.score_requests) == 2  # the plain scoring stopped, then raw


async def test_branch_continues_with_the_base_model_from_the_token() -> None:
    app = build_app()
    base, instruct = fake_pair()
    async with app.run_test(size=SIZE) as pilot:
        screen = await scored(pilot, app, base, instruct)
        await pilot.press("right", "right", "right", "b")
        await wait_until(pilot, lambda: not screen.branching and "tokens" in screen.branch_text)
        # The base model continued the plain frame plus the answer before token 4.
        kind, prompt = base.requests[-1]
        assert kind == "complete"
        assert prompt == "# Query:\n```\nHi\n```\n\n# Answer:\n```\nSure! Here"
        text = screen.branch_text
        assert text.startswith("Base model from token 4 (instead of ' is'):")
        assert "and then the base model keeps writing the same document." in text
        assert "11 tokens" in text and "EOS" in text
        assert "branch done" in screen.status


async def test_escape_cancels_the_answer_then_closes() -> None:
    app = build_app()
    base, instruct = fake_pair(tokens_per_s=20, stop_after_script=False)
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_shift(pilot, app, ShiftScreen("Hi", base=base, instruct=instruct))
        await wait_until(pilot, lambda: "answering… " in screen.status, what="progress")
        await wait_until(pilot, lambda: "Sure! Here" in str(screen.view.render()), what="stream")
        await pilot.press("escape")
        await wait_until(pilot, lambda: not screen.running, timeout=3, what="stopped")
        assert screen.result is None
        assert "cancelled" in screen.status
        assert app.screen is screen
        await pilot.press("escape")
        await wait_until(pilot, lambda: app.screen is not screen, what="closed")
    # A borrowed engine is not closed with the view.
    assert base.info is not None


async def test_a_mismatched_vocabulary_is_refused_in_words() -> None:
    app = build_app()
    base = ProbsFakeEngine(vocab_name="llama")
    base.load(str(BASE.path), LoadConfig())
    instruct = ProbsFakeEngine(vocab_name="gemma")
    instruct.load(str(INSTRUCT.path), LoadConfig())
    async with app.run_test(size=SIZE) as pilot:
        screen = await scored(pilot, app, base, instruct)
        shown = screen_text(app)
        assert "do not share a tokenizer" in screen.error
        assert "llama vocabulary" in screen.error and "gemma vocabulary" in screen.error
        assert "do not share a tokenizer" in shown and "Traceback" not in shown
        assert instruct.requests == []  # refused before the instruct model answered


async def chat_reply(pilot: Pilot[Any], app: LocalbviApp) -> None:
    await wait_until(pilot, lambda: app.model is not None, what="the app's model")
    await pilot.press(*"What is 2+2?", "enter")
    await wait_until(
        pilot, lambda: any(t.outcome == "done" for t in app.main.chat.turns), what="the reply"
    )


async def test_from_a_chat_reply_the_base_sibling_is_loaded_for_the_view() -> None:
    app = build_app()
    async with app.run_test(size=SIZE) as pilot:
        await chat_reply(pilot, app)
        await pilot.press("f9")
        await wait_until(pilot, lambda: isinstance(app.screen, ShiftScreen), what="shift view")
        screen = app.screen
        assert isinstance(screen, ShiftScreen)
        await wait_until(pilot, lambda: finished(screen), what="the shift result")
        assert screen.result is not None, screen.error
        assert screen.question == "What is 2+2?"
        assert screen.instruct is app.engine and screen.owns_base
        own = screen.base
        assert isinstance(own, FakeEngine) and own is not app.engine
        assert own.loads == [BASE.path]
        assert "Token shift: Demo 270M IT answers greedily; Demo 270M scores" in screen_text(app)
        await pilot.press("escape")
        await wait_until(pilot, lambda: not isinstance(app.screen, ShiftScreen), what="closed")
        assert own.info is None  # the view's own base engine closed with it
        assert app.engine.info is not None  # the app's model stays loaded


async def test_from_a_later_chat_turn_the_view_says_what_it_scores() -> None:
    app = build_app()
    async with app.run_test(size=SIZE) as pilot:
        await chat_reply(pilot, app)
        await pilot.press(*"And 3+3?", "enter")
        await wait_until(
            pilot, lambda: sum(t.outcome == "done" for t in app.main.chat.turns) == 2,
            what="the second reply",
        )  # fmt: skip
        await pilot.press("f9")
        await wait_until(pilot, lambda: isinstance(app.screen, ShiftScreen), what="shift view")
        screen = app.screen
        assert isinstance(screen, ShiftScreen)
        await wait_until(pilot, lambda: finished(screen), what="the shift result")
        assert screen.question == "And 3+3?"
        shown = " ".join(screen_text(app).split())
        assert "Question 2 of 2 in this chat, scored as one turn, as in the paper" in shown
        assert "the earlier turn is left out for both models" in shown
        # Indeed: the instruct model was asked this question alone.
        kind, messages = app.engine.requests[-1]
        assert kind == "chat" and [m.content for m in messages if m.role == "user"] == ["And 3+3?"]


async def test_the_palette_opens_the_shift_view() -> None:
    app = build_app()
    async with app.run_test(size=SIZE) as pilot:
        await chat_reply(pilot, app)
        await pilot.press("ctrl+p")
        await pilot.press(*"Token shift")
        await pilot.pause(0.3)
        await pilot.press("enter")
        await wait_until(pilot, lambda: isinstance(app.screen, ShiftScreen), what="shift view")


async def test_a_base_sibling_not_on_disk_is_named_for_download() -> None:
    missing = ModelChoice(**{**BASE.__dict__, "path": None})
    app = build_app(StaticServices(pairs=[(missing, INSTRUCT)], local=[INSTRUCT]))
    async with app.run_test(size=SIZE) as pilot:
        await chat_reply(pilot, app)
        await pilot.press("f9")
        await wait_until(pilot, lambda: any("not on disk" in n for n in notifications(app)))
        note = next(n for n in notifications(app) if "not on disk" in n)
        assert "Demo 270M" in note and "`localbvi pull demo-base`" in note
        assert not isinstance(app.screen, ShiftScreen)


async def test_a_model_without_a_known_sibling_says_how_to_pair_it() -> None:
    app = build_app(StaticServices(pairs=[], local=[INSTRUCT]))
    async with app.run_test(size=SIZE) as pilot:
        await chat_reply(pilot, app)
        await pilot.press("f9")
        await wait_until(
            pilot, lambda: any("no known base sibling" in n for n in notifications(app))
        )
        assert any("localbvi pair" in n for n in notifications(app))


@pytest.mark.slow
async def test_real_gemma_pair_figures_match_the_domain(
    base_engine: Any, instruct_engine: Any, gemma_base: Path
) -> None:
    question = "What is the capital of France?"
    app = make_app(
        lambda: FakeEngine(),
        services=StaticServices(),
        settings=AppSettings(max_tokens=24),
        check_online=False,
    )
    async with app.run_test(size=SIZE) as pilot:
        app.push_screen(ShiftScreen(question, base=base_engine, instruct=instruct_engine))
        await wait_until(pilot, lambda: isinstance(app.screen, ShiftScreen))
        screen = app.screen
        assert isinstance(screen, ShiftScreen)
        await wait_until(pilot, lambda: finished(screen), timeout=240, what="the real result")
        assert screen.result is not None, screen.error
        await wait_until(pilot, lambda: "tokens:" in summary(screen), what="the figures")
        shown = summary(screen)
        # The same call the CLI makes, on the same engines and settings (in a thread, so the
        # app keeps running).
        expected = await asyncio.to_thread(
            run_shift, base_engine, instruct_engine, question, app.settings.to_sampling(), top_k=10
        )
        assert screen.result.answer == expected.answer
        pct = expected.percentages()
        for cat in ("unshifted", "marginal", "shifted"):
            assert f"{cat} {pct[cat]:.1f} %" in shown
        assert f"{len(expected.tokens)} tokens:" in shown
        # Moving to a token shows the base model's alternatives there.
        await pilot.press("right")
        token = expected.tokens[1]
        text = detail(screen)
        assert f"token 2 of {len(expected.tokens)}: {token.text!r}" in text
        assert f"rank in the base model: {token.rank}" in text
        for alt in token.base_alternatives[:3]:
            assert repr(alt.text) in text and f"{alt.prob:6.1%}" in text
