"""llama.cpp's log lines for the loaded model: what it said about the file, memory and GPU."""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar, cast

from textual import work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Footer, Label, Log

if TYPE_CHECKING:
    from localbvi.tui.app import LocalbviApp

__all__ = ["LogScreen"]


class LogScreen(ModalScreen[None]):
    """The engine's log, read in a worker because it may ask the model process."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "app.pop_screen", "Close", id="log.close"),
        Binding("r", "reload", "Refresh", id="log.refresh"),
    ]

    def compose(self) -> ComposeResult:
        with Vertical(id="log-dialog", classes="dialog"):
            yield Label("llama.cpp log", classes="dialog-title")
            yield Log(id="log", highlight=False)
        yield Footer()

    def on_mount(self) -> None:
        self.action_reload()

    def action_reload(self) -> None:
        self._read()

    @work(thread=True, exclusive=True, exit_on_error=False)
    def _read(self) -> None:
        app = cast("LocalbviApp", self.app)
        try:
            lines = app.engine.logs()
        except Exception as exc:
            lines = [f"could not read the log: {exc}"]
        if not lines:
            lines = ["(no log yet: load a model with ctrl+o)"]
        self.app.call_from_thread(self._show, lines)

    def _show(self, lines: list[str]) -> None:
        log = self.query_one(Log)
        log.clear()
        log.write_lines(lines)
        log.focus()
