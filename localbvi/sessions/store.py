"""Sessions kept in SQLite: every chat, completion document and compare run, as it happens.

Each finished message is committed at once (its own transaction, `synchronous=FULL` in WAL
mode), so killing localbvi mid-reply loses only the reply being streamed; a reply the user
cancelled is saved with status "cancelled". One connection per store, guarded by a lock, so
the TUI's worker threads can share it.

Reading trusts nothing in the file: a row whose values have the wrong types (written by another
tool, or damaged) is skipped and counted, never a crash, and stored JSON never yields NaN.
"""

from __future__ import annotations

import builtins
import json
import math
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from localbvi.engine.types import DoneEvent
from localbvi.errors import SessionStoreError
from localbvi.paths import data_dir
from localbvi.sessions.migrations import migrate

__all__ = [
    "MessageRole",
    "MessageStatus",
    "SessionKind",
    "SessionListing",
    "SessionRecord",
    "SessionStore",
    "SessionSummary",
    "StoredMessage",
    "default_db_path",
]

SessionKind = Literal["chat", "completion", "compare"]
MessageStatus = Literal["complete", "cancelled", "error"]
MessageRole = Literal["system", "user", "assistant", "base", "incontext", "instruct"]
"""A compare run stores its prompt as "user" and the replies as "base", "instruct" and, when
shown, "incontext" (the base model through in-context examples). A chat stores the replies of
a base model answering through in-context examples as "incontext" too (per message: a chat can
switch to the model's own template midway), the other replies as "assistant"."""

_KINDS = ("chat", "completion", "compare")
_STATUSES = ("complete", "cancelled", "error")
_ROLES = ("system", "user", "assistant", "base", "incontext", "instruct")
_PREVIEW_CHARS = 80


def default_db_path() -> Path:
    """`sessions.db` in the user's data folder."""
    return data_dir() / "sessions.db"


def _one_line(text: str, limit: int = _PREVIEW_CHARS) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1].rstrip() + "…"


@dataclass(frozen=True)
class StoredMessage:
    """One saved message."""

    id: int
    role: str
    content: str
    status: MessageStatus
    stats: dict[str, Any]
    """What the engine reported (tokens, tokens/s, finish reason…), as `DoneEvent.to_json`."""
    created_at: float
    """Unix time."""
    superseded: bool = False
    """Replaced by "regenerate" or "edit last": kept for history, no longer in the chat."""


@dataclass(frozen=True)
class SessionRecord:
    """A whole session: enough to show it again, export it, or reopen it with its model."""

    id: int
    kind: SessionKind
    model: str
    mode: str
    title: str
    system: str
    document: str
    """The completion document (the text raw completion continues); "" for chats."""
    meta: dict[str, Any]
    created_at: float
    updated_at: float
    messages: tuple[StoredMessage, ...] = field(default=())
    skipped: int = 0
    """Messages left out because their row in the database is damaged."""

    @property
    def current(self) -> tuple[StoredMessage, ...]:
        """The messages still in the conversation (what the screen showed), oldest first."""
        return tuple(m for m in self.messages if not m.superseded)

    @property
    def display_title(self) -> str:
        """The title, else the start of the first user message or of the document."""
        if self.title:
            return self.title
        first = next((m.content for m in self.current if m.role == "user"), self.document)
        return _one_line(first) or f"untitled {self.kind}"

    @property
    def in_context(self) -> bool:
        """A chat whose replies came (at least partly) from a base model answering through
        in-context examples."""
        return self.kind == "chat" and any(m.role == "incontext" for m in self.current)


@dataclass(frozen=True)
class SessionSummary:
    """One row of the sessions list."""

    id: int
    kind: SessionKind
    model: str
    mode: str
    title: str
    preview: str
    """The first user message (or the document) on one line, shortened."""
    message_count: int
    """Messages still in the conversation (superseded ones not counted)."""
    created_at: float
    updated_at: float
    in_context: bool = False
    """A chat with replies from a base model through in-context examples."""

    @property
    def display_title(self) -> str:
        """The title, else the preview."""
        return self.title or self.preview or f"untitled {self.kind}"

    @property
    def display_kind(self) -> str:
        """The kind as lists show it (10 characters at most): "in-context" for a chat with a
        base model through in-context examples."""
        return "in-context" if self.in_context else self.kind

    def to_json(self) -> dict[str, Any]:
        """The summary as plain JSON values (for `localbvi sessions --json`)."""
        return {
            "id": self.id,
            "kind": self.kind,
            "model": self.model,
            "mode": self.mode,
            "in_context": self.in_context,
            "title": self.display_title,
            "messages": self.message_count,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
        }


