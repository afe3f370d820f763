"""One turn of the chat transcript: plain text while it streams, Markdown once complete."""

from __future__ import annotations

from typing import ClassVar, Literal

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.widgets import Label, Markdown, Static

__all__ = ["ChatMessage"]

Outcome = Literal["done", "cancelled", "error"]

INCONTEXT_HEADING = "Base model · in-context examples"
"""The heading of a reply a base model wrote through in-context examples."""


class ChatMessage(Vertical, can_focus=True):
    """A user or assistant message; focus it and press c to copy it."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("c", "copy", "Copy message", id="message.copy"),
    ]

    def __init__(
        self,
        role: str,
        content: str = "",
        *,
        streaming: bool = False,
        outcome: Outcome | None = None,
        note: str = "",
        title: str = "",
        in_context: bool = False,
    ) -> None:
        """`outcome` and `note` show a finished reply at once (a reopened session); `title`
        replaces the role's heading (a base model answering through in-context examples).
        `in_context`: a reply of a base model through in-context examples, saved as such
        (role "incontext"), headed so unless `title` says otherwise."""
        super().__init__(classes=f"-{role}" + (f" -{outcome}" if outcome else ""))
        self.role = role
        self.content = content
        self.streaming = streaming
        self.outcome: Outcome | None = outcome
        self._note = note
        self.in_context = in_context
        self._title = title or (INCONTEXT_HEADING if in_context else "")

    def compose(self) -> ComposeResult:
        title = self._title or {"user": "You", "assistant": "Model", "system": "System"}.get(
            self.role, self.role
        )
        yield Label(title, classes="message-role")
        if self.outcome == "error":
            yield Static(Text(self._note or "error", style="bold red"), classes="message-body")
        elif self.streaming or self.role == "user" or self.outcome == "cancelled":
            yield Static(Text(self.content), classes="message-body")
        else:
            yield Markdown(self.content, classes="message-body")
        if self.outcome == "cancelled":
            yield Label("⊘ cancelled — partial reply", classes="message-note")

    def append(self, text: str) -> None:
        """Add streamed text; a plain Static re-renders cheaply at frame rate."""
        self.content += text
        self.query_one(".message-body", Static).update(Text(self.content))

    def finish(self, outcome: Outcome, note: str = "") -> None:
        """End the stream: Markdown for a complete reply, a visible mark when cut short."""
        self.streaming = False
        self.outcome = outcome
        self.add_class(f"-{outcome}")
        if outcome == "done" and self.content:
            body = self.query_one(".message-body")
            body.remove()
            self.mount(Markdown(self.content, classes="message-body"))
        elif outcome == "error":
            self.query_one(".message-body", Static).update(Text(note or "error", style="bold red"))
        if outcome == "cancelled":
            self.mount(Label("⊘ cancelled — partial reply", classes="message-note"))
        elif note and outcome != "error":
            self.mount(Label(note, classes="message-note"))

    def action_copy(self) -> None:
        self.app.copy_to_clipboard(self.content)
        self.notify("Message copied to the clipboard")
