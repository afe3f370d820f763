"""Chat mode with a base model: it answers through in-context examples, labelled as such.

FakeEngine tests check what the user sees (the offer, the mode label, the banner, the reply's
heading) and the exact text sent to the engine: the in-context frame (preamble, examples) with
the conversation appended as earlier queries. One slow test runs the real Gemma base GGUF.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from localbvi.engine.fake import FakeEngine
from localbvi.lab.incontext import bundled_incontext, user_incontext_path
from localbvi.tui import LocalbviApp, make_app
from localbvi.tui.screens.welcome import WelcomeScreen
from localbvi.tui.services import Services, StaticServices
from localbvi.tui.state import AppSettings, ModelChoice
from tests.helpers import (
    BASE,
    INSTRUCT,
    SIZE,
    AppFactory,
    notifications,
    screen_text,
    track_notifications,
    wait_until,
)

ANSWER_SCRIPT = ("Four", ".", "\n```", "\n\n")
"""What a base model writes in the frame: the answer, then the fence closing the answer
block (the stop string `# Query` ends the text right after it)."""


def engine_of(app: LocalbviApp) -> FakeEngine:
    assert isinstance(app.engine, FakeEngine)
    return app.engine


def prompts(app: LocalbviApp) -> list[str]:
    """Every raw prompt the engine was asked to continue."""
    return [str(p) for kind, p in engine_of(app).requests if kind == "complete"]


def only_base_on_disk() -> StaticServices:
    """The offline demo: the base model on disk, its instruct sibling not downloaded."""
    instruct = ModelChoice(**{**INSTRUCT.__dict__, "path": None})
    return StaticServices(pairs=[(BASE, instruct)], local=[BASE], online=False)


def flat(app: LocalbviApp) -> str:
    """The screen's words on one line (a sentence may wrap)."""
    return " ".join(screen_text(app).split())


async def ask(app: LocalbviApp, pilot: object, text: str) -> None:
    """Type `text` in the chat prompt, send it, wait for the reply to finish."""
    chat = app.main.chat
    before = len(chat.turns)
    await pilot.press(*text, "enter")  # type: ignore[attr-defined]
    await wait_until(
        pilot,  # type: ignore[arg-type]
        lambda: len(chat.turns) == before + 2 and not chat.generating,
        what=f"reply to {text!r}",
    )


async def test_a_base_model_chats_through_in_context_examples(fake_app: AppFactory) -> None:
    app = fake_app(model_ref=BASE.path, mode="chat", completion_script=ANSWER_SCRIPT)
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(pilot, lambda: app.model is not None, what="model loaded")
        assert app.model is not None and app.model.kind == "base"
        # The banner's lesson (it wraps once laid out) and the status bar's mode.
        await wait_until(pilot, lambda: "stops at the next # Query" in flat(app), what="banner")
        assert "not an instruct model" in flat(app)
        assert "in-context chat mode" in screen_text(app)
        await ask(app, pilot, "What is 2+2?")
        chat = app.main.chat
        reply = chat.turns[1]
        assert reply.outcome == "done"
        # The closing fence of the answer block is not part of the answer.
        assert reply.content == "Four."
        text = screen_text(app)
        assert "Base model · in-context examples" in text
        assert "no chat template" not in text
        assert engine_of(app).requests[-1][0] == "complete"  # raw text, never the template
        (prompt,) = prompts(app)
        bundled = bundled_incontext()
        assert prompt.startswith(bundled.preamble.strip())
        for query, answer in bundled.examples:
            assert f"# Query:\n```\n{query}\n```\n\n# Answer:\n```\n{answer}\n```" in prompt
        assert prompt.endswith("# Query:\n```\nWhat is 2+2?\n```\n\n# Answer:\n```\n")
        assert prompt.count("# Query:") == len(bundled.examples) + 1


async def test_history_is_appended_in_the_same_format(fake_app: AppFactory) -> None:
    app = fake_app(model_ref=BASE.path, mode="chat", completion_script=ANSWER_SCRIPT)
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(pilot, lambda: app.model is not None, what="model loaded")
        await ask(app, pilot, "What is 2+2?")
        await ask(app, pilot, "And 3+3?")
        first, second = prompts(app)
        open_query = "# Query:\n```\nWhat is 2+2?\n```\n\n# Answer:\n```\n"
        assert first.endswith(open_query)
        earlier = open_query + "Four.\n```\n\n"
        assert second == first.removesuffix(open_query) + earlier + (
            "# Query:\n```\nAnd 3+3?\n```\n\n# Answer:\n```\n"
        )
        # Regenerate asks again with the same prompt and replaces the last reply.
        await pilot.press("ctrl+r")
        chat = app.main.chat
        await wait_until(pilot, lambda: len(prompts(app)) == 3 and not chat.generating)
        assert prompts(app)[2] == second
        assert len(chat.turns) == 4 and chat.turns[3].content == "Four."


