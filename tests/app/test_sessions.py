"""Sessions in the app: saved as they happen, listed, searched, reopened, exported, deleted."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
from textual.widgets import Input, Label

from localbvi.cli import main
from localbvi.engine.fake import FakeEngine
from localbvi.engine.types import DoneEvent
from localbvi.sessions import SessionStore, default_db_path
from localbvi.tui import LocalbviApp
from localbvi.tui.screens.confirm import ConfirmScreen
from localbvi.tui.screens.sessions import SessionsScreen
from localbvi.tui.widgets.session_list import SessionList
from tests.helpers import BASE, INSTRUCT, SIZE, AppFactory, notifications, screen_text, wait_until


def saved(app: LocalbviApp) -> SessionStore:
    app.sessions.flush()
    return SessionStore()


async def test_a_chat_is_saved_as_it_goes(fake_app: AppFactory) -> None:
    app = fake_app()
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(pilot, lambda: app.model is not None)
        await pilot.press(*"What is 2+2?", "enter")
        chat = app.main.chat
        # The user message is committed before the reply ends.
        await wait_until(pilot, lambda: chat.session is not None and chat.session.id is not None)
        assert chat.session is not None and chat.session.id is not None
        with saved(app) as store:
            first = store.get(chat.session.id)
        assert [m.role for m in first.messages][:1] == ["user"]
        await wait_until(pilot, lambda: len(chat.turns) == 2 and not chat.generating)
        with saved(app) as store:
            record = store.get(chat.session.id)
        assert record.kind == "chat" and record.mode == "chat" and record.model == INSTRUCT.path
        assert [(m.role, m.status) for m in record.messages] == [
            ("user", "complete"),
            ("assistant", "complete"),
        ]
        assert record.messages[1].content == chat.turns[1].content
        assert record.messages[1].stats["tokens"] > 0


async def test_an_escape_cancelled_reply_is_saved_as_cancelled(fake_app: AppFactory) -> None:
    # Slow enough that escape catches the reply even on a loaded machine.
    app = fake_app(stop_after_script=False, tokens_per_s=20)
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(pilot, lambda: app.model is not None)
        await pilot.press(*"Hello", "enter")
        chat = app.main.chat
        await wait_until(pilot, lambda: len(chat.turns) == 2 and bool(chat.turns[1].content))
        await pilot.press("escape")
        await wait_until(pilot, lambda: not chat.generating)
        assert chat.session is not None
        with saved(app) as store:
            record = store.get(chat.session.id or 0)
        reply = record.messages[-1]
        assert reply.status == "cancelled" and reply.content == chat.turns[1].content


async def test_a_completion_document_is_updated_after_each_continuation(
    fake_app: AppFactory,
) -> None:
    app = fake_app(model_ref=BASE.path)
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(pilot, lambda: app.model is not None)
        view = app.main.completion
        requests = app.engine.requests  # type: ignore[attr-defined]
        for n in (1, 2):
            await pilot.press(*"Once", "ctrl+g")
            await wait_until(pilot, lambda: len(requests) == n and not view.generating)  # noqa: B023
        assert view.session is not None
        with saved(app) as store:
            record = store.get(view.session.id or 0)
        assert record.kind == "completion" and record.document == view.document.text
        assert record.document.count("Once") == 2


def seed_sessions() -> tuple[int, int]:
    """An older completion and a newer chat, saved the way the app saves them."""
    with SessionStore() as store:
        doc = store.create("completion", BASE.path or "", "completion")
        store.update_document(doc.id, "Once upon a time there was a dragon")
        chat = store.create("chat", INSTRUCT.path or "", "chat", system="Be brief.")
        store.add_message(chat.id, "user", "What is the capital of France?")
        store.add_reply(chat.id, "Paris.", DoneEvent("stop", tokens=2, tokens_per_s=10.0))
        store.add_reply(chat.id, "Part", DoneEvent("cancelled", tokens=1))
    return doc.id, chat.id


async def open_sessions(app: LocalbviApp, pilot: object, count: int) -> SessionList:
    await pilot.press("f8")  # type: ignore[attr-defined]
    await wait_until(pilot, lambda: isinstance(app.screen, SessionsScreen))  # type: ignore[arg-type]
    listing = app.screen.query_one(SessionList)
    await wait_until(pilot, lambda: len(listing.sessions) == count, what="sessions")  # type: ignore[arg-type]
    return listing


async def test_sessions_screen_lists_newest_first_and_searches(fake_app: AppFactory) -> None:
    doc_id, chat_id = seed_sessions()
    app = fake_app()
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(pilot, lambda: app.model is not None)
        listing = await open_sessions(app, pilot, 2)
        assert [s.id for s in listing.sessions] == [chat_id, doc_id]
        text = screen_text(app)
        assert text.index("What is the capital") < text.index("Once upon a time")
        await pilot.press(*"dragon")
        await wait_until(pilot, lambda: [s.id for s in listing.sessions] == [doc_id])
        assert "What is the capital" not in screen_text(app)
        app.screen.query_one("#search", Input).value = "zebra"
        await wait_until(pilot, lambda: "No session contains 'zebra'" in screen_text(app))


async def test_delete_asks_then_deletes(fake_app: AppFactory) -> None:
    doc_id, _chat_id = seed_sessions()
    app = fake_app()
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(pilot, lambda: app.model is not None)
        listing = await open_sessions(app, pilot, 2)
        await pilot.press("ctrl+d")
        await wait_until(pilot, lambda: isinstance(app.screen, ConfirmScreen))
        assert "Delete the chat session" in screen_text(app)
        await pilot.press("n")  # keep it
        await wait_until(pilot, lambda: isinstance(app.screen, SessionsScreen))
        assert len(listing.sessions) == 2
        await pilot.press("ctrl+d")
        await wait_until(pilot, lambda: isinstance(app.screen, ConfirmScreen))
        await pilot.press("y")
        await wait_until(pilot, lambda: [s.id for s in listing.sessions] == [doc_id])
        with SessionStore() as store:
            assert [s.id for s in store.list()] == [doc_id]


async def test_reopen_restores_messages_and_mode(fake_app: AppFactory) -> None:
    _doc_id, chat_id = seed_sessions()
    app = fake_app(model_ref=BASE.path)  # a base model in completion mode
    async with app.run_test(size=SIZE, notifications=True) as pilot:
        await wait_until(pilot, lambda: app.model is not None)
        assert app.mode == "completion"
        await open_sessions(app, pilot, 2)
        await pilot.press("enter")  # the chat, newest
        await wait_until(pilot, lambda: app.model is not None and app.model.ref == INSTRUCT.path)
        await wait_until(pilot, lambda: app.mode == "chat" and len(app.main.chat.turns) == 3)
        text = screen_text(app)
        assert "What is the capital of France?" in text and "Paris." in text
        assert "cancelled" in text
        # Chatting on adds to the same session.
        await pilot.press(*"And Spain?", "enter")
        chat = app.main.chat
        await wait_until(pilot, lambda: len(chat.turns) == 5 and not chat.generating)
        with saved(app) as store:
            record = store.get(chat_id)
        assert [m.content for m in record.messages][3] == "And Spain?"


async def test_reopen_with_a_missing_model_says_so_and_shows_the_text(
    fake_app: AppFactory,
) -> None:
    with SessionStore() as store:
        doc = store.create("completion", "/gone/model.gguf", "completion")
        store.update_document(doc.id, "The text survives")
    app = fake_app()
    async with app.run_test(size=SIZE, notifications=True) as pilot:
        await wait_until(pilot, lambda: app.model is not None)
        await open_sessions(app, pilot, 1)
        await pilot.press("enter")
        await wait_until(pilot, lambda: any("Could not load" in n for n in notifications(app)))
        assert any("session's text is shown" in n for n in notifications(app))
        assert app.mode == "completion"
        assert app.main.completion.document.text == "The text survives"
        assert "The text survives" in screen_text(app)


@pytest.mark.parametrize("fmt,key", [("md", "f2"), ("json", "f3")])
async def test_export_writes_the_file(
    fake_app: AppFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fmt: str, key: str
) -> None:
    monkeypatch.chdir(tmp_path)
    _doc_id, chat_id = seed_sessions()
    app = fake_app()
    async with app.run_test(size=SIZE, notifications=True) as pilot:
        await wait_until(pilot, lambda: app.model is not None)
        await open_sessions(app, pilot, 2)
        await pilot.press(key)
        path = tmp_path / f"localbvi-session-{chat_id}.{fmt}"
        await wait_until(pilot, lambda: any(str(path) in n for n in notifications(app)))
        text = path.read_text(encoding="utf-8")
        if fmt == "md":
            assert "What is the capital of France?" in text and "Assistant (cancelled)" in text
        else:
            assert json.loads(text)["messages"][1]["content"] == "Paris."


async def test_an_unwritable_database_notifies_once_and_the_chat_goes_on(
    fake_app: AppFactory, isolated_home: Path
) -> None:
    # A file where the data folder should be: the database cannot be created.
    data = isolated_home / "data"
    data.parent.mkdir(parents=True, exist_ok=True)
    data.write_text("not a folder")
    app = fake_app()
    async with app.run_test(size=SIZE, notifications=True) as pilot:
        await wait_until(pilot, lambda: app.model is not None)
        chat = app.main.chat
        for n, text in enumerate(("Hello", "Again"), start=1):
            await pilot.press(*text, "enter")
            await wait_until(pilot, lambda: len(chat.turns) == 2 * n and not chat.generating)  # noqa: B023
        app.sessions.flush()
        await pilot.pause()
        warnings = [n for n in notifications(app) if "Sessions are not saved" in n]
        assert len(warnings) == 1 and "LOCALBVI_DATA_DIR" in warnings[0]
        assert chat.turns[3].outcome == "done"


async def test_a_compare_run_is_saved_with_base_and_instruct_roles(fake_app: AppFactory) -> None:
    from localbvi.tui.screens.compare import CompareScreen

    app = fake_app()
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(pilot, lambda: app.model is not None)
        screen = CompareScreen(BASE, INSTRUCT, engine_factory=FakeEngine)
        await app.push_screen(screen)
        await wait_until(pilot, lambda: screen.engines is not None)
        screen.run_prompt("What is 2+2?")
        await wait_until(pilot, lambda: screen.session is not None and not screen.running)
        with saved(app) as store:
            record = store.get(screen.session.id or 0)  # type: ignore[union-attr]
        assert record.kind == "compare"
        assert [m.role for m in record.messages] == ["user", "base", "instruct"]
        assert record.messages[2].content == screen.runs["instruct"].text


async def test_after_regenerate_and_edit_last_the_saved_session_matches_the_screen(
    fake_app: AppFactory, tmp_path: Path
) -> None:
    def export(*flags: str) -> str:
        out = tmp_path / "export.txt"
        assert main(["export", str(session_id), "-o", str(out), *flags]) == 0
        return out.read_text(encoding="utf-8")

    app = fake_app(chat_script=("Blue", "."))
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(pilot, lambda: app.model is not None)
        chat = app.main.chat
        engine = app.engine
        assert isinstance(engine, FakeEngine)

        async def reply_count(n: int) -> None:
            await wait_until(
                pilot, lambda: len(engine.requests) == n and not chat.generating, what="reply"
            )

        await pilot.press(*"Name a colour", "enter")
        await reply_count(1)
        engine.chat_script = ("Green", ".")
        await pilot.press("ctrl+r")
        await reply_count(2)
        engine.chat_script = ("Red", ".")
        await pilot.press(*"Another?", "enter")
        await reply_count(3)
        await pilot.press("ctrl+e")
        await wait_until(pilot, lambda: chat.prompt.value == "Another?", what="edit last")
        engine.chat_script = ("Yellow", ".")
        await pilot.press(*["backspace"] * len("Another?"), *"One more?", "enter")
        await reply_count(4)

        on_screen = [(t.role, t.content) for t in chat.turns]
        assert on_screen == [
            ("user", "Name a colour"),
            ("assistant", "Green."),
            ("user", "One more?"),
            ("assistant", "Yellow."),
        ]
        text = screen_text(app)
        assert "Blue" not in text and "Red" not in text and "Another?" not in text
        assert chat.session is not None
        session_id = chat.session.id
        app.sessions.flush()

        # The export shows exactly the conversation on the screen…
        exported = json.loads(export("--format", "json"))["messages"]
        assert [(m["role"], m["content"]) for m in exported] == on_screen
        md = export()
        assert "Blue" not in md and "Another?" not in md and "superseded" not in md
        # …and --all keeps the history, marked.
        everything = json.loads(export("--all", "--format", "json"))["messages"]
        assert [(m["content"], m["superseded"]) for m in everything] == [
            ("Name a colour", False),
            ("Blue.", True),
            ("Green.", False),
            ("Another?", True),
            ("Red.", True),
            ("One more?", False),
            ("Yellow.", False),
        ]

        # Reopened, the chat shows what the screen showed; regenerating there supersedes too.
        await pilot.press("ctrl+n")
        await open_sessions(app, pilot, 1)
        await pilot.press("enter")
        await wait_until(pilot, lambda: len(chat.turns) == 4, what="the reopened chat")
        assert [(t.role, t.content) for t in chat.turns] == on_screen
        engine.chat_script = ("Purple", ".")
        await pilot.press("ctrl+r")
        await reply_count(5)
        app.sessions.flush()
        with SessionStore() as store:
            record = store.get(session_id or 0)
        assert [m.content for m in record.current] == [
            "Name a colour",
            "Green.",
            "One more?",
            "Purple.",
        ]
        assert [m.content for m in record.messages if m.superseded][-1] == "Yellow."


INCONTEXT_SCRIPT = ("Four", ".", "\n```", "\n\n")
"""A base model's answer in the in-context frame: the answer, then the closing fence."""
INCONTEXT_HEADING = "Base model · in-context examples"


