"""The downloads screen: active and finished downloads, cancel and resume."""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar, cast

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Footer, Label

from localbvi.tui.widgets.downloads_panel import DownloadsPanel

if TYPE_CHECKING:
    from localbvi.tui.app import LocalbviApp

__all__ = ["DownloadsScreen"]


class DownloadsScreen(ModalScreen[None]):
    """Downloads of this run; Tab to a row, then c cancels and r resumes it."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "app.pop_screen", "Close", id="downloads.close")
    ]

    def compose(self) -> ComposeResult:
        with Vertical(id="downloads-dialog", classes="dialog"):
            yield Label("Downloads", classes="dialog-title")
            yield Label(
                "No downloads yet: pick a model that is not on disk (ctrl+o).",
                id="downloads-empty",
                classes="dialog-note",
            )
            yield DownloadsPanel(id="downloads")
        yield Footer()

    def on_mount(self) -> None:
        self._update_empty()
        self.set_interval(0.5, self._update_empty)

    def _update_empty(self) -> None:
        app = cast("LocalbviApp", self.app)
        self.query_one("#downloads-empty").display = not app.downloads.tasks
        panel = self.query_one(DownloadsPanel)
        if len(panel.query("DownloadRow")) != len(app.downloads.tasks):
            panel.refresh_tasks()
        if self.focused is None:
            rows = panel.query("DownloadRow")
            if rows:
                rows.first().focus()
