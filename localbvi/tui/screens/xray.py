"""The prompt X-ray: exactly what one side sends, and a way to edit it and send exactly that."""

from __future__ import annotations

from typing import ClassVar

from textual import work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Footer, Label, Static, TextArea

from localbvi.engine.base import Engine
from localbvi.errors import LocalbviError
from localbvi.lab.compare import Prepared, SideRequest, prepare
from localbvi.tui.widgets.xray_view import xray_text

__all__ = ["XrayScreen"]


class XrayScreen(ModalScreen[str | None]):
    """Shows the rendered prompt with special tokens highlighted and its token count against
    the context; `e` edits the raw text and ctrl+g sends exactly it (dismisses with it)."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "close", "Close", id="xray.close"),
        Binding("b", "toggle_boundaries", "Token boundaries", id="xray.boundaries"),
        Binding("e", "edit", "Edit raw text", id="xray.edit"),
        Binding("ctrl+g", "send", "Send exactly this", id="xray.send", priority=True),
    ]

    def __init__(self, engine: Engine, request: SideRequest, title: str) -> None:
        super().__init__()
        self.engine = engine
        self.request = request
        self.title_text = title
        self.prepared: Prepared | None = None
        self.boundaries = False

    def compose(self) -> ComposeResult:
        with Vertical(id="xray-dialog"):
            yield Label(f"Prompt X-ray · {self.title_text}", id="xray-title")
            with VerticalScroll(id="xray-body"):
                yield Static("reading the prompt…", id="xray-text")
            yield TextArea("", id="xray-edit", soft_wrap=True)
            yield Label("", id="xray-count")
        yield Footer()

    def on_mount(self) -> None:
        self._prepare()

    @work(thread=True, exclusive=True, exit_on_error=False)
    def _prepare(self) -> None:
        try:
            prepared = prepare(self.engine, self.request)
        except LocalbviError as exc:
            self.app.call_from_thread(self._failed, str(exc))
            return
        self.app.call_from_thread(self._show, prepared)

    def _failed(self, error: str) -> None:
        self.query_one("#xray-text", Static).update(f"Cannot show this prompt: {error}")

    def _show(self, prepared: Prepared) -> None:
        self.prepared = prepared
        self._draw()
        n, n_ctx = len(prepared.tokens), prepared.n_ctx
        count = self.query_one("#xray-count", Label)
        specials = sum(1 for t in prepared.tokens if t.special)
        count.update(
            f"{n} tokens of a {n_ctx}-token context ({specials} special) · "
            "highlighted: special tokens"
        )
        count.set_class(n >= n_ctx, "-over")

    def _draw(self) -> None:
        if self.prepared is not None:
            text = xray_text(self.prepared, boundaries=self.boundaries)
            self.query_one("#xray-text", Static).update(text)

    @property
    def shown_text(self) -> str:
        """The X-ray as plain text, as the user reads it."""
        return self.prepared.text if self.prepared is not None else ""

    def action_toggle_boundaries(self) -> None:
        self.boundaries = not self.boundaries
        self._draw()

    def action_edit(self) -> None:
        if self.prepared is None:
            return
        dialog = self.query_one("#xray-dialog")
        if dialog.has_class("-editing"):
            return
        editor = self.query_one("#xray-edit", TextArea)
        editor.text = self.prepared.text
        editor.move_cursor(editor.document.end)  # most edits extend the prompt
        dialog.add_class("-editing")
        editor.focus()

    def action_send(self) -> None:
        """Raw completion of the edited text (or of the X-ray as it is)."""
        if self.query_one("#xray-dialog").has_class("-editing"):
            self.dismiss(self.query_one("#xray-edit", TextArea).text)
        elif self.prepared is not None:
            self.dismiss(self.prepared.text)

    def action_close(self) -> None:
        dialog = self.query_one("#xray-dialog")
        if dialog.has_class("-editing"):
            dialog.remove_class("-editing")
            return
        self.dismiss(None)