def headings(app: LocalbviApp) -> list[str]:
    """The heading of each turn of the chat transcript, in order."""
    return [str(label.render()) for label in app.main.chat.query(".message-role")]


async def test_an_in_context_chat_is_saved_and_reopened_as_such(fake_app: AppFactory) -> None:
    # A base model chatting through in-context examples: its reply is saved as such.
    app = fake_app(model_ref=BASE.path, mode="chat", completion_script=INCONTEXT_SCRIPT)
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(pilot, lambda: app.model is not None, what="model loaded")
        await pilot.press(*"What is 2+2?", "enter")
        chat = app.main.chat
        await wait_until(pilot, lambda: len(chat.turns) == 2 and not chat.generating)
        assert headings(app) == ["You", INCONTEXT_HEADING]
        assert chat.session is not None
        session_id = chat.session.id
        with saved(app) as store:
            record = store.get(session_id or 0)
            (summary,) = store.list()
        assert [(m.role, m.content) for m in record.messages] == [
            ("user", "What is 2+2?"),
            ("incontext", "Four."),
        ]
        assert record.in_context and summary.in_context and summary.display_kind == "in-context"

    # Reopened from an app on the instruct model: the reply keeps its heading, not "Model".
    app = fake_app(model_ref=INSTRUCT.path, completion_script=INCONTEXT_SCRIPT)
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(pilot, lambda: app.model is not None)
        await open_sessions(app, pilot, 1)
        assert "in-context" in screen_text(app)  # the list's kind column
        await pilot.press("enter")
        chat = app.main.chat
        await wait_until(pilot, lambda: len(chat.turns) == 2, what="the reopened chat")
        assert headings(app) == ["You", INCONTEXT_HEADING]
        assert "Model" not in headings(app)
        assert chat.turns[1].content == "Four."
        # The session's model (the base one) is loaded again and chats on in context.
        await wait_until(pilot, lambda: app.model is not None and app.model.ref == BASE.path)
        await pilot.press(*"And 3+3?", "enter")
        await wait_until(pilot, lambda: len(chat.turns) == 4 and not chat.generating)
        assert headings(app) == ["You", INCONTEXT_HEADING, "You", INCONTEXT_HEADING]
        with saved(app) as store:
            roles = [m.role for m in store.get(session_id or 0).messages]
        assert roles == ["user", "incontext", "user", "incontext"]


