"""Search the Hub for GGUF models: one row per quantization, picked rows download and load."""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar, cast

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Footer, Input, Label, OptionList
from textual.widgets.option_list import Option

from localbvi.inspector import format_size
from localbvi.tui.services import search_hub
from localbvi.tui.state import ModelChoice
from localbvi.tui.widgets.model_list import FIT_STYLE

if TYPE_CHECKING:
    from localbvi.tui.app import LocalbviApp

__all__ = ["HubSearchScreen", "hub_line"]

RESULTS = 20
"""Repositories asked for per search (each brings its quantizations)."""


def hub_line(model: ModelChoice) -> Text:
    """One search result: repository, quantization, size, RAM fit, gated mark."""
    return Text.assemble(
        (f"{model.display_name[:40]:<40}", "bold"),
        " ",
        (f"{model.quant[:8]:<8}", "dim"),
        f"{format_size(model.size) if model.size else '?':>8}  ",
        (f"{model.ram_fit or '':<9}", FIT_STYLE.get(model.ram_fit, "dim")),
        (" 🔒 gated" if model.gated else "", "yellow"),
        no_wrap=True,
        overflow="ellipsis",
    )


class HubSearchScreen(ModalScreen[ModelChoice | None]):
    """Type words, Enter searches the Hub; Enter on a result downloads and loads it."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "close", "Close", id="hub_search.close"),
        Binding("down", "move(1)", "Next", id="hub_search.next", show=False, priority=True),
        Binding("up", "move(-1)", "Previous", id="hub_search.previous", show=False, priority=True),
    ]

    def __init__(self, query: str = "") -> None:
        super().__init__()
        self.initial_query = query
        self.results: list[ModelChoice] = []
        self.searching = False

    def compose(self) -> ComposeResult:
        with Vertical(id="hub-search-dialog", classes="dialog"):
            yield Label("Search the Hugging Face Hub", classes="dialog-title")
            yield Input(
                self.initial_query,
                placeholder="GGUF models: type words (e.g. qwen 0.5b), Enter searches",
                id="hub-query",
            )
            yield OptionList(id="hub-results")
            yield Label(
                "Enter searches; then ↓ and Enter downloads and loads a quantization",
                id="hub-note",
                classes="dialog-note",
            )
        yield Footer()

    def on_mount(self) -> None:
        if self.initial_query.strip():
            self._start(self.initial_query)

    @on(Input.Submitted, "#hub-query")
    def _submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self._start(event.value)

    def _start(self, text: str) -> None:
        words = " ".join(text.split())
        if not words:
            self._note("Type something to search for, e.g. qwen 0.5b")
            return
        if self.searching:
            self._note("Still searching…")
            return
        self.searching = True
        self._note(f"Searching the Hub for '{words}'…")
        self._search(words)

    @work(thread=True, exit_on_error=False, group="hub-search")
    def _search(self, text: str) -> None:
        app = cast("LocalbviApp", self.app)
        try:
            rows, repos = search_hub(text, app.settings.engine.n_ctx, RESULTS)
            error = ""
        except Exception as exc:  # LocalbviError: one readable line; anything else: still shown
            rows, repos, error = [], 0, str(exc)
        self.app.call_from_thread(self._show, text, rows, repos, error)

    def _show(self, text: str, rows: list[ModelChoice], repos: int, error: str) -> None:
        self.searching = False
        self.results = rows
        results = self.query_one("#hub-results", OptionList)
        results.clear_options()
        results.add_options(Option(hub_line(row)) for row in rows)
        if error:
            self._note(error)
        elif not rows:
            self._note(f"No GGUF files match '{text}' on the Hub; try fewer or other words")
        else:
            results.highlighted = 0
            results.focus()
            self._note(
                f"{len(rows)} files in {repos} repositories for '{text}', most downloaded "
                "first · Enter downloads and loads · RAM fit at the current context"
            )

    def _note(self, text: str) -> None:
        self.query_one("#hub-note", Label).update(text)

    @on(OptionList.OptionSelected, "#hub-results")
    def _selected(self, event: OptionList.OptionSelected) -> None:
        event.stop()
        self._pick()

    def _pick(self) -> None:
        index = self.query_one("#hub-results", OptionList).highlighted
        if index is None or not 0 <= index < len(self.results):
            self.notify("Search first, then pick a result")
            return
        self.dismiss(self.results[index])

    def action_move(self, step: int) -> None:
        results = self.query_one("#hub-results", OptionList)
        if not self.results:
            return
        results.focus()
        if step > 0:
            results.action_cursor_down()
        else:
            results.action_cursor_up()

    def action_close(self) -> None:
        self.dismiss(None)
