"""`localbvi sessions` and `localbvi export`, run through the real entry point."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from localbvi.cli import main
from localbvi.sessions import SessionStore, default_db_path


def _seed() -> tuple[int, int]:
    with SessionStore() as store:
        a = store.create("chat", "gemma-3-270m-it", "chat")
        store.add_message(a.id, "user", "Why is the sky blue?")
        store.add_message(a.id, "assistant", "Rayleigh scattering.")
        b = store.create("completion", "gemma-3-270m", "completion", title="Story")
        store.update_document(b.id, "Once upon a time")
    return a.id, b.id


def test_sessions_with_nothing_saved_creates_no_database(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["sessions"]) == 0
    assert "no saved sessions yet" in capsys.readouterr().err
    assert main(["sessions", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == []
    assert not default_db_path().exists()


def test_sessions_table_lists_newest_first(capsys: pytest.CaptureFixture[str]) -> None:
    a, b = _seed()
    assert main(["sessions"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:3] == ["ID", "LAST", "ACTIVITY"]
    assert lines[1].split()[0] == str(b) and lines[1].endswith("Story")
    assert lines[2].split()[0] == str(a) and lines[2].endswith("Why is the sky blue?")


def test_sessions_json_and_search(capsys: pytest.CaptureFixture[str]) -> None:
    a, b = _seed()
    assert main(["sessions", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["id"] for r in rows] == [b, a]
    assert rows[1] == {
        "id": a,
        "kind": "chat",
        "model": "gemma-3-270m-it",
        "mode": "chat",
        "in_context": False,
        "title": "Why is the sky blue?",
        "messages": 2,
        "created_at": rows[1]["created_at"],
        "updated_at": rows[1]["updated_at"],
    }
    assert main(["sessions", "--json", "--search", "rayleigh"]) == 0
    assert [r["id"] for r in json.loads(capsys.readouterr().out)] == [a]
    assert main(["sessions", "--search", "nothing-like-this"]) == 0
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "no saved session contains 'nothing-like-this'" in captured.err


def test_export_markdown_to_stdout_and_json_to_a_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a, _ = _seed()
    assert main(["export", str(a)]) == 0
    assert "## User\n\nWhy is the sky blue?" in capsys.readouterr().out
    out = tmp_path / "chat.json"
    assert main(["export", str(a), "--format", "json", "-o", str(out)]) == 0
    assert f"wrote session {a} to {out}" in capsys.readouterr().err
    data = json.loads(out.read_text())
    assert data["messages"][1]["content"] == "Rayleigh scattering."


def test_export_errors_have_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["export", "1"]) == 1  # nothing saved yet
    assert "there is no session 1" in capsys.readouterr().err
    _seed()
    assert main(["export", "999"]) == 1
    assert "localbvi: error: there is no session 999" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(["export", "abc"])
    assert exc.value.code == 2
    with pytest.raises(SystemExit) as exc:
        main(["export", "1", "--format", "pdf"])
    assert exc.value.code == 2
    assert main(["export", "1", "-o", str(tmp_path / "no-such-dir" / "x.md")]) == 1
    assert "cannot write" in capsys.readouterr().err


def test_export_all_includes_the_replaced_replies_marked(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with SessionStore() as store:
        s = store.create("chat", "gemma-3-270m-it", "chat")
        store.add_message(s.id, "user", "Name a colour")
        store.supersede(s.id, [store.add_message(s.id, "assistant", "Blue.")])
        store.add_message(s.id, "assistant", "Green.")
    assert main(["export", str(s.id)]) == 0
    shown = capsys.readouterr().out
    assert "Green." in shown and "Blue." not in shown
    assert main(["export", str(s.id), "--all"]) == 0
    assert "## Assistant (superseded)\n\nBlue." in capsys.readouterr().out
    assert main(["export", str(s.id), "--all", "--format", "json"]) == 0
    messages = json.loads(capsys.readouterr().out)["messages"]
    assert [(m["content"], m["superseded"]) for m in messages] == [
        ("Name a colour", False),
        ("Blue.", True),
        ("Green.", False),
    ]
    assert main(["sessions", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["messages"] == 2


def test_an_in_context_chat_is_listed_and_exported_as_such(
    capsys: pytest.CaptureFixture[str],
) -> None:
    plain, _ = _seed()
    with SessionStore() as store:
        chat = store.create("chat", "gemma-3-270m", "chat")
        store.add_message(chat.id, "user", "What is 2+2?")
        store.add_message(chat.id, "incontext", "Four.")
    assert main(["sessions"]) == 0
    lines = capsys.readouterr().out.splitlines()
    kinds = {int(line.split()[0]): line.split()[3] for line in lines[1:]}
    assert kinds[chat.id] == "in-context" and kinds[plain] == "chat"
    assert main(["sessions", "--json"]) == 0
    rows = {r["id"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows[chat.id]["in_context"] is True and rows[plain]["in_context"] is False
    assert main(["export", str(chat.id)]) == 0
    md = capsys.readouterr().out
    assert "- **Mode:** chat (a base model answering through in-context examples" in md
    assert "## Base model · in-context examples\n\nFour." in md
    assert main(["export", str(plain)]) == 0
    assert "in-context" not in capsys.readouterr().out
    assert main(["export", str(chat.id), "--format", "json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["in_context"] is True and data["messages"][1]["role"] == "incontext"
