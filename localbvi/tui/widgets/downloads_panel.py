"""Downloads with progress bars; focus a row to cancel (c) or resume (r) it."""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar, cast

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, VerticalScroll
from textual.widgets import Label, ProgressBar

from localbvi.inspector import format_size
from localbvi.tui.downloads import DownloadTask

if TYPE_CHECKING:
    from localbvi.tui.app import LocalbviApp

__all__ = ["DownloadRow", "DownloadsPanel"]


def describe(task: DownloadTask) -> str:
    """The state of a download in words: bytes, speed and time left, or why it stopped."""
    p = task.progress
    if task.state == "done":
        return "done"
    if task.state in ("failed", "cancelled"):
        return f"{task.state}: {task.error} (r resumes)" if task.error else task.state
    if p is None:
        return "starting…"
    text = f"{format_size(p.done)} / {format_size(p.total)}"
    if p.speed_bps:
        text += f" · {format_size(int(p.speed_bps))}/s"
    if p.eta_s is not None:
        text += f" · {p.eta_s:.0f} s left"
    return text


class DownloadRow(Horizontal, can_focus=True):
    """One download: its name, a progress bar and its state."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("c", "cancel", "Cancel download", id="download.cancel"),
        Binding("r", "resume", "Resume download", id="download.resume"),
    ]

    def __init__(self, task: DownloadTask) -> None:
        super().__init__(classes="download-row")
        self.download = task

    def compose(self) -> ComposeResult:
        yield Label(self.download.display_name, classes="download-name")
        yield ProgressBar(total=100, show_eta=False, classes="download-bar")
        yield Label("", classes="download-state")

    def on_mount(self) -> None:
        self.update_task()

    def update_task(self) -> None:
        task = self.download
        bars = self.query(ProgressBar)
        if not bars:  # not composed yet: on_mount draws it
            return
        bar = bars.first()
        fraction = task.fraction
        if task.state == "done":
            bar.update(total=100, progress=100)
        elif fraction is not None:
            bar.update(total=100, progress=fraction * 100)
        self.query_one(".download-state", Label).update(describe(task))
        self.set_class(task.state in ("failed", "cancelled"), "-stopped")

    def action_cancel(self) -> None:
        if self.download.active:
            cast("LocalbviApp", self.app).cancel_download(self.download)

    def action_resume(self) -> None:
        if not self.download.active and self.download.state != "done":
            cast("LocalbviApp", self.app).resume_download(self.download)


class DownloadsPanel(VerticalScroll, can_focus=False):
    """Every download of this run, newest last; `active_only` hides finished ones."""

    def __init__(self, *, active_only: bool = False, id: str | None = None) -> None:
        super().__init__(id=id)
        self.active_only = active_only

    def on_mount(self) -> None:
        self.refresh_tasks()

    def refresh_tasks(self) -> None:
        app = cast("LocalbviApp", self.app)
        tasks = [t for t in app.downloads.tasks if t.active or not self.active_only]
        rows = {row.download.id: row for row in self.query(DownloadRow)}
        for task in tasks:
            row = rows.pop(task.id, None)
            if row is None:
                self.mount(DownloadRow(task))
            else:
                row.update_task()
        for row in rows.values():
            row.remove()
        self.display = bool(tasks) or not self.active_only
