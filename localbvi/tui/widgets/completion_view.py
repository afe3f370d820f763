"""Completion mode: a document the user writes; the model's continuation streams into it."""

from __future__ import annotations

from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.widgets import Label

from localbvi.engine.types import DoneEvent
from localbvi.sessions import SessionRecord
from localbvi.tui.session_log import SessionHandle
from localbvi.tui.widgets.completion_document import CompletionDocument
from localbvi.tui.widgets.streaming_view import StreamingView

__all__ = ["CompletionView"]

HINT = (
    "Write the start of a document; ctrl+g lets the model continue it from the end. "
    "Its text shows in italics; edit anything, then continue again."
)


class CompletionView(StreamingView):
    """Raw completion: the document text goes to the model as is, no chat template."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("ctrl+g", "generate", "Continue", id="completion.generate"),
        Binding("escape", "cancel", "Stop", id="completion.cancel"),
        Binding("ctrl+n", "clear", "New document", id="completion.clear"),
    ]

    session: SessionHandle | None = None
    """Where this document is saved (a new one after ctrl+n); created at its first run."""

    def compose(self) -> ComposeResult:
        yield Label(HINT, id="completion-hint")
        yield CompletionDocument(id="document")

    @property
    def document(self) -> CompletionDocument:
        return self.query_one(CompletionDocument)

    def action_generate(self) -> None:
        if self.generating:
            self.notify("The model is still writing: press Escape to stop it")
            return
        document = self.document
        prompt = document.text
        if not prompt.strip():
            self.notify("Write the start of a document first")
            return
        if not self.lapp.ready_for_generation():
            return
        document.read_only = True
        document.move_cursor(document.document.end)
        engine = self.lapp.engine
        sampling = self.lapp.settings.to_sampling()
        self.start_generation(lambda: engine.complete(prompt, sampling))

    def on_stream_text(self, text: str) -> None:
        self.document.append_generated(text)

    def on_stream_done(self, done: DoneEvent) -> None:
        document = self.document
        document.read_only = False
        self.lapp.sessions.update_document(self._session(), document.text)
        if done.finish_reason == "error":
            self.notify(done.error, title="The model could not continue", severity="error")
        elif done.finish_reason == "cancelled":
            self.notify(f"Stopped after {done.tokens} tokens")
        document.focus()

    def action_cancel(self) -> None:
        if not self.cancel_generation():
            self.screen.set_focus(None)

    def _session(self) -> SessionHandle:
        if self.session is None:
            model = self.lapp.model
            self.session = self.lapp.sessions.start(
                "completion",
                model.ref if model else "",
                "completion",
                meta={"display_name": model.display_name, "kind": model.kind} if model else {},
            )
        return self.session

    def action_clear(self) -> None:
        self.cancel_generation()
        self.session = None
        self.document.generated = []
        self.document.load_text("")
        self.document.focus()

    def restore(self, record: SessionRecord) -> None:
        """Show a saved document; the next continuation updates the same session."""
        self.cancel_generation()
        self.document.generated = []
        self.document.load_text(record.document)
        self.document.move_cursor(self.document.document.end)
        self.session = SessionHandle(
            "completion", record.model, record.mode, record.system, dict(record.meta), record.id
        )
        self.document.focus()
