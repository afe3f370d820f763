"""Chat mode with the FakeEngine: send, stream, cancel, regenerate, edit, copy."""

from __future__ import annotations

from localbvi.engine.fake import FakeEngine
from localbvi.tui import LocalbviApp
from tests.helpers import (
    INSTRUCT,
    SIZE,
    AppFactory,
    notifications,
    screen_text,
    wait_until,
)


def engine_of(app: LocalbviApp) -> FakeEngine:
    assert isinstance(app.engine, FakeEngine)
    return app.engine


async def test_enter_sends_and_reply_streams_then_renders_markdown(fake_app: AppFactory) -> None:
    app = fake_app(tokens_per_s=300)
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(pilot, lambda: app.model is not None, what="model loaded")
        assert app.mode == "chat"
        await pilot.press(*"What is 2+2?", "enter")
        await wait_until(pilot, lambda: "tok/s" in screen_text(app), what="reply finished")
        text = screen_text(app)
        assert "What is 2+2?" in text
        # Markdown once complete: the ** markers are gone.
        assert "Here is an answer from the fake instruct model." in text
        assert "**" not in text
        assert "Demo 270M IT" in text and "instruct" in text and "chat mode" in text
        assert "CPU" in text
        kind, messages = engine_of(app).requests[-1]
        assert kind == "chat"
        assert [m.content for m in messages] == ["What is 2+2?"]  # type: ignore[attr-defined]


async def test_tokens_arrive_before_the_reply_ends(fake_app: AppFactory) -> None:
    app = fake_app(tokens_per_s=40, stop_after_script=False)
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(pilot, lambda: app.model is not None)
        await pilot.press(*"hi", "enter")
        chat = app.main.chat
        await wait_until(pilot, lambda: len(chat.turns) == 2 and chat.turns[1].content != "")
        partial = chat.turns[1].content
        assert chat.generating
        assert "Sure" in screen_text(app)
        await wait_until(pilot, lambda: len(chat.turns[1].content) > len(partial))
        await pilot.press("escape")
        await wait_until(pilot, lambda: not chat.generating)


async def test_escape_cancels_and_keeps_partial_reply(fake_app: AppFactory) -> None:
    app = fake_app(tokens_per_s=50, stop_after_script=False)
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(pilot, lambda: app.model is not None)
        await pilot.press(*"tell me a long story", "enter")
        chat = app.main.chat
        await wait_until(pilot, lambda: len(chat.turns) == 2 and len(chat.turns[1].content) > 5)
        await pilot.press("escape")
        await wait_until(pilot, lambda: not chat.generating, what="cancel")
        reply = chat.turns[1]
        assert reply.outcome == "cancelled"
        assert reply.content
        assert "cancelled" in screen_text(app)
        # The prompt is usable again: a new message gets a reply.
        chat.prompt.focus()
        engine_of(app).stop_after_script = True
        await pilot.press(*"again", "enter")
        await wait_until(pilot, lambda: len(chat.turns) == 4 and not chat.generating)
        assert chat.turns[3].outcome == "done"
        # The cancelled partial reply is part of the history the model sees.
        _, messages = engine_of(app).requests[-1]
        assert [m.role for m in messages] == ["user", "assistant", "user"]  # type: ignore[attr-defined]


async def test_system_prompt_goes_first(fake_app: AppFactory) -> None:
    app = fake_app()
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(pilot, lambda: app.model is not None)
        await pilot.click("#system-prompt")
        await pilot.press(*"Be brief.", "enter")
        await pilot.press(*"Hello", "enter")
        await wait_until(
            pilot, lambda: not app.main.chat.generating and len(app.main.chat.turns) == 2
        )
        _, messages = engine_of(app).requests[-1]
        assert [(m.role, m.content) for m in messages] == [  # type: ignore[attr-defined]
            ("system", "Be brief."),
            ("user", "Hello"),
        ]