@dataclass(frozen=True)
class SessionListing:
    """What `SessionStore.listing` found."""

    sessions: builtins.list[SessionSummary]
    skipped: int
    """Sessions left out because their row in the database is damaged."""


class _Damaged(Exception):
    """A row holds values of the wrong type (another tool wrote it, or the file is damaged)."""


_LATEST_TIME = 253402300799.0  # 9999-12-31: beyond it a timestamp cannot be shown as a date


def _text(value: object) -> str:
    if isinstance(value, str):
        return value
    raise _Damaged


def _one_of(value: object, allowed: tuple[str, ...]) -> Any:
    if isinstance(value, str) and value in allowed:
        return value
    raise _Damaged


def _time(value: object) -> float:
    if (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and math.isfinite(value)
        and 0 <= value <= _LATEST_TIME
    ):
        return float(value)
    raise _Damaged


def _count(value: object) -> int:
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    raise _Damaged


def _flag(value: object) -> bool:
    if value in (0, 1) and not isinstance(value, float):
        return bool(value)
    raise _Damaged


def _finite_float(text: str) -> float | None:
    value = float(text)
    return value if math.isfinite(value) else None


def _json_dict(value: object) -> dict[str, Any]:
    """A stored JSON object; anything else (or a damaged value) reads as {}.

    NaN, Infinity and numbers too large for a float read as None, so what comes out can
    always be written as strict JSON again.
    """
    if not isinstance(value, str | bytes):
        return {}
    try:
        parsed = json.loads(value, parse_constant=lambda _: None, parse_float=_finite_float)
    except (ValueError, RecursionError):
        return {}
    return parsed if isinstance(parsed, dict) else {}


def _translate(exc: sqlite3.Error, path: Path) -> SessionStoreError:
    """A message that says what to do, for the sqlite errors a user can actually hit."""
    text = str(exc)
    if "locked" in text or "busy" in text:
        return SessionStoreError(
            f"the sessions database {path} is busy (another localbvi is writing to it): "
            "try again in a moment"
        )
    if "not a database" in text or "malformed" in text or "corrupt" in text:
        return SessionStoreError(
            f"{path} is damaged or is not a sessions database ({text}): move it aside and "
            "localbvi starts a new one"
        )
    if "full" in text:
        return SessionStoreError(
            f"no space left to save the session in {path}: free some disk space"
        )
    if "readonly" in text or "unable to open" in text or "permission" in text.lower():
        return SessionStoreError(
            f"cannot write the sessions database {path} ({text}): check the folder's "
            "permissions or set LOCALBVI_DATA_DIR to a writable folder"
        )
    return SessionStoreError(f"the sessions database {path} failed: {text}")


