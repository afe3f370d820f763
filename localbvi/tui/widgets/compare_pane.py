"""One side of the compare view: which model in which mode, its streamed text, its stats, and
the progress of its model's download when the model is not on disk yet."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Vertical, VerticalScroll
from textual.widgets import Label, ProgressBar, Static

from localbvi.engine.types import DoneEvent
from localbvi.lab.compare import side_stats

__all__ = ["ComparePane"]


class ComparePane(Vertical):
    """A titled, scrolling text pane with a stats line under it.

    Text is appended once per frame by the screen (never per token), and a branched prefix
    is shown dimmed so the user sees where the alternative token took over.
    """

    DEFAULT_CSS = """
    ComparePane {
        width: 1fr;
        height: 1fr;
        border: round $primary;
        padding: 0 1;
    }
    ComparePane.-instruct { border: round $accent; }
    ComparePane.-incontext { border: round $success; }
    ComparePane .pane-download { display: none; width: 1fr; }
    ComparePane.-downloading .pane-download { display: block; }
    ComparePane .pane-title { text-style: bold; width: 1fr; }
    ComparePane .pane-body { height: 1fr; }
    ComparePane .pane-stats { color: $text-muted; width: 1fr; }
    ComparePane.-error .pane-stats { color: $error; }
    """

    def __init__(self, side: str, *, id: str | None = None) -> None:
        super().__init__(id=id, classes=f"-{side}")
        self.side = side
        self.text = ""
        self._prefix = Text()

    def compose(self) -> ComposeResult:
        yield Label(self.side, classes="pane-title")
        with VerticalScroll(classes="pane-body"):
            yield Static("", classes="pane-text")
        yield ProgressBar(classes="pane-download", show_eta=False)
        yield Label("", classes="pane-stats")

    def start(self, title: str, *, prefix: str = "", branch_token: str = "") -> None:
        """Clear the pane for a new run (a branch keeps its prefix, the new token marked)."""
        self.query_one(".pane-title", Label).update(title)
        self._prefix = Text(prefix, style="dim")
        if branch_token:
            self._prefix.append(branch_token, style="bold reverse")
        self.text = prefix + branch_token
        self.remove_class("-error")
        self.query_one(".pane-stats", Label).update("running…")
        self._draw("")

    def waiting(self, title: str) -> None:
        """This side runs after the other one."""
        self.start(title)
        self.query_one(".pane-stats", Label).update("waiting for the other side…")

    def append(self, text: str) -> None:
        self.text += text
        self._draw(self.text[len(self._prefix.plain) :])

    def _draw(self, generated: str) -> None:
        shown = self._prefix.copy()
        shown.append(generated)
        self.query_one(".pane-text", Static).update(shown)
        self.query_one(".pane-body", VerticalScroll).scroll_end(animate=False)

    def finish(self, done: DoneEvent) -> None:
        """Show why it stopped, how many tokens and how fast."""
        self.set_class(done.finish_reason == "error", "-error")
        self.query_one(".pane-stats", Label).update(side_stats(done))

    def download_progress(self, fraction: float | None, *, done: bool = False) -> None:
        """Show the model download's bar (None: size not known yet); `done` hides it."""
        self.set_class(not done, "-downloading")
        bar = self.query_one(".pane-download", ProgressBar)
        if fraction is None:
            bar.update(total=None)
        else:
            bar.update(total=100, progress=fraction * 100)

    @property
    def downloading(self) -> bool:
        return self.has_class("-downloading")

    @property
    def stats(self) -> str:
        return str(self.query_one(".pane-stats", Label).render())