async def test_regenerate_replaces_last_reply(fake_app: AppFactory) -> None:
    app = fake_app()
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(pilot, lambda: app.model is not None)
        chat = app.main.chat
        await pilot.press(*"Hello", "enter")
        await wait_until(pilot, lambda: len(chat.turns) == 2 and not chat.generating)
        engine_of(app).chat_script = ("A", " different", " reply")
        await pilot.press("ctrl+r")
        await wait_until(pilot, lambda: chat.turns[-1].content == "A different reply")
        await wait_until(pilot, lambda: not chat.generating)
        assert [t.role for t in chat.turns] == ["user", "assistant"]
        assert "A different reply" in screen_text(app)
        assert len(engine_of(app).requests) == 2


async def test_edit_last_message_and_resend(fake_app: AppFactory) -> None:
    app = fake_app()
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(pilot, lambda: app.model is not None)
        chat = app.main.chat
        await pilot.press(*"Helo", "enter")
        await wait_until(pilot, lambda: len(chat.turns) == 2 and not chat.generating)
        await pilot.press("ctrl+e")
        assert chat.turns == []
        assert chat.prompt.value == "Helo"
        await pilot.press("end", "left", "l", "enter")
        await wait_until(pilot, lambda: len(chat.turns) == 2 and not chat.generating)
        assert chat.turns[0].content == "Hello"
        _, messages = engine_of(app).requests[-1]
        assert [m.content for m in messages] == ["Hello"]  # type: ignore[attr-defined]


async def test_copy_reply_and_a_focused_message(fake_app: AppFactory) -> None:
    app = fake_app()
    async with app.run_test(size=SIZE, notifications=True) as pilot:
        await wait_until(pilot, lambda: app.model is not None)
        chat = app.main.chat
        await pilot.press(*"Hello", "enter")
        await wait_until(pilot, lambda: len(chat.turns) == 2 and not chat.generating)
        await pilot.press("ctrl+y")
        assert app.clipboard == "Sure! Here is an answer from the **fake** instruct model."
        chat.turns[0].focus()
        await pilot.press("c")
        assert app.clipboard == "Hello"
        assert any("copied" in n for n in notifications(app))


async def test_without_a_model_sending_says_what_to_do(fake_app: AppFactory) -> None:
    app = fake_app(model_ref=None)
    async with app.run_test(size=SIZE, notifications=True) as pilot:
        await pilot.press("escape")  # leave the welcome screen
        await pilot.pause()
        app.main.chat.prompt.focus()
        await pilot.press(*"Hello", "enter")
        await pilot.pause()
        assert any("No model loaded" in n for n in notifications(app))
        assert "ctrl+o" in screen_text(app)


async def test_base_model_in_chat_mode_answers_through_in_context_examples(
    fake_app: AppFactory,
) -> None:
    # No longer a refusal ("no chat template"): tests/app/test_incontext_chat.py has the rest.
    app = fake_app(model_ref="/models/demo-270m-base.gguf", mode="chat")
    async with app.run_test(size=SIZE, notifications=True) as pilot:
        await wait_until(pilot, lambda: app.model is not None)
        assert app.model is not None and app.model.kind == "base"
        assert app.mode == "chat"
        await pilot.press(*"Hello", "enter")
        chat = app.main.chat
        await wait_until(pilot, lambda: not chat.generating and len(chat.turns) == 2)
        assert chat.turns[1].outcome == "done"
        assert engine_of(app).requests[-1][0] == "complete"
        assert "in-context chat mode" in screen_text(app)
        assert "no chat template" not in screen_text(app)


async def test_ctrl_q_quits(fake_app: AppFactory) -> None:
    app = fake_app(model_ref=INSTRUCT.path)
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(pilot, lambda: app.model is not None)
        await pilot.press("ctrl+q")
        await pilot.pause()
    assert app.return_code in (0, None)
    assert engine_of(app).info is None  # closed on exit
