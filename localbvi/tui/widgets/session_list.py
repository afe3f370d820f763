"""The saved sessions, one line each: when, kind, model, messages and the start of the text."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

from rich.text import Text
from textual.widgets import OptionList
from textual.widgets.option_list import Option

from localbvi.sessions import SessionSummary

__all__ = ["SessionList", "session_line"]

KIND_STYLE = {
    "chat": "bold black on cyan",
    "completion": "bold black on magenta",
    "compare": "bold black on yellow",
}


def when(ts: float, now: float | None = None) -> str:
    """A short, local time: "14:05" today, else "Mar 03 14:05"."""
    now = time.time() if now is None else now
    local, today = time.localtime(ts), time.localtime(now)
    if local[:3] == today[:3]:
        return time.strftime("%H:%M", local)
    return time.strftime("%b %d %H:%M", local)


def session_line(summary: SessionSummary) -> Text:
    model = summary.model
    # A path shows as its file name; a catalog id or server name as it is.
    model = Path(model).name if "/" in model and not model.startswith("http") else model
    return Text.assemble(
        (f"{when(summary.updated_at):>12} ", "dim"),
        (f" {summary.display_kind:^10} ", KIND_STYLE.get(summary.kind, "reverse")),
        " ",
        (f"{model[:24]:<24}", "bold"),
        (f"{summary.message_count:>4} msg  ", "dim"),
        summary.display_title,
        no_wrap=True,
        overflow="ellipsis",
    )


class SessionList(OptionList):
    """Sessions as the store lists them (most recent first)."""

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.sessions: list[SessionSummary] = []

    def set_sessions(self, sessions: Sequence[SessionSummary]) -> None:
        keep = self.selected_session()
        self.sessions = list(sessions)
        self.clear_options()
        self.add_options(Option(session_line(s)) for s in self.sessions)
        if self.sessions:
            ids = [s.id for s in self.sessions]
            self.highlighted = ids.index(keep.id) if keep and keep.id in ids else 0

    def selected_session(self) -> SessionSummary | None:
        index = self.highlighted
        if index is None or not 0 <= index < len(self.sessions):
            return None
        return self.sessions[index]
