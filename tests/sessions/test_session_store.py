"""The sessions store: what the app's sessions list and the CLI get back."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from localbvi.engine.types import DoneEvent
from localbvi.errors import SessionStoreError
from localbvi.sessions import SessionStore, default_db_path
from localbvi.sessions.migrations import MIGRATIONS, SCHEMA_VERSION, migrate, schema_version


@pytest.fixture
def store() -> Iterator[SessionStore]:
    s = SessionStore()
    yield s
    s.close()


def test_default_location_is_the_data_dir(isolated_home: Path) -> None:
    with SessionStore() as s:
        assert s.path == default_db_path() == isolated_home / "data" / "sessions.db"
    assert (isolated_home / "data" / "sessions.db").is_file()


def test_create_add_and_get_a_chat(store: SessionStore) -> None:
    created = store.create("chat", "gemma-3-270m-it", "chat", system="Be helpful.", meta={"n": 1})
    store.add_message(created.id, "user", "What is 2+2?")
    store.add_message(created.id, "assistant", "4", stats={"tokens": 1, "tokens_per_s": 50.0})
    record = store.get(created.id)
    assert (record.kind, record.model, record.mode, record.system) == (
        "chat",
        "gemma-3-270m-it",
        "chat",
        "Be helpful.",
    )
    assert record.meta == {"n": 1}
    assert [(m.role, m.content, m.status) for m in record.messages] == [
        ("user", "What is 2+2?", "complete"),
        ("assistant", "4", "complete"),
    ]
    assert record.messages[1].stats == {"tokens": 1, "tokens_per_s": 50.0}
    assert record.display_title == "What is 2+2?"


def test_cancelled_partial_reply_is_saved_flagged(store: SessionStore) -> None:
    s = store.create("chat", "m", "chat")
    store.add_message(s.id, "user", "Tell me a story")
    store.add_message(s.id, "assistant", "Once upon a", status="cancelled")
    reply = store.get(s.id).messages[-1]
    assert (reply.content, reply.status) == ("Once upon a", "cancelled")


def test_add_reply_takes_status_and_stats_from_the_done_event(store: SessionStore) -> None:
    s = store.create("chat", "m", "chat")
    store.add_reply(s.id, "Once", DoneEvent("cancelled", tokens=1, stop_detail="cancelled"))
    store.add_reply(s.id, "", DoneEvent("error", error="the model crashed"))
    store.add_reply(s.id, "Four.", DoneEvent("stop", tokens=2, ttft_s=0.1, tokens_per_s=40.0))
    messages = store.get(s.id).messages
    assert [m.status for m in messages] == ["cancelled", "error", "complete"]
    assert messages[1].stats["error"] == "the model crashed"
    assert messages[2].stats["tokens"] == 2
    assert messages[2].stats["finish_reason"] == "stop"


def test_completion_document_is_updated_in_place(store: SessionStore) -> None:
    s = store.create("completion", "gemma-3-270m", "completion")
    store.update_document(s.id, "What is 2+2?")
    store.update_document(s.id, "What is 2+2?\n\nWhat is 2+2?")
    record = store.get(s.id)
    assert record.document == "What is 2+2?\n\nWhat is 2+2?"
    assert record.display_title == "What is 2+2? What is 2+2?"
    assert store.list()[0].preview == "What is 2+2? What is 2+2?"


def test_list_is_newest_activity_first_with_counts(store: SessionStore) -> None:
    a = store.create("chat", "m1", "chat", title="first")
    b = store.create("completion", "m2", "completion", title="second")
    c = store.create("compare", "m1|m2", "compare", title="third")
    assert [s.id for s in store.list()] == [c.id, b.id, a.id]
    store.add_message(a.id, "user", "hello again")  # activity moves it to the top
    rows = store.list()
    assert [s.id for s in rows] == [a.id, c.id, b.id]
    assert rows[0].message_count == 1
    assert rows[0].display_title == "first"
    assert len(store.list(limit=2)) == 2


def test_search_finds_text_anywhere_case_insensitively(store: SessionStore) -> None:
    a = store.create("chat", "gemma", "chat")
    store.add_message(a.id, "user", "Why is the sky blue?")
    b = store.create("completion", "gemma", "completion")
    store.update_document(b.id, "Once upon a time in a BLUE house")
    c = store.create("chat", "qwen", "chat", title="Shopping list")
    store.add_message(c.id, "user", "eggs, milk")
    assert {s.id for s in store.list(search="blue")} == {a.id, b.id}
    assert [s.id for s in store.list(search="sky blue")] == [a.id]  # every word must match
    assert [s.id for s in store.list(search="shopping")] == [c.id]
    assert [s.id for s in store.list(search="qwen")] == [c.id]
    assert store.list(search="100%") == []  # LIKE wildcards are literal
    assert store.list(search="   ") == store.list()


def test_compare_run_keeps_both_replies(store: SessionStore) -> None:
    s = store.create("compare", "base|instruct", "compare", meta={"base": "b", "instruct": "i"})
    store.add_message(s.id, "user", "What is 2+2?")
    store.add_message(s.id, "base", "\n\nWhat is 2+2?")
    store.add_message(s.id, "instruct", "4")
    assert [m.role for m in store.get(s.id).messages] == ["user", "base", "instruct"]


def test_delete_removes_the_session_and_its_messages(store: SessionStore) -> None:
    s = store.create("chat", "m", "chat")
    store.add_message(s.id, "user", "bye")
    store.delete(s.id)
    assert store.list() == []
    with pytest.raises(SessionStoreError, match=f"there is no session {s.id}"):
        store.get(s.id)
    with pytest.raises(SessionStoreError, match="localbvi sessions"):
        store.delete(s.id)
    raw = sqlite3.connect(store.path)
    assert raw.execute("SELECT COUNT(*) FROM messages").fetchone() == (0,)
    raw.close()


def test_unknown_session_and_bad_values_are_refused(store: SessionStore) -> None:
    with pytest.raises(SessionStoreError, match="there is no session 42"):
        store.add_message(42, "user", "hi")
    with pytest.raises(SessionStoreError, match="there is no session 42"):
        store.update_document(42, "x")
    s = store.create("chat", "m", "chat")
    with pytest.raises(SessionStoreError, match="unknown message status"):
        store.add_message(s.id, "user", "hi", status="done")  # type: ignore[arg-type]
    with pytest.raises(SessionStoreError, match="unknown session kind"):
        store.create("notes", "m", "chat")  # type: ignore[arg-type]


def test_title_can_be_set(store: SessionStore) -> None:
    s = store.create("chat", "m", "chat")
    store.set_title(s.id, "Renamed")
    assert store.get(s.id).title == "Renamed"
    assert store.list()[0].display_title == "Renamed"


def test_wal_mode_and_schema_version(store: SessionStore) -> None:
    raw = sqlite3.connect(store.path)
    assert raw.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    assert raw.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)
    raw.close()


def test_migrations_from_an_empty_db_and_reopening_is_idempotent(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    raw = sqlite3.connect(db, isolation_level=None)
    assert migrate(raw) == 0
    assert schema_version(raw) == SCHEMA_VERSION == len(MIGRATIONS)
    assert migrate(raw) == SCHEMA_VERSION  # nothing left to run
    raw.close()
    with SessionStore(db) as s:
        sid = s.create("chat", "m", "chat").id
    with SessionStore(db) as s:  # reopening runs no migration and keeps the data
        assert [r.id for r in s.list()] == [sid]


def test_a_newer_schema_is_refused_with_advice(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    raw = sqlite3.connect(db)
    raw.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    raw.close()
    with pytest.raises(SessionStoreError, match="newer than this localbvi"):
        SessionStore(db)


def test_a_file_that_is_not_a_database_says_to_move_it_aside(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    db.write_bytes(b"this is not sqlite at all" * 100)
    with pytest.raises(SessionStoreError, match="move it aside"):
        SessionStore(db)


def test_closed_store_says_so(tmp_path: Path) -> None:
    s = SessionStore(tmp_path / "s.db")
    s.close()
    s.close()  # idempotent
    with pytest.raises(SessionStoreError, match="closed"):
        s.list()


def test_threads_can_share_one_store(store: SessionStore) -> None:
    s = store.create("chat", "m", "chat")

    def write(k: int) -> None:
        for i in range(20):
            store.add_message(s.id, "user", f"{k}-{i}")

    threads = [threading.Thread(target=write, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(store.get(s.id).messages) == 80


def test_two_stores_on_one_file_see_each_other(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    with SessionStore(db) as app, SessionStore(db) as cli:
        s = cli.create("chat", "m", "chat")
        cli.add_message(s.id, "user", "from the CLI")
        assert app.get(s.id).messages[0].content == "from the CLI"


def test_superseded_messages_are_kept_for_history_but_leave_the_conversation(
    store: SessionStore,
) -> None:
    s = store.create("chat", "m", "chat")
    question = store.add_message(s.id, "user", "Name a colour")
    first = store.add_message(s.id, "assistant", "Blue.")
    assert store.supersede(s.id, [first]) == 1
    assert store.supersede(s.id, [first]) == 0  # already superseded
    store.add_message(s.id, "assistant", "Green.")
    record = store.get(s.id)
    assert [(m.content, m.superseded) for m in record.messages] == [
        ("Name a colour", False),
        ("Blue.", True),
        ("Green.", False),
    ]
    assert [m.content for m in record.current] == ["Name a colour", "Green."]
    assert store.list()[0].message_count == 2
    # Search still finds history.
    assert [r.id for r in store.list("blue")] == [s.id]
    assert store.list()[0].display_title == "Name a colour"
    # Superseding the question too (edit last): no title comes from replaced text.
    store.supersede(s.id, [question])
    assert store.get(s.id).display_title == "untitled chat"
    assert store.list()[0].display_title == "untitled chat"
    with pytest.raises(SessionStoreError, match="no session 999"):
        store.supersede(999, [first])


def test_a_version_1_database_migrates_and_keeps_its_messages(tmp_path: Path) -> None:
    """A sessions.db written before superseded messages existed opens and reads as before."""
    db = tmp_path / "old.db"
    raw = sqlite3.connect(db, isolation_level=None)
    for statement in MIGRATIONS[0]:
        raw.execute(statement)
    raw.execute("PRAGMA user_version = 1")
    raw.execute(
        "INSERT INTO sessions (kind, model, mode, created_at, updated_at)"
        " VALUES ('chat', 'old-model', 'chat', 1.0, 2.0)"
    )
    raw.execute(
        "INSERT INTO messages (session_id, role, content, created_at) VALUES"
        " (1, 'user', 'Hi', 1.0), (1, 'assistant', 'Hello!', 2.0)"
    )
    raw.close()
    with SessionStore(db) as s:
        record = s.get(1)
        assert [(m.content, m.superseded) for m in record.messages] == [
            ("Hi", False),
            ("Hello!", False),
        ]
        assert s.list()[0].message_count == 2
        assert s.supersede(1, [record.messages[1].id]) == 1
    raw = sqlite3.connect(db)
    assert raw.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)
    raw.close()


def test_the_schema_refuses_a_superseded_flag_other_than_0_or_1(store: SessionStore) -> None:
    s = store.create("chat", "m", "chat")
    store.add_message(s.id, "user", "Hi")
    raw = sqlite3.connect(store.path)
    with pytest.raises(sqlite3.IntegrityError):
        raw.execute("UPDATE messages SET superseded = 7")
    raw.close()
    assert [m.superseded for m in store.get(s.id).messages] == [False]
