"""Saved sessions: newest first, searched as you type; reopen, export or delete one."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar, cast

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Footer, Input, Label, OptionList

from localbvi.errors import LocalbviError
from localbvi.paths import data_dir
from localbvi.sessions import ExportFormat, SessionRecord, SessionSummary, render
from localbvi.tui.widgets.session_list import SessionList

if TYPE_CHECKING:
    from localbvi.tui.app import LocalbviApp

__all__ = ["SessionsScreen", "export_dir", "export_session"]


def export_dir() -> Path:
    """Where exports go: the current folder when it is writable, else data_dir()/exports."""
    cwd = Path.cwd()
    if os.access(cwd, os.W_OK):
        return cwd
    return data_dir() / "exports"


def export_session(
    record: SessionRecord,
    fmt: ExportFormat,
    folder: Path | None = None,
    *,
    include_superseded: bool = False,
) -> Path:
    """Write `record` as Markdown or JSON; returns the file. Raises LocalbviError.

    Like the chat on screen, messages replaced by regenerate or edit last are left out
    unless `include_superseded`.
    """
    folder = folder or export_dir()
    path = folder / f"localbvi-session-{record.id}.{fmt}"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        path.write_text(render(record, fmt, include_superseded=include_superseded), "utf-8")
    except OSError as exc:
        raise LocalbviError(f"cannot write {path} ({exc.strerror or exc})") from exc
    return path


class SessionsScreen(ModalScreen[None]):
    """Every saved chat, completion document and comparison."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "close", "Close", id="sessions.close"),
        Binding("enter", "reopen", "Reopen", id="sessions.reopen", priority=True),
        Binding("ctrl+d", "delete", "Delete", id="sessions.delete", priority=True),
        Binding("f2", "export('md')", "Export Markdown", id="sessions.export_md"),
        Binding("f3", "export('json')", "Export JSON", id="sessions.export_json"),
        Binding("f4", "export('md', True)", "Export all (with replaced)", id="sessions.export_all"),
        Binding("down", "move(1)", "Next", id="sessions.next", show=False, priority=True),
        Binding("up", "move(-1)", "Previous", id="sessions.previous", show=False, priority=True),
    ]

    def compose(self) -> ComposeResult:
        with Vertical(id="sessions-dialog", classes="dialog"):
            yield Label("Sessions", classes="dialog-title")
            yield Input(placeholder="Type to search every message and document…", id="search")
            yield SessionList(id="sessions")
            yield Label("Loading the sessions…", id="sessions-note", classes="dialog-note")
        yield Footer()

    @property
    def lapp(self) -> LocalbviApp:
        return cast("LocalbviApp", self.app)

    @property
    def session_list(self) -> SessionList:
        return self.query_one(SessionList)

    def on_mount(self) -> None:
        self.query_one("#search", Input).focus()
        self.refresh_list()

    def refresh_list(self) -> None:
        self._list(self.query_one("#search", Input).value)

    @work(thread=True, exclusive=True, group="sessions-list", exit_on_error=False)
    def _list(self, query: str) -> None:
        try:
            found = self.lapp.sessions.run(lambda store: store.listing(query)).result()
            rows, skipped, error = found.sessions, found.skipped, ""
        except Exception as exc:
            rows, skipped, error = [], 0, str(exc)
        self.app.call_from_thread(self._show, rows, query, error, skipped)

    def _show(self, rows: list[SessionSummary], query: str, error: str, skipped: int = 0) -> None:
        self.session_list.set_sessions(rows)
        if error:
            note = f"The sessions cannot be read: {error}"
        elif not rows:
            note = f"No session contains {query!r}" if query.strip() else "No saved sessions yet"
        else:
            note = (
                f"{len(rows)} session{'' if len(rows) == 1 else 's'}, newest first · "
                "Enter reopens · "
                "F2/F3 export (F4: with replaced replies) · ctrl+d deletes"
            )
        if skipped and not error:
            # Rows another tool wrote with wrong types (or a damaged file): said, never a crash.
            plural = "session" if skipped == 1 else "sessions"
            note = f"{skipped} damaged {plural} in the database left out · " + note
        self.query_one("#sessions-note", Label).update(note)

    @on(Input.Changed, "#search")
    def _search(self, event: Input.Changed) -> None:
        self._list(event.value)

    @on(OptionList.OptionSelected)
    def _selected(self, event: OptionList.OptionSelected) -> None:
        event.stop()
        self.action_reopen()

    def action_move(self, step: int) -> None:
        if step > 0:
            self.session_list.action_cursor_down()
        else:
            self.session_list.action_cursor_up()

    def action_close(self) -> None:
        self.dismiss(None)

    def _selected_or_say(self) -> SessionSummary | None:
        summary = self.session_list.selected_session()
        if summary is None:
            self.notify("No session selected")
        return summary

    def action_reopen(self) -> None:
        summary = self._selected_or_say()
        if summary is not None:
            self._reopen(summary.id)

    @work(thread=True, exclusive=True, group="sessions-get", exit_on_error=False)
    def _reopen(self, session_id: int) -> None:
        try:
            record = self.lapp.sessions.run(lambda store: store.get(session_id)).result()
        except Exception as exc:
            self.app.call_from_thread(self.notify, str(exc), severity="error")
            return
        self.app.call_from_thread(self._reopened, record)

    def _reopened(self, record: SessionRecord) -> None:
        self.dismiss(None)
        self.lapp.reopen_session(record)
        if record.skipped:
            plural = "message" if record.skipped == 1 else "messages"
            self.notify(
                f"{record.skipped} damaged {plural} of this session left out",
                title="Part of the session cannot be shown",
                severity="warning",
            )

    def action_delete(self) -> None:
        from localbvi.tui.screens.confirm import ConfirmScreen

        summary = self._selected_or_say()
        if summary is None:
            return

        def answered(yes: bool | None) -> None:
            if yes:
                self._delete(summary.id)

        question = f"Delete the {summary.kind} session “{summary.display_title}” for good?"
        self.app.push_screen(ConfirmScreen(question), answered)

    @work(thread=True, group="sessions-delete", exit_on_error=False)
    def _delete(self, session_id: int) -> None:
        try:
            self.lapp.sessions.run(lambda store: store.delete(session_id)).result()
        except Exception as exc:
            self.app.call_from_thread(self.notify, str(exc), severity="error")
            return
        self.app.call_from_thread(self.notify, "Session deleted")
        self.app.call_from_thread(self.refresh_list)

    def action_export(self, fmt: ExportFormat, include_superseded: bool = False) -> None:
        summary = self._selected_or_say()
        if summary is not None:
            self._export(summary.id, fmt, include_superseded)

    @work(thread=True, group="sessions-export", exit_on_error=False)
    def _export(self, session_id: int, fmt: ExportFormat, include_superseded: bool) -> None:
        try:
            record = self.lapp.sessions.run(lambda store: store.get(session_id)).result()
            path = export_session(record, fmt, include_superseded=include_superseded)
        except Exception as exc:
            self.app.call_from_thread(
                self.notify, str(exc), title="Export failed", severity="error"
            )
            return
        self.app.call_from_thread(self.notify, str(path), title="Session exported")
