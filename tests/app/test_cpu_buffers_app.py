"""The app on a CPU where llama.cpp crashes with its extra buffers on (injected crash).

The reply still arrives, the status bar says the safe setting is in use, and the notice is
shown once and written at the top of the log (F-key log screen reads `engine.logs()`).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from localbvi.engine import cpu_buffers
from tests.helpers import SIZE, notifications, real_app, screen_text, wait_until

pytestmark = [pytest.mark.timeout(180), pytest.mark.slow]


async def test_first_request_crash_is_served_and_shown(
    gemma_instruct: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LOCALBVI_FAULT_FIRST_DECODE", "extra-buffers")
    cpu_buffers.remember(True, "a warm-up decode with them on worked")  # no warm-up: retry path
    app = real_app(gemma_instruct)
    async with app.run_test(size=SIZE, notifications=True) as pilot:
        await wait_until(pilot, lambda: app.model is not None, timeout=60, what="load")
        assert "extra buffers off" not in screen_text(app)
        await pilot.press(*"Hello", "enter")
        chat = app.main.chat
        await wait_until(pilot, lambda: len(chat.turns) == 2 and not chat.generating, timeout=90)
        assert chat.turns[1].outcome == "done" and chat.turns[1].content.strip()
        await wait_until(pilot, lambda: "extra buffers off" in screen_text(app), what="status bar")
        assert any(cpu_buffers.CRASH_NOTE in n for n in notifications(app))
        assert app.engine.logs()[0] == f"localbvi: {cpu_buffers.CRASH_NOTE}"
        assert "Traceback" not in screen_text(app)


async def test_a_remembered_crash_loads_safe_from_the_start(
    gemma_base: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LOCALBVI_FAULT_FIRST_DECODE", "extra-buffers")
    cpu_buffers.remember(False, cpu_buffers.CRASH_NOTE)
    app = real_app(gemma_base)
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(pilot, lambda: app.model is not None, timeout=60, what="load")
        await wait_until(
            pilot, lambda: "CPU (extra buffers off)" in screen_text(app), what="status bar"
        )
        await pilot.press(*"Once upon a time", "ctrl+g")
        view = app.main.completion
        await wait_until(pilot, lambda: view.document.generated != [], timeout=60)
        await wait_until(pilot, lambda: not view.generating, timeout=60)
        assert view.document.generated_text()
