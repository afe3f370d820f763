"""Saving sessions from the app without ever holding up a chat.

Every write goes to one background thread, in order, so the UI never waits on SQLite (each
committed message is an fsync). A failing database (unwritable folder, damaged file) is
reported once through `on_error`; the chat goes on and later writes are tried again quietly.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

from localbvi.engine.types import DoneEvent
from localbvi.errors import LocalbviError
from localbvi.sessions import MessageRole, MessageStatus, SessionKind, SessionStore

__all__ = ["SavedMessage", "SessionHandle", "SessionLog"]

T = TypeVar("T")


@dataclass
class SessionHandle:
    """A session the app writes to; its database id arrives once the writer created it."""

    kind: SessionKind
    model: str
    mode: str
    system: str = ""
    meta: dict[str, Any] = field(default_factory=dict)
    id: int | None = None
    """Set by the writer thread (jobs run in order, so later jobs see it)."""


@dataclass
class SavedMessage:
    """A message the app queued for saving; its database id arrives once it is written."""

    id: int | None = None
    """Set by the writer thread; stays None when the write failed."""


class SessionLog:
    """The app's sessions store behind a single writer thread."""

    def __init__(
        self,
        on_error: Callable[[str], None],
        open_store: Callable[[], SessionStore] = SessionStore,
    ) -> None:
        self._on_error = on_error
        self._open_store = open_store
        self._store: SessionStore | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="localbvi-sessions")
        self._reported = False
        self._lock = threading.Lock()
        self.failures = 0
        """Writes that failed (tests and the status of a broken database)."""

    # -- the writer thread ------------------------------------------------------------------

    def store(self) -> SessionStore:
        """The open store (opened on first use). Call only from `run` jobs."""
        if self._store is None:
            self._store = self._open_store()
        return self._store

    def run(self, job: Callable[[SessionStore], T]) -> Future[T]:
        """Run `job(store)` on the writer thread, after every write queued before it."""
        return self._executor.submit(lambda: job(self.store()))

    def _write(self, job: Callable[[SessionStore], object]) -> None:
        def guarded() -> None:
            try:
                job(self.store())
            except (LocalbviError, OSError) as exc:
                self._failed(str(exc))
            except Exception as exc:  # a bug must not end the chat either
                self._failed(f"internal error: {type(exc).__name__}: {exc}")

        with contextlib.suppress(RuntimeError):  # shut down: the app is closing
            self._executor.submit(guarded)

    def _failed(self, error: str) -> None:
        with self._lock:
            self.failures += 1
            first = not self._reported
            self._reported = True
        if first:
            self._on_error(error)

    def flush(self, timeout: float = 10.0) -> None:
        """Wait until every write queued so far is done (tests, and before reading)."""
        self.run(lambda store: None).exception(timeout)

    def close(self) -> None:
        """Finish the queued writes and close the database."""

        def close_store() -> None:
            if self._store is not None:
                self._store.close()
                self._store = None

        try:
            self._executor.submit(close_store)
        except RuntimeError:
            return
        self._executor.shutdown(wait=True)

    # -- writes -----------------------------------------------------------------------------

    def _ensure(self, store: SessionStore, handle: SessionHandle) -> int:
        if handle.id is None:
            record = store.create(
                handle.kind, handle.model, handle.mode, system=handle.system, meta=handle.meta
            )
            handle.id = record.id
        return handle.id

    def add_message(
        self,
        handle: SessionHandle,
        role: MessageRole,
        content: str,
        status: MessageStatus = "complete",
    ) -> SavedMessage:
        """Save a finished message (the session is created with its first one)."""
        saved = SavedMessage()

        def job(store: SessionStore) -> None:
            saved.id = store.add_message(self._ensure(store, handle), role, content, status=status)

        self._write(job)
        return saved

    def add_reply(
        self, handle: SessionHandle, content: str, done: DoneEvent, role: MessageRole = "assistant"
    ) -> SavedMessage:
        """Save a generated reply; cancelled and failed replies are flagged from `done`."""
        saved = SavedMessage()

        def job(store: SessionStore) -> None:
            saved.id = store.add_reply(self._ensure(store, handle), content, done, role)

        self._write(job)
        return saved

    def supersede(self, handle: SessionHandle, messages: Sequence[SavedMessage]) -> None:
        """Mark saved messages as replaced (regenerate, edit last): kept, out of the chat."""

        def job(store: SessionStore) -> None:
            ids = [m.id for m in messages if m.id is not None]
            if handle.id is not None and ids:
                store.supersede(handle.id, ids)

        self._write(job)

    def update_document(self, handle: SessionHandle, text: str) -> None:
        """Save the whole text of a completion document."""
        self._write(lambda store: store.update_document(self._ensure(store, handle), text))

    def start(
        self,
        kind: SessionKind,
        model: str,
        mode: str,
        *,
        system: str = "",
        meta: Mapping[str, Any] | None = None,
    ) -> SessionHandle:
        """A new session; nothing is written until its first message or document."""
        return SessionHandle(kind, model, mode, system, dict(meta or {}))