async def test_the_system_prompt_joins_the_preamble(fake_app: AppFactory) -> None:
    app = fake_app(model_ref=BASE.path, mode="chat", completion_script=ANSWER_SCRIPT)
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(pilot, lambda: app.model is not None, what="model loaded")
        app.main.chat.query_one("#system-prompt").value = "Answer like a pirate."  # type: ignore[attr-defined]
        app.main.chat.prompt.focus()
        await ask(app, pilot, "Hi")
        (prompt,) = prompts(app)
        preamble = bundled_incontext().preamble.strip()
        assert prompt.startswith(f"{preamble}\n\nAnswer like a pirate.\n\n# Query:")


async def test_escape_cancels_an_in_context_reply(fake_app: AppFactory) -> None:
    app = fake_app(model_ref=BASE.path, mode="chat", tokens_per_s=40, stop_after_script=False)
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(pilot, lambda: app.model is not None, what="model loaded")
        await pilot.press(*"Tell me a story", "enter")
        chat = app.main.chat
        await wait_until(pilot, lambda: len(chat.turns) == 2 and chat.turns[1].content != "")
        assert chat.generating
        await pilot.press("escape")
        await wait_until(pilot, lambda: not chat.generating, what="cancelled")
        assert chat.turns[1].outcome == "cancelled"
        assert "cancelled" in screen_text(app)


async def test_ctrl_t_switches_a_base_model_between_completion_and_in_context_chat(
    fake_app: AppFactory,
) -> None:
    app = fake_app(model_ref=BASE.path)
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(pilot, lambda: app.model is not None, what="model loaded")
        assert app.mode == "completion" and not app.in_context_chat
        assert "completion mode" in screen_text(app)
        await pilot.press("ctrl+t")
        await wait_until(pilot, lambda: "in-context chat mode" in screen_text(app))
        assert app.mode == "chat" and app.in_context_chat
        await pilot.press("ctrl+t")
        await wait_until(pilot, lambda: "completion mode" in screen_text(app))
        assert "in-context" not in screen_text(app)


async def test_an_instruct_model_still_chats_through_its_template(fake_app: AppFactory) -> None:
    app = fake_app(model_ref=INSTRUCT.path)
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(pilot, lambda: app.model is not None, what="model loaded")
        await ask(app, pilot, "Hi")
        assert engine_of(app).requests[-1][0] == "chat"
        text = screen_text(app)
        assert "chat mode" in text and "in-context" not in text


async def test_a_base_model_with_a_template_can_still_use_it(fake_app: AppFactory) -> None:
    app = fake_app(model_ref=BASE.path, mode="chat", has_template=lambda path: True)
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(pilot, lambda: app.model is not None, what="model loaded")
        assert app.model is not None and app.model.kind == "base"
        assert app.in_context_chat  # in-context first, even with a template
        await pilot.press("ctrl+t")
        await wait_until(pilot, lambda: not app.in_context_chat)
        assert app.mode == "chat"
        assert "chat template it was never trained on" in screen_text(app)
        await ask(app, pilot, "Hi")
        assert engine_of(app).requests[-1][0] == "chat"
        await pilot.press("ctrl+t")
        await wait_until(pilot, lambda: app.mode == "completion")


async def test_a_code_block_in_the_answer_survives(fake_app: AppFactory) -> None:
    script = ("Use", ":\n```", "python", "\nx = 1\n```", "\n```", "\n\n")
    app = fake_app(model_ref=BASE.path, mode="chat", completion_script=script)
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(pilot, lambda: app.model is not None, what="model loaded")
        await ask(app, pilot, "Show me code")
        assert app.main.chat.turns[1].content == "Use:\n```python\nx = 1\n```"
        assert "x = 1" in screen_text(app)