class SessionStore:
    """The sessions database. Safe to share between threads; close it when done."""

    def __init__(self, path: Path | None = None, *, busy_timeout: float = 1.0) -> None:
        """Open (creating or upgrading) the database.

        `busy_timeout` is how long a write waits while another process holds the database
        before it fails as busy. Each write is one small transaction, so a second is ample
        for two localbvis sharing the file, and short enough that a database someone keeps
        locked costs a chat only a moment before it is reported as not saved.
        """
        self.path = path or default_db_path()
        self._lock = threading.RLock()
        self._conn: sqlite3.Connection | None = None
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise SessionStoreError(
                f"cannot create the folder for the sessions database {self.path.parent} "
                f"({exc.strerror or exc}): set LOCALBVI_DATA_DIR to a writable folder"
            ) from exc
        try:
            # Autocommit mode: every write below opens its own explicit transaction.
            self._conn = sqlite3.connect(
                self.path, isolation_level=None, check_same_thread=False, timeout=busy_timeout
            )
            conn = self._conn
            conn.execute("PRAGMA journal_mode = WAL")
            # FULL: a committed message survives a power cut too, not only a killed process;
            # messages are committed once each, so the fsync is cheap.
            conn.execute("PRAGMA synchronous = FULL")
            conn.execute("PRAGMA foreign_keys = ON")
            migrate(conn)
        except sqlite3.Error as exc:
            self.close()
            raise _translate(exc, self.path) from exc
        except BaseException:
            self.close()
            raise

    # --- plumbing ------------------------------------------------------------------------

    def __enter__(self) -> SessionStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the database (idempotent)."""
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    @contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            if self._conn is None:
                raise SessionStoreError("the sessions store is closed: open a new SessionStore")
            try:
                yield self._conn
            except sqlite3.Error as exc:
                raise _translate(exc, self.path) from exc

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One transaction: committed when the block ends, rolled back if it raises."""
        with self._read() as conn:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    @staticmethod
    def _missing(session_id: int) -> SessionStoreError:
        return SessionStoreError(
            f"there is no session {session_id}: `localbvi sessions` lists the saved ones"
        )

    # --- writing -------------------------------------------------------------------------

    def create(
        self,
        kind: SessionKind,
        model: str,
        mode: str,
        title: str = "",
        system: str = "",
        meta: Mapping[str, Any] | None = None,
    ) -> SessionRecord:
        """Start a session (saved at once, even before its first message)."""
        if kind not in _KINDS:
            raise SessionStoreError(f"unknown session kind {kind!r}: use one of {_KINDS}")
        now = time.time()
        meta_dict = dict(meta or {})
        with self._write() as conn:
            cur = conn.execute(
                "INSERT INTO sessions (kind, model, mode, title, system, document, meta,"
                " created_at, updated_at) VALUES (?, ?, ?, ?, ?, '', ?, ?, ?)",
                (kind, model, mode, title, system, json.dumps(meta_dict), now, now),
            )
            session_id = cur.lastrowid
        assert session_id is not None
        return SessionRecord(
            id=session_id,
            kind=kind,
            model=model,
            mode=mode,
            title=title,
            system=system,
            document="",
            meta=meta_dict,
            created_at=now,
            updated_at=now,
        )

    def add_message(
        self,
        session_id: int,
        role: MessageRole,
        content: str,
        *,
        status: MessageStatus = "complete",
        stats: Mapping[str, Any] | None = None,
    ) -> int:
        """Save one finished message (committed before this returns); returns its id."""
        if role not in _ROLES:
            raise SessionStoreError(f"unknown message role {role!r}: use one of {_ROLES}")
        if status not in _STATUSES:
            raise SessionStoreError(f"unknown message status {status!r}: use one of {_STATUSES}")
        now = time.time()
        with self._write() as conn:
            touched = conn.execute(
                "UPDATE sessions SET updated_at = ? WHERE id = ?", (now, session_id)
            ).rowcount
            if touched == 0:
                raise self._missing(session_id)
            cur = conn.execute(
                "INSERT INTO messages (session_id, role, content, status, stats, created_at)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (session_id, role, content, status, json.dumps(dict(stats or {})), now),
            )
            message_id = cur.lastrowid
        assert message_id is not None
        return message_id

    def add_reply(
        self, session_id: int, content: str, done: DoneEvent, role: MessageRole = "assistant"
    ) -> int:
        """Save a generated reply with the status and stats its `DoneEvent` implies.

        Finish reason "cancelled" saves it as cancelled, "error" as error (with the error in
        its stats), anything else as complete.
        """
        status: MessageStatus
        if done.finish_reason == "cancelled":
            status = "cancelled"
        elif done.finish_reason == "error":
            status = "error"
        else:
            status = "complete"
        stats = {k: v for k, v in done.to_json().items() if k != "type"}
        return self.add_message(session_id, role, content, status=status, stats=stats)

    def supersede(self, session_id: int, message_ids: Iterable[int]) -> int:
        """Mark messages as replaced ("regenerate", "edit last"); returns how many changed.

        They stay in the database for history but leave the conversation: exports hide them
        unless asked, and a reopened chat does not show them.
        """
        ids = sorted(set(message_ids))
        if not ids:
            return 0
        with self._write() as conn:
            touched = conn.execute(
                "UPDATE sessions SET updated_at = ? WHERE id = ?", (time.time(), session_id)
            ).rowcount
            if touched == 0:
                raise self._missing(session_id)
            changed = 0
            for start in range(0, len(ids), 500):  # SQLite's bound-parameter limit
                chunk = ids[start : start + 500]
                marks = ", ".join("?" * len(chunk))
                changed += conn.execute(
                    "UPDATE messages SET superseded = 1"
                    f" WHERE session_id = ? AND superseded = 0 AND id IN ({marks})",
                    (session_id, *chunk),
                ).rowcount
        return changed

    def update_document(self, session_id: int, text: str) -> None:
        """Replace a completion session's document (the whole text, prompt and output)."""
        self._update(session_id, "document", text)

    def set_title(self, session_id: int, title: str) -> None:
        """Rename a session ("" shows the first message instead)."""
        self._update(session_id, "title", title)

    def _update(self, session_id: int, column: Literal["document", "title"], value: str) -> None:
        with self._write() as conn:
            touched = conn.execute(
                f"UPDATE sessions SET {column} = ?, updated_at = ? WHERE id = ?",
                (value, time.time(), session_id),
            ).rowcount
            if touched == 0:
                raise self._missing(session_id)

    def delete(self, session_id: int) -> None:
        """Delete a session and its messages for good."""
        with self._write() as conn:
            if conn.execute("DELETE FROM sessions WHERE id = ?", (session_id,)).rowcount == 0:
                raise self._missing(session_id)

    # --- reading -------------------------------------------------------------------------

    def get(self, session_id: int) -> SessionRecord:
        """A session with all its messages, oldest first."""
        with self._read() as conn:
            row = conn.execute(
                "SELECT id, kind, model, mode, title, system, document, meta, created_at,"
                " updated_at FROM sessions WHERE id = ?",
                (session_id,),
            ).fetchone()
            if row is None:
                raise self._missing(session_id)
            rows = conn.execute(
                "SELECT id, role, content, status, stats, created_at, superseded FROM messages"
                " WHERE session_id = ? ORDER BY id",
                (session_id,),
            ).fetchall()
        messages: builtins.list[StoredMessage] = []
        for r in rows:
            with suppress(_Damaged):
                messages.append(_message(r))
        try:
            return SessionRecord(
                id=row[0],
                kind=_one_of(row[1], _KINDS),
                model=_text(row[2]),
                mode=_text(row[3]),
                title=_text(row[4]),
                system=_text(row[5]),
                document=_text(row[6]),
                meta=_json_dict(row[7]),
                created_at=_time(row[8]),
                updated_at=_time(row[9]),
                messages=tuple(messages),
                skipped=len(rows) - len(messages),
            )
        except _Damaged:
            raise SessionStoreError(
                f"session {session_id} is damaged in {self.path} (its values have the wrong "
                "types): it cannot be shown; `localbvi sessions` lists the others"
            ) from None

    def list(self, search: str | None = None, limit: int = 200) -> builtins.list[SessionSummary]:
        """Sessions, most recently active first (damaged ones left out).

        `search` keeps sessions that contain every word of it (case-insensitive for ASCII)
        somewhere: title, model, system prompt, document or any message.
        """
        return self.listing(search, limit).sessions

    def listing(self, search: str | None = None, limit: int = 200) -> SessionListing:
        """Like `list`, also counting the sessions left out because their row is damaged."""
        where: builtins.list[str] = []
        params: builtins.list[object] = []
        for word in (search or "").split():
            pattern = "%" + word.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            pattern += "%"
            where.append(
                "(s.title LIKE ? ESCAPE '\\' OR s.model LIKE ? ESCAPE '\\'"
                " OR s.system LIKE ? ESCAPE '\\' OR s.document LIKE ? ESCAPE '\\'"
                " OR EXISTS (SELECT 1 FROM messages m WHERE m.session_id = s.id"
                " AND m.content LIKE ? ESCAPE '\\'))"
            )
            params += [pattern] * 5
        sql = (
            "SELECT s.id, s.kind, s.model, s.mode, s.title, s.created_at, s.updated_at,"
            " (SELECT COUNT(*) FROM messages m WHERE m.session_id = s.id AND m.superseded = 0),"
            " COALESCE((SELECT substr(m.content, 1, 400) FROM messages m"
            "   WHERE m.session_id = s.id AND m.role = 'user' AND m.superseded = 0"
            "   ORDER BY m.id LIMIT 1),"
            "  substr(s.document, 1, 400)),"
            " s.kind = 'chat' AND EXISTS (SELECT 1 FROM messages m WHERE m.session_id = s.id"
            "   AND m.role = 'incontext' AND m.superseded = 0)"
            " FROM sessions s"
            + (" WHERE " + " AND ".join(where) if where else "")
            + " ORDER BY s.updated_at DESC, s.id DESC LIMIT ?"
        )
        params.append(max(0, limit))
        with self._read() as conn:
            rows = conn.execute(sql, params).fetchall()
        sessions: builtins.list[SessionSummary] = []
        for r in rows:
            with suppress(_Damaged):
                sessions.append(_summary(r))
        return SessionListing(sessions, skipped=len(rows) - len(sessions))


def _summary(r: tuple[Any, ...]) -> SessionSummary:
    """One row of the list query; _Damaged when its values have the wrong types."""
    return SessionSummary(
        id=_count(r[0]),
        kind=_one_of(r[1], _KINDS),
        model=_text(r[2]),
        mode=_text(r[3]),
        title=_text(r[4]),
        created_at=_time(r[5]),
        updated_at=_time(r[6]),
        message_count=_count(r[7]),
        # The preview comes from a message: a damaged one just leaves it blank.
        preview=_one_line(r[8]) if isinstance(r[8], str) else "",
        in_context=bool(r[9]),
    )


def _message(r: tuple[Any, ...]) -> StoredMessage:
    return StoredMessage(
        id=_count(r[0]),
        role=_one_of(r[1], _ROLES),
        content=_text(r[2]),
        status=_one_of(r[3], _STATUSES),
        stats=_json_dict(r[4]),
        created_at=_time(r[5]),
        superseded=_flag(r[6]),
    )
