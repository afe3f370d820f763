"""The status bar's context figure while a reply streams (Pilot + FakeEngine)."""

from __future__ import annotations

import re
import time

import pytest

from localbvi.engine.fake import FakeEngine
from localbvi.engine.types import DoneEvent
from localbvi.tui.streaming import STATUS_S
from localbvi.tui.widgets.status_bar import StatusBar
from tests.helpers import SIZE, AppFactory, screen_text, wait_until


def ctx_on_screen(text: str) -> tuple[str, int] | None:
    """("~" or "", used) from the status bar's "ctx [~]USED/N_CTX" as the user sees it."""
    found = re.search(r"ctx (~?)(\d+)/\d+", text)
    return (found.group(1), int(found.group(2))) if found else None


async def test_the_context_figure_grows_while_the_reply_streams(fake_app: AppFactory) -> None:
    app = fake_app(tokens_per_s=25, stop_after_script=False)
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(pilot, lambda: app.model is not None)
        chat = app.main.chat
        engine = app.engine
        assert isinstance(engine, FakeEngine)
        dones: list[DoneEvent] = []
        original = app.main.status.set_done

        def set_done(done: DoneEvent) -> None:
            dones.append(done)
            original(done)

        app.main.status.set_done = set_done  # type: ignore[method-assign]
        before = ctx_on_screen(screen_text(app))
        assert before == ("", 0)

        await pilot.press(*"Count to fifty", "enter")
        seen: list[tuple[str, int]] = []

        def streaming_figure_grew() -> bool:
            figure = ctx_on_screen(screen_text(app))
            if figure is not None and (not seen or seen[-1] != figure):
                seen.append(figure)
            return len({used for about, used in seen if about == "~"}) >= 3

        await wait_until(pilot, streaming_figure_grew, timeout=20, what="the figure to move")
        # It moved before the reply ended: no DoneEvent yet, and still streaming.
        assert dones == [] and chat.generating
        moving = [used for about, used in seen if about == "~"]
        assert moving == sorted(moving) and moving[-1] > moving[0]

        await pilot.press("escape")
        await wait_until(pilot, lambda: not chat.generating and len(dones) == 1)
        done = dones[0]
        await wait_until(
            pilot,
            lambda: ctx_on_screen(screen_text(app)) == ("", done.prompt_tokens + done.tokens),
            what="the exact figure after the reply",
        )
        assert done.prompt_tokens + done.tokens >= moving[-1]


async def test_a_fast_stream_redraws_the_figure_at_most_ten_times_a_second(
    fake_app: AppFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    changes: list[int] = []
    monkeypatch.setattr(
        StatusBar, "watch_ctx_used", lambda self, value: changes.append(value), raising=False
    )
    app = fake_app(tokens_per_s=200, stop_after_script=False)  # 256 tokens in about 1.3 s
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(pilot, lambda: app.model is not None)
        chat = app.main.chat
        await pilot.press(*"Go")
        changes.clear()
        started = time.monotonic()
        await pilot.press("enter")
        await wait_until(pilot, lambda: len(chat.turns) == 2 and not chat.generating, timeout=30)
        elapsed = time.monotonic() - started
        tokens = chat._buffer.tokens
    during = changes[:-1]  # the last change is the exact figure at the end
    assert tokens == 256
    assert during, "the figure moved while streaming"
    # At most one redraw per 0.1 s tick (one more for timer jitter), never one per token.
    assert len(during) <= elapsed / STATUS_S + 2
    assert len(during) * 5 <= tokens
