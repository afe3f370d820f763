"""A sessions database with rows of the wrong types (written by hand, another tool, damage).

Rows are inserted with the sqlite3 module directly, as anything else could; `localbvi
sessions` and `localbvi export` must skip what they cannot use, say so, and never crash.
"""

from __future__ import annotations

import json
import sqlite3
from typing import Any

import pytest

from localbvi.cli import main
from localbvi.sessions import SessionStore, default_db_path

ESC = "\x1b"


def _strict_json(text: str) -> Any:
    def refuse(constant: str) -> None:
        raise AssertionError(f"{constant} is not JSON")

    return json.loads(text, parse_constant=refuse)


def _seed_hostile() -> dict[str, int]:
    """Good sessions plus damaged ones; returns their ids by name."""
    with SessionStore() as store:
        good = store.create("chat", "gemma-3-270m-it", "chat", title="Good one")
        store.add_message(good.id, "user", "Why is the sky blue?")
        store.add_message(good.id, "assistant", "Rayleigh scattering.", stats={"tokens": 3})
        evil = store.create("completion", f"evil{ESC}]0;pwned\x07{ESC}[2Jmodel", "completion")
        store.update_document(evil.id, f"text {ESC}[31mred")
    conn = sqlite3.connect(default_db_path(), isolation_level=None)
    conn.execute("PRAGMA ignore_check_constraints = ON")

    def session(**values: object) -> int:
        row: dict[str, object] = {
            "kind": "chat",
            "model": "m",
            "mode": "chat",
            "title": "t",
            "system": "",
            "document": "",
            "meta": "{}",
            "created_at": 1.7e9,
            "updated_at": 1.7e9,
        }
        row.update(values)
        cur = conn.execute(
            f"INSERT INTO sessions ({', '.join(row)}) VALUES ({', '.join('?' * len(row))})",
            tuple(row.values()),
        )
        assert cur.lastrowid is not None
        return cur.lastrowid

    ids = {
        "good": good.id,
        "evil": evil.id,
        "text_time": session(created_at="yesterday"),
        "blob_model": session(model=b"\x00\xff"),
        "blob_title": session(title=b"title"),
        "infinite_time": session(updated_at=float("inf")),
        "unknown_kind": session(kind="robot"),
        "bad_meta": session(meta=b"\xff\xfe", title="bad meta is only ignored"),
    }
    # A good session whose messages are partly damaged, with non-finite numbers in its stats.
    mixed = session(title="Mixed", updated_at=1.8e9)
    ids["mixed"] = mixed
    for role, content, status, stats, created in [
        ("user", "Hello", "complete", "{}", 1.8e9),
        ("assistant", b"\x00blob", "complete", "{}", 1.8e9),
        ("robot", "who am I", "complete", "{}", 1.8e9),
        ("assistant", "late", "weird", "{}", 1.8e9),
        ("assistant", "when?", "complete", "{}", "tomorrow"),
        (
            "assistant",
            "Hi!",
            "complete",
            '{"tokens_per_s": NaN, "ttft_s": Infinity, "x": 1e999}',
            1.8e9,
        ),
    ]:
        conn.execute(
            "INSERT INTO messages (session_id, role, content, status, stats, created_at)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (mixed, role, content, status, stats, created),
        )
    conn.close()
    return ids


def test_store_skips_damaged_sessions_and_counts_them() -> None:
    ids = _seed_hostile()
    with SessionStore() as store:
        found = store.listing()
        assert {s.id for s in found.sessions} == {
            ids["good"],
            ids["evil"],
            ids["bad_meta"],
            ids["mixed"],
        }
        assert found.skipped == 5
        assert store.list() == found.sessions
        record = store.get(ids["mixed"])
        assert [m.content for m in record.messages] == ["Hello", "Hi!"]
        assert record.skipped == 4
        # Non-finite numbers read back as None, so they can be written as JSON again.
        assert record.messages[1].stats == {"tokens_per_s": None, "ttft_s": None, "x": None}
        assert store.get(ids["bad_meta"]).meta == {}


def test_sessions_command_lists_the_readable_ones_with_a_note(
    capsys: pytest.CaptureFixture[str],
) -> None:
    ids = _seed_hostile()
    assert main(["sessions"]) == 0
    captured = capsys.readouterr()
    assert ESC not in captured.out and "\x07" not in captured.out
    listed = [int(line.split()[0]) for line in captured.out.splitlines()[1:]]
    assert sorted(listed) == sorted([ids["good"], ids["evil"], ids["bad_meta"], ids["mixed"]])
    assert "evil]0;pwned" not in captured.out  # the whole OSC sequence is gone, not just ESC
    assert captured.err == (f"localbvi: note: 5 damaged sessions in {default_db_path()} left out\n")

    assert main(["sessions", "--json"]) == 0
    captured = capsys.readouterr()
    rows = _strict_json(captured.out)
    assert len(rows) == 4
    assert "5 damaged sessions" in captured.err


def test_export_skips_damaged_messages_and_writes_strict_json(
    capsys: pytest.CaptureFixture[str],
) -> None:
    ids = _seed_hostile()
    assert main(["export", str(ids["mixed"]), "--format", "json"]) == 0
    captured = capsys.readouterr()
    data = _strict_json(captured.out)
    assert [m["content"] for m in data["messages"]] == ["Hello", "Hi!"]
    assert data["messages"][1]["stats"]["tokens_per_s"] is None
    assert f"4 damaged messages of session {ids['mixed']}" in captured.err

    assert main(["export", str(ids["mixed"])]) == 0
    markdown = capsys.readouterr().out
    assert "## User\n\nHello" in markdown and "## Assistant\n\nHi!" in markdown
    assert "who am I" not in markdown


@pytest.mark.parametrize("name", ["text_time", "blob_model", "infinite_time", "unknown_kind"])
def test_export_of_a_damaged_session_is_one_readable_error(
    name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    ids = _seed_hostile()
    assert main(["export", str(ids[name])]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == (
        f"localbvi: error: session {ids[name]} is damaged in {default_db_path()} (its values "
        "have the wrong types): it cannot be shown; `localbvi sessions` lists the others\n"
    )
