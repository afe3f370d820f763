"""The app on the real engine (llama.cpp in a child process) with the Gemma 3 270M fixtures.

Short replies (max_tokens 8-24) keep these quick: the model decodes ~50 tok/s on 2 cores.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import SIZE, notifications, real_app, screen_text, wait_until

pytestmark = pytest.mark.timeout(180)


async def test_chat_reply_streams_and_stops(gemma_instruct: Path) -> None:
    app = real_app(gemma_instruct)
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(pilot, lambda: app.model is not None, timeout=60, what="load")
        assert app.model is not None and app.model.kind == "instruct"
        assert app.mode == "chat"
        await pilot.press(*"Hello", "enter")
        chat = app.main.chat
        await wait_until(pilot, lambda: len(chat.turns) == 2 and not chat.generating, timeout=60)
        reply = chat.turns[1]
        assert reply.outcome == "done"
        assert reply.content.strip()
        assert "<end_of_turn>" not in reply.content
        # The status bar redraws on the next frame after the reply ends.
        await wait_until(pilot, lambda: "tok/s" in screen_text(app), what="reply speed shown")
        text = screen_text(app)
        assert "tok/s" in text and "CPU" in text
        assert "instruct" in text and "chat mode" in text
        # Context use follows the reply: prompt tokens + generated tokens.
        status = app.main.status
        assert status.ctx_used > 0 and f"ctx {status.ctx_used}/1024" in text, text


async def test_completion_streams_into_the_document(gemma_base: Path) -> None:
    app = real_app(gemma_base)
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(pilot, lambda: app.model is not None, timeout=60, what="load")
        assert app.model is not None and app.model.kind == "base"
        assert app.mode == "completion"
        await pilot.press(*"What is 2+2?")
        await pilot.press("ctrl+g")
        view = app.main.completion
        await wait_until(pilot, lambda: view.document.generated != [], timeout=60)
        await wait_until(pilot, lambda: not view.generating, timeout=60)
        doc = view.document
        assert doc.text.startswith("What is 2+2?")
        assert doc.generated_text()
        assert doc.text == "What is 2+2?" + doc.generated_text()
        assert "tok/s" in screen_text(app)


async def test_escape_cancels_a_real_reply(gemma_instruct: Path) -> None:
    app = real_app(gemma_instruct, max_tokens=400)
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(pilot, lambda: app.model is not None, timeout=60, what="load")
        await pilot.press(*"Write a very long story about a dragon.", "enter")
        chat = app.main.chat
        await wait_until(pilot, lambda: len(chat.turns) == 2 and chat.turns[1].content, timeout=60)
        await pilot.press("escape")
        await wait_until(pilot, lambda: not chat.generating, timeout=30, what="cancel")
        assert chat.turns[1].outcome in ("cancelled", "done")  # a short story may just end
        if chat.turns[1].outcome == "cancelled":
            assert "cancelled" in screen_text(app)


async def test_switch_model_live_and_failed_load_keeps_it(
    gemma_instruct: Path, gemma_base: Path, tmp_path: Path
) -> None:
    corrupt = tmp_path / "junk.gguf"
    corrupt.write_bytes(b"GGUF" + b"\xff" * 4096)
    app = real_app(gemma_instruct)
    async with app.run_test(size=SIZE, notifications=True) as pilot:
        await wait_until(pilot, lambda: app.model is not None, timeout=60, what="load")
        app.open_model(str(gemma_base))
        await wait_until(
            pilot,
            lambda: app.loading is None and app.model is not None and app.model.kind == "base",
            timeout=60,
            what="switch",
        )
        assert app.mode == "completion"
        assert app.engine.info is not None and app.engine.info.path == str(gemma_base)

        before = len(notifications(app))
        app.open_model(str(corrupt))
        await wait_until(
            pilot,
            lambda: app.loading is None and len(notifications(app)) > before,
            timeout=60,
            what="failed load",
        )
        assert any("Could not load junk.gguf" in n for n in notifications(app))
        assert "Traceback" not in screen_text(app)
        assert app.model is not None and app.model.kind == "base"
        # The previous model still answers.
        await pilot.press(*"Once upon a time")
        await pilot.press("ctrl+g")
        view = app.main.completion
        await wait_until(pilot, lambda: view.document.generated != [], timeout=60)
        await wait_until(pilot, lambda: not view.generating, timeout=60)
        assert view.document.generated_text()
