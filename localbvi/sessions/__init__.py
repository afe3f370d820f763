"""Saved sessions: every chat, completion document and compare run, in SQLite, and export.

Recording a chat from a command (the whole API a caller needs)::

    with SessionStore() as store:
        session = store.create("chat", model=ref, mode="chat", system=system_prompt)
        store.add_message(session.id, "user", prompt)
        ...stream the reply, collecting its text and the final DoneEvent...
        store.add_reply(session.id, reply_text, done)  # cancelled/error flagged from `done`
"""

from __future__ import annotations

from localbvi.sessions.export import EXPORT_FORMATS, ExportFormat, render, to_json, to_markdown
from localbvi.sessions.store import (
    MessageRole,
    MessageStatus,
    SessionKind,
    SessionListing,
    SessionRecord,
    SessionStore,
    SessionSummary,
    StoredMessage,
    default_db_path,
)

__all__ = [
    "EXPORT_FORMATS",
    "ExportFormat",
    "MessageRole",
    "MessageStatus",
    "SessionKind",
    "SessionListing",
    "SessionRecord",
    "SessionStore",
    "SessionSummary",
    "StoredMessage",
    "default_db_path",
    "render",
    "to_json",
    "to_markdown",
]