async def test_the_users_examples_file_is_used(fake_app: AppFactory) -> None:
    path = user_incontext_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        'preamble = "You are a terse oracle."\n'
        '[[example]]\nquery = "Sky colour?"\nanswer = "Blue."\n',
        encoding="utf-8",
    )
    app = fake_app(model_ref=BASE.path, mode="chat", completion_script=ANSWER_SCRIPT)
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(pilot, lambda: app.model is not None, what="model loaded")
        assert "from your incontext.toml" in screen_text(app)
        await ask(app, pilot, "What is 2+2?")
        (prompt,) = prompts(app)
        assert prompt.startswith("You are a terse oracle.\n\n# Query:\n```\nSky colour?")
        assert bundled_incontext().preamble.strip() not in prompt


async def test_a_broken_examples_file_is_one_line_and_left_alone(fake_app: AppFactory) -> None:
    path = user_incontext_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    broken = b'preamble = "fine"\n[[example]]\nquery = "no answer here"\n'
    path.write_bytes(broken)
    app = fake_app(model_ref=BASE.path, mode="chat", completion_script=ANSWER_SCRIPT)
    async with app.run_test(size=SIZE, notifications=True) as pilot:
        await wait_until(pilot, lambda: app.model is not None, what="model loaded")
        await ask(app, pilot, "What is 2+2?")
        problems = [n for n in notifications(app) if "In-context examples file" in n]
        assert len(problems) == 1, notifications(app)  # once, not at every turn
        (problem,) = problems
        assert str(path) in problem and "answer" in problem and "bundled" in problem
        assert "\n" not in problem and "Traceback" not in problem
        assert app.main.chat.turns[1].content == "Four."  # the chat goes on
        (prompt,) = prompts(app)
        assert prompt.startswith(bundled_incontext().preamble.strip())
    assert path.read_bytes() == broken  # never rewritten


async def test_welcome_offers_in_context_chat_when_only_a_base_model_is_on_disk() -> None:
    engine = FakeEngine(completion_script=ANSWER_SCRIPT)
    app = track_notifications(
        make_app(lambda: engine, services=only_base_on_disk(), check_online=False)
    )
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(pilot, lambda: isinstance(app.screen, WelcomeScreen))
        await wait_until(
            pilot,
            lambda: "chat with the base model through in-context examples" in flat(app),
            what="the offer",
        )
        await wait_until(pilot, lambda: "Chat with base (in-context)" in screen_text(app))
        await pilot.press("c")
        await wait_until(pilot, lambda: app.model is not None, what="base model loaded")
        assert engine.loads == [BASE.path]
        assert app.mode == "chat" and app.in_context_chat
        await wait_until(pilot, lambda: "in-context chat mode" in screen_text(app))
        await ask(app, pilot, "What is 2+2?")
        assert app.main.chat.turns[1].content == "Four."


async def test_welcome_makes_no_offer_when_an_instruct_model_is_on_disk(
    fake_app: AppFactory,
) -> None:
    app = fake_app(model_ref=None)
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(pilot, lambda: isinstance(app.screen, WelcomeScreen))
        await wait_until(pilot, lambda: "Demo 270M IT" in screen_text(app), what="models listed")
        text = screen_text(app)
        assert "in-context" not in text


@pytest.mark.slow
@pytest.mark.timeout(300)
async def test_the_real_base_model_answers_in_context(gemma_base: Path) -> None:
    from localbvi.engine.local import LocalEngine

    settings = AppSettings(temperature=0.0, top_k=1, max_tokens=48, n_ctx=2048, n_threads=2)
    app = track_notifications(
        make_app(
            LocalEngine,
            model_ref=str(gemma_base),
            mode="chat",
            services=Services(),
            settings=settings,
            check_online=False,
        )
    )
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(pilot, lambda: app.model is not None, timeout=120, what="load")
        assert app.model is not None and app.model.kind == "base"
        await wait_until(pilot, lambda: "in-context chat mode" in screen_text(app))
        await pilot.press(*"What is 2+2?", "enter")
        chat = app.main.chat
        await wait_until(
            pilot, lambda: len(chat.turns) == 2 and not chat.generating, timeout=240, what="reply"
        )
        reply = chat.turns[1]
        assert reply.outcome == "done", notifications(app)
        assert reply.content.strip()
        assert "# Query" not in reply.content and "# Answer" not in reply.content
        assert not reply.content.rstrip().endswith("```")
        text = screen_text(app)
        assert "Base model · in-context examples" in text
        assert "in-context chat mode" in text
        assert "no chat template" not in text