async def test_sessions_screen_says_how_many_damaged_rows_it_left_out(
    fake_app: AppFactory,
) -> None:
    _doc_id, chat_id = seed_sessions()
    # Rows another tool wrote with values of the wrong types.
    conn = sqlite3.connect(default_db_path(), isolation_level=None)
    for model, created in ((b"\x00\xff", 1.7e9), ("m", "yesterday")):
        conn.execute(
            "INSERT INTO sessions (kind, model, mode, created_at, updated_at)"
            " VALUES ('chat', ?, 'chat', ?, 1.9e9)",
            (model, created),
        )
    conn.execute(  # and a message of the good chat
        "INSERT INTO messages (session_id, role, content, created_at) VALUES (?, 'robot', 'x', 1)",
        (chat_id,),
    )
    conn.close()
    app = fake_app()
    async with app.run_test(size=SIZE, notifications=True) as pilot:
        await wait_until(pilot, lambda: app.model is not None)
        listing = await open_sessions(app, pilot, 2)
        note = str(app.screen.query_one("#sessions-note", Label).render())
        assert note.startswith("2 damaged sessions in the database left out · 2 sessions")
        assert listing.sessions[0].id == chat_id
        # A search the damaged rows do not match has nothing to say about them.
        await pilot.press(*"capital")
        await wait_until(
            pilot,
            lambda: str(app.screen.query_one("#sessions-note", Label).render()).startswith(
                "1 session, newest first"
            ),
        )
        assert [s.id for s in listing.sessions] == [chat_id]
        # Reopened, the chat shows its readable messages and says one was left out.
        await pilot.press("enter")
        await wait_until(pilot, lambda: len(app.main.chat.turns) == 3, what="reopened chat")
        await wait_until(
            pilot, lambda: any("1 damaged message of this session" in n for n in notifications(app))
        )
