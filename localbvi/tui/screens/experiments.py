"""Pick a built-in (or your own) experiment to run in the compare view."""

from __future__ import annotations

from typing import ClassVar

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Footer, Label, OptionList
from textual.widgets.option_list import Option

from localbvi.lab.experiments import Experiment, Experiments

__all__ = ["ExperimentsScreen"]


class ExperimentsScreen(ModalScreen[Experiment | None]):
    """Each experiment with its title and what to look for; enter runs it."""

    DEFAULT_CSS = """
    ExperimentsScreen { align: center middle; }
    #experiments-dialog {
        width: 90%;
        height: 85%;
        border: thick $primary;
        background: $surface;
        padding: 0 1;
    }
    #experiments-title { text-style: bold; }
    #experiments-list { height: 1fr; }
    """

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "dismiss_none", "Close", id="experiments.close"),
    ]

    def __init__(self, experiments: Experiments) -> None:
        super().__init__()
        self.experiments = list(experiments)

    def compose(self) -> ComposeResult:
        with Vertical(id="experiments-dialog"):
            yield Label(
                "Experiments · enter runs one on both sides (add yours in "
                "experiments.toml in the config folder)",
                id="experiments-title",
            )
            yield OptionList(
                *(Option(self._line(e), id=e.id) for e in self.experiments),
                id="experiments-list",
            )
        yield Footer()

    @staticmethod
    def _line(experiment: Experiment) -> Text:
        line = Text(experiment.title, style="bold")
        line.append(f"\n{experiment.what_to_look_for}\n", style="dim")
        return line

    def on_mount(self) -> None:
        self.query_one(OptionList).focus()

    @on(OptionList.OptionSelected)
    def _selected(self, event: OptionList.OptionSelected) -> None:
        self.dismiss(self.experiments[event.option_index])

    def action_dismiss_none(self) -> None:
        self.dismiss(None)
