"""Completion mode with the FakeEngine: the continuation streams into the document."""

from __future__ import annotations

from localbvi.engine.fake import FakeEngine
from localbvi.tui.widgets.completion_document import shift_spans
from tests.helpers import BASE, SIZE, AppFactory, screen_text, wait_until


async def test_base_model_opens_in_completion_mode_and_continues(fake_app: AppFactory) -> None:
    app = fake_app(model_ref=BASE.path)
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(pilot, lambda: app.model is not None)
        assert app.mode == "completion"
        assert "completion mode" in screen_text(app)
        await pilot.press(*"Once upon a time")
        await pilot.press("ctrl+g")
        view = app.main.completion
        await wait_until(pilot, lambda: not view.generating and view.document.generated != [])
        doc = view.document
        assert (
            doc.text == "Once upon a time and then the base model keeps writing the same document."
        )
        assert doc.generated_text() == " and then the base model keeps writing the same document."
        assert "keeps writing" in screen_text(app)
        assert "tok/s" in screen_text(app)
        engine = app.engine
        assert isinstance(engine, FakeEngine)
        assert engine.requests[-1] == ("complete", "Once upon a time")


async def test_edit_anywhere_then_continue_from_the_end(fake_app: AppFactory) -> None:
    app = fake_app(model_ref=BASE.path)
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(pilot, lambda: app.model is not None)
        view = app.main.completion
        await pilot.press(*"Dear Sir")
        await pilot.press("ctrl+g")
        await wait_until(pilot, lambda: not view.generating and view.document.generated != [])
        doc = view.document
        doc.move_cursor((0, 0))
        await pilot.press(*">> ")
        await pilot.pause()
        # The generated span moved with the edit and still covers the model's words.
        assert doc.generated_text().startswith(" and then")
        await pilot.press("ctrl+g")
        await wait_until(pilot, lambda: not view.generating and len(view.document.generated) == 1)
        engine = app.engine
        assert isinstance(engine, FakeEngine)
        kind, prompt = engine.requests[-1]
        assert kind == "complete"
        assert isinstance(prompt, str) and prompt.startswith(">> Dear Sir and then")
        assert doc.text.endswith(
            "document. and then the base model keeps writing the same document."
        )


async def test_escape_stops_the_continuation(fake_app: AppFactory) -> None:
    app = fake_app(model_ref=BASE.path, tokens_per_s=40, stop_after_script=False)
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(pilot, lambda: app.model is not None)
        view = app.main.completion
        await pilot.press(*"The list:")
        await pilot.press("ctrl+g")
        await wait_until(pilot, lambda: view.document.generated != [])
        assert view.document.read_only  # no edits while the model writes
        await pilot.press("escape")
        await wait_until(pilot, lambda: not view.generating)
        assert not view.document.read_only
        text = view.document.text
        await pilot.pause(0.2)
        assert view.document.text == text  # nothing arrives after the stop


async def test_mode_toggle_runs_an_instruct_model_raw(fake_app: AppFactory) -> None:
    app = fake_app()
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(pilot, lambda: app.model is not None)
        assert app.mode == "chat"
        await pilot.press("ctrl+t")
        assert app.mode == "completion"
        assert "Instruct model run raw" in screen_text(app)
        await pilot.press("ctrl+t")
        assert app.mode == "chat"


def test_shift_spans_follows_edits() -> None:
    old = "abcGENdef"
    spans = [(3, 6)]
    assert shift_spans(spans, old, "XXabcGENdef") == [(5, 8)]  # insert before
    assert shift_spans(spans, old, "abcGENdefYY") == [(3, 6)]  # insert after
    assert shift_spans(spans, old, "abcGxENdef") == [(3, 4), (5, 7)]  # typing inside splits
    assert shift_spans(spans, old, "abdef") == []  # deleted
    assert shift_spans(spans, old, "bcGENdef") == [(2, 5)]  # delete before
