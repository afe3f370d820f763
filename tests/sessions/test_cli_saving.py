"""`complete` and `chat` with a sessions database that cannot be written: the reply still comes.

Real processes and the real model. As root, file modes do not stop writes, so "read-only" is a
data folder under a regular file (nothing can be created there), and "locked" is another
connection holding the database with BEGIN EXCLUSIVE.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from localbvi.sessions import SessionStore, default_db_path

pytestmark = pytest.mark.slow


def cli(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "localbvi", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=180,
    )


def complete(model: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return cli("complete", "-m", str(model), "--temperature", "0", "--max-tokens", "4", *extra)


def saved_sessions() -> list[dict[str, object]]:
    proc = cli("sessions", "--json")
    assert proc.returncode == 0, proc.stderr
    rows: list[dict[str, object]] = json.loads(proc.stdout)
    return rows


@pytest.fixture
def locked_db() -> Iterator[Path]:
    """The sessions database, held by another connection for the whole test."""
    SessionStore().close()
    holder = sqlite3.connect(default_db_path(), isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        yield default_db_path()
    finally:
        holder.execute("ROLLBACK")
        holder.close()


def assert_reply_shown_not_saved_once(proc: subprocess.CompletedProcess[str], why: str) -> None:
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip(), "the reply was not shown"
    assert "tok/s" in proc.stderr
    assert proc.stderr.count("not saved") == 1, proc.stderr
    (line,) = [ln for ln in proc.stderr.splitlines() if "not saved" in ln]
    assert line.startswith("localbvi: warning: not saved: ") and why in line, line
    assert "Traceback" not in proc.stderr


def test_data_folder_that_cannot_be_created(
    gemma_base: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("LOCALBVI_DATA_DIR", str(blocker / "data"))
    proc = complete(gemma_base, "Once upon a time")
    assert_reply_shown_not_saved_once(proc, "LOCALBVI_DATA_DIR")


def test_damaged_database_file(gemma_base: Path) -> None:
    default_db_path().parent.mkdir(parents=True, exist_ok=True)
    default_db_path().write_bytes(b"this is not a database at all" * 100)
    proc = complete(gemma_base, "Once upon a time")
    assert_reply_shown_not_saved_once(proc, "damaged")


def test_locked_database(gemma_base: Path, locked_db: Path) -> None:
    started = time.monotonic()
    proc = complete(gemma_base, "Once upon a time")
    assert_reply_shown_not_saved_once(proc, "busy")
    # The lock costs the command about one busy timeout (1 s), not the 5 s default of sqlite3
    # users; generous bound for a loaded machine.
    assert time.monotonic() - started < 30


def test_locked_database_in_a_chat_is_reported_once(gemma_instruct: Path, locked_db: Path) -> None:
    proc = cli(
        "chat",
        "-m",
        str(gemma_instruct),
        "--temperature",
        "0",
        "--max-tokens",
        "3",
        stdin="Hello\nHow are you?\n/exit\n",
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.count("tok/s") == 2  # both replies came
    assert proc.stderr.count("not saved") == 1, proc.stderr


def test_once_the_lock_is_gone_sessions_are_saved_again(gemma_base: Path) -> None:
    SessionStore().close()
    holder = sqlite3.connect(default_db_path(), isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    assert "not saved" in complete(gemma_base, "Once upon a time").stderr
    holder.execute("ROLLBACK")
    holder.close()
    proc = complete(gemma_base, "Once upon a time")
    assert proc.returncode == 0 and "not saved" not in proc.stderr
    assert [s["title"] for s in saved_sessions()] == ["Once upon a time"]


def test_runs_that_fail_before_any_token_are_not_saved(
    gemma_base: Path, gemma_instruct: Path
) -> None:
    # A prompt longer than the context fails before the first token.
    proc = complete(gemma_base, "--ctx", "16", "word " * 64)
    assert proc.returncode == 1 and proc.stdout == ""
    assert proc.stderr.startswith("localbvi: error: ")
    # Chat on a model without a chat template fails before the first token too.
    proc = cli("chat", "-m", str(gemma_base), "Hello")
    assert proc.returncode == 1
    assert saved_sessions() == []
    # A run that produced text is saved, with its document.
    assert complete(gemma_base, "Once upon a time").returncode == 0
    (saved,) = saved_sessions()
    with SessionStore() as store:
        record = store.get(int(str(saved["id"])))
    assert record.document.startswith("Once upon a time") and len(record.document) > 16
    assert [m.role for m in record.messages] == ["assistant"]
    # A chat turn saves the user's message with the reply.
    assert cli("chat", "-m", str(gemma_instruct), "--max-tokens", "3", "Hi").returncode == 0
    newest = saved_sessions()[0]
    assert newest["title"] == "Hi" and newest["messages"] == 2
    assert os.path.exists(default_db_path())


def test_chat_in_context_is_saved_as_the_base_model_in_context(gemma_base: Path) -> None:
    proc = cli(
        "chat", "-m", str(gemma_base), "--in-context", "--temperature", "0",
        "--max-tokens", "8", "--ctx", "2048", "What is 2+2?",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    (row,) = saved_sessions()
    assert row["kind"] == "chat" and row["in_context"] is True
    export = cli("export", str(row["id"]), "--format", "json")
    assert export.returncode == 0, export.stderr
    messages = json.loads(export.stdout)["messages"]
    assert [m["role"] for m in messages] == ["user", "incontext"]
    assert messages[1]["content"] == proc.stdout.strip()
