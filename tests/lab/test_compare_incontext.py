"""The compare view's third column: the base model answering through in-context examples.

Pilot on FakeEngines for the column toggle, the X-ray and the saved session; then the real
Gemma 3 270M base model (stops at `# Query`) in the app and through `localbvi compare
--in-context`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from localbvi.cli import main
from localbvi.engine.types import Message
from localbvi.lab.incontext import build_prompt, load_incontext
from localbvi.sessions import SessionStore
from localbvi.tui.screens.compare import CompareScreen, open_saved_compare
from localbvi.tui.screens.xray import XrayScreen
from localbvi.tui.state import AppSettings
from tests.helpers import BASE, INSTRUCT, compare_argv, fake_pair, lab_app, open_compare, wait_until

SIZE = (140, 36)
LABEL = "base + in-context examples"


def title(screen: CompareScreen, side: str) -> str:
    return str(screen.pane(side).query_one(".pane-title").render())  # type: ignore[arg-type]


def shown(screen: CompareScreen) -> list[str]:
    return [s for s in ("base", "incontext", "instruct") if screen.pane(s).display]  # type: ignore[arg-type]


async def test_the_in_context_column_toggles_streams_and_is_saved() -> None:
    app = lab_app()
    base, instruct = fake_pair()
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_compare(
            pilot, app, CompareScreen(BASE, INSTRUCT, engines=(base, instruct))
        )
        assert shown(screen) == ["base", "instruct"]
        await pilot.press("ctrl+g")
        assert shown(screen) == ["base", "incontext", "instruct"]
        await pilot.press(*"What is 2+2?", "enter")
        await wait_until(pilot, lambda: not screen.running and len(screen.runs) == 3)
        prompt = build_prompt(load_incontext(), [Message("user", "What is 2+2?")])
        assert base.requests == [("complete", "What is 2+2?"), ("complete", prompt)]
        assert instruct.requests == [("chat", (Message("user", "What is 2+2?"),))]
        assert title(screen, "incontext") == f"in context · Demo 270M · {LABEL}"
        assert screen.pane("incontext").text.startswith(" and then the base model")
        assert "11 tokens" in screen.pane("incontext").stats
        # Its X-ray is the whole prompt: preamble, the examples, then the question.
        await pilot.press("f10")
        await wait_until(pilot, lambda: isinstance(app.screen, XrayScreen), what="X-ray")
        xray = app.screen
        assert isinstance(xray, XrayScreen)
        await wait_until(pilot, lambda: xray.prepared is not None)
        assert xray.shown_text == prompt and xray.shown_text.startswith("# Instructions")
        await pilot.press("escape")
        await wait_until(pilot, lambda: app.screen is screen)
        # Saved: the prompt and the three replies, each under its side's role.
        session_id = screen.session.id if screen.session else None
        app.sessions.flush()
        record = SessionStore().get(session_id or 0)
        assert [m.role for m in record.messages] == ["user", "base", "incontext", "instruct"]
        assert record.messages[2].content == screen.runs["incontext"].text
        # Pressed again: the in-context side takes the raw base side's place.
        await pilot.press("ctrl+g")
        await wait_until(pilot, lambda: not screen.running and len(base.requests) == 3)
        assert shown(screen) == ["incontext", "instruct"]
        assert base.requests[-1] == ("complete", prompt)
        await wait_until(pilot, lambda: len(instruct.requests) == 2)
        app.sessions.flush()
        record = SessionStore().get(session_id or 0)
        roles = [m.role for m in record.messages]
        assert roles[4:] == ["user", "incontext", "instruct"]
        await pilot.press("ctrl+g")
        assert shown(screen) == ["base", "instruct"]
        await wait_until(pilot, lambda: not screen.running and len(instruct.requests) == 3)
        await pilot.press("escape")
        await wait_until(pilot, lambda: app.screen is not screen)
        # A saved comparison with an in-context reply reopens with that column shown.
        open_saved_compare(app, record)
        await wait_until(pilot, lambda: isinstance(app.screen, CompareScreen))
        reopened = app.screen
        assert isinstance(reopened, CompareScreen)
        await pilot.pause()
        assert shown(reopened) == ["incontext", "instruct"]
        assert reopened.pane("incontext").text == record.messages[5].content


async def test_in_context_keys_show_only_with_the_column() -> None:
    app = lab_app()
    base, instruct = fake_pair()
    async with app.run_test(size=SIZE) as pilot:
        await open_compare(pilot, app, CompareScreen(engines=(base, instruct)))

        def keys() -> set[str]:
            return {b.binding.description for b in app.active_bindings.values() if b.enabled}

        assert "X-ray in-context" not in keys() and "Probs in-context" not in keys()
        assert "Download missing" not in keys()  # both models are here
        await pilot.press("ctrl+g")
        await pilot.pause()
        assert {"X-ray in-context", "Probs in-context", "In-context"} <= keys()


@pytest.mark.slow
async def test_real_base_model_in_context_stops_at_the_next_query(
    base_engine: Any, instruct_engine: Any
) -> None:
    app = lab_app(settings=AppSettings(temperature=0.0, max_tokens=96))
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_compare(
            pilot,
            app,
            CompareScreen(
                engines=(base_engine, instruct_engine),
                names=("Gemma pt", "Gemma it"),
                columns="three",
            ),
        )
        screen.run_prompt("What is the capital of France?")
        await wait_until(pilot, lambda: not screen.running and len(screen.runs) == 3, timeout=300)
        run = screen.runs["incontext"]
        assert run.done is not None
        assert run.done.finish_reason == "stop", screen.pane("incontext").stats
        assert "stop string" in screen.pane("incontext").stats
        assert "# Query" not in run.text and "Paris" in run.text
        assert title(screen, "incontext") == f"in context · Gemma pt · {LABEL}"
        assert "raw completion" in title(screen, "base")
        assert screen.runs["base"].text != run.text
        # Its X-ray is the exact prompt the base model read: preamble, examples, question.
        await pilot.press("f10")
        await wait_until(pilot, lambda: isinstance(app.screen, XrayScreen), what="X-ray")
        xray = app.screen
        assert isinstance(xray, XrayScreen)
        await wait_until(pilot, lambda: xray.prepared is not None, timeout=60)
        assert xray.shown_text.startswith("<bos># Instructions\n")
        assert xray.shown_text.endswith(
            "# Query:\n```\nWhat is the capital of France?\n```\n\n# Answer:\n```\n"
        )


@pytest.mark.slow
def test_cli_compare_in_context_json_has_all_three_sides(
    gemma_base: Path, gemma_instruct: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(
        compare_argv(
            gemma_base,
            gemma_instruct,
            "--in-context",
            "--json",
            "--max-tokens",
            "96",
            "--temperature",
            "0",
            "--ctx",
            "2048",
            "What is the capital of France?",
        )
    )
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line]
    done = [r for r in lines if r["type"] == "done"]
    assert code == 0, done
    assert [(d["side"], d["mode"]) for d in done] == [
        ("base", "raw"),
        ("incontext", "incontext"),
        ("instruct", "chat"),
    ]
    incontext = "".join(
        r["text"] for r in lines if r["type"] == "token" and r["side"] == "incontext"
    )
    assert done[1]["finish_reason"] == "stop" and "# Query" not in incontext, (done[1], incontext)
    assert "Paris" in incontext, incontext


@pytest.mark.slow
def test_cli_compare_in_context_text_labels_the_third_side(
    gemma_base: Path, gemma_instruct: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(
        compare_argv(
            gemma_base,
            gemma_instruct,
            "--in-context",
            "--max-tokens",
            "8",
            "--temperature",
            "0",
            "--ctx",
            "2048",
            "Hello",
        )
    )
    assert code == 0
    out = capsys.readouterr().out
    headers = [line for line in out.splitlines() if line.startswith("── ")]
    assert len(headers) == 3
    assert headers[1].startswith("── incontext: ") and headers[1].endswith(f"· {LABEL} ──")
