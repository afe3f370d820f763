"""Pick a built-in (or your own) experiment to run in the compare view, or run them all.

Run all (ctrl+a) fills the seed table (`localbvi.lab.report`): every experiment on the base
model raw, the base model through in-context examples and the instruct model, with the token
shift of each instruct answer. It runs on the compare view's two engines in a thread worker;
progress and each finished cell come back as messages, and escape cancels.
"""

from __future__ import annotations

import threading
from typing import Any, ClassVar

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import DataTable, Footer, Label, OptionList
from textual.widgets.option_list import Option

from localbvi.engine.base import Engine
from localbvi.engine.types import Sampling
from localbvi.errors import LocalbviError
from localbvi.lab.experiments import Experiment, Experiments
from localbvi.lab.report import COLUMNS, Cell, Progress, Report, Row, one_line, run_report
from localbvi.tui.messages import ReportCell, ReportDone, ReportProgress

__all__ = ["ExperimentsScreen"]


class ExperimentsScreen(ModalScreen[Experiment | None]):
    """Each experiment with its title and what to look for; enter runs it, ctrl+a runs all."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "stop_or_close", "Stop / close", id="experiments.close"),
        Binding(
            "ctrl+a",
            "run_all",
            "Run all (table)",
            id="experiments.run_all",
            tooltip="Every experiment on base raw, base in context and instruct, as one table",
        ),
    ]

    def __init__(
        self,
        experiments: Experiments,
        *,
        engines: tuple[Engine, Engine] | None = None,
        names: tuple[str, str] = ("base model", "instruct model"),
    ) -> None:
        """`engines`: the (base, instruct) pair run-all uses (the compare view's)."""
        super().__init__()
        self.experiments = list(experiments)
        self.engines = engines
        self.names = names
        self.running = False
        self.report: Report | None = None
        self._cancel = threading.Event()

    def compose(self) -> ComposeResult:
        with Vertical(id="experiments-dialog"):
            yield Label(
                "Experiments · enter runs one on both sides, ctrl+a runs all as a table "
                "(add yours in experiments.toml in the config folder)",
                id="experiments-title",
            )
            yield OptionList(
                *(Option(self._line(e), id=e.id) for e in self.experiments),
                id="experiments-list",
            )
            yield Label("", id="experiments-progress")
            yield DataTable(id="experiments-table", zebra_stripes=True, cursor_type="row")
        yield Footer()

    @staticmethod
    def _line(experiment: Experiment) -> Text:
        line = Text(experiment.title, style="bold")
        line.append(f"\n{experiment.what_to_look_for}\n", style="dim")
        return line

    def on_mount(self) -> None:
        self.query_one("#experiments-progress").display = False
        self.query_one(DataTable).display = False
        self.query_one(OptionList).focus()

    @on(OptionList.OptionSelected)
    def _selected(self, event: OptionList.OptionSelected) -> None:
        self.dismiss(self.experiments[event.option_index])

    def action_stop_or_close(self) -> None:
        """Escape cancels a running table; pressed again (or when idle) it closes."""
        if self.running:
            self._cancel.set()
            for engine in self.engines or ():
                engine.cancel()
            self._progress("stopping…")
        else:
            self.dismiss(None)

    # -- run all ------------------------------------------------------------------------------

    def action_run_all(self) -> None:
        if self.running:
            return
        if self.engines is None:
            self.notify(
                "Both models are still loading: run all when the compare view says ready",
                severity="warning",
            )
            return
        table = self.query_one(DataTable)
        table.clear(columns=True)
        table.add_column("experiment", key="experiment")
        for column, title in COLUMNS.items():
            table.add_column(title, key=column)
        self.query_one(OptionList).display = False
        self.query_one("#experiments-progress").display = True
        table.display = True
        table.focus()
        self._cancel = threading.Event()
        self.running = True
        self._progress(f"starting: {len(self.experiments) * len(COLUMNS)} runs…")
        settings: Any = getattr(self.app, "settings", None)
        sampling = settings.to_sampling() if settings is not None else Sampling()
        self._run_all(self.engines, sampling)

    @work(thread=True, exclusive=True, group="experiments-report", exit_on_error=False)
    def _run_all(self, engines: tuple[Engine, Engine], sampling: Sampling) -> None:
        def progress(p: Progress) -> None:
            self.post_message(ReportProgress(p))

        def cell_done(row: Row, cell: Cell) -> None:
            self.post_message(ReportCell(row.experiment, cell))

        try:
            report = run_report(
                engines[0],
                engines[1],
                self.experiments,
                lambda e: e.apply(sampling),
                names=self.names,
                on_progress=progress,
                on_cell=cell_done,
                cancelled=self._cancel,
            )
        except LocalbviError as exc:
            self.post_message(ReportDone(None, str(exc)))
            return
        except Exception as exc:  # a bug: shown as one line, never a traceback
            self.post_message(ReportDone(None, f"internal error: {type(exc).__name__}: {exc}"))
            return
        self.post_message(ReportDone(report))

    def _progress(self, text: str) -> None:
        self.query_one("#experiments-progress", Label).update(text)

    @on(ReportProgress)
    def _on_progress(self, message: ReportProgress) -> None:
        p = message.progress
        table = self.query_one(DataTable)
        if p.experiment.id not in table.rows:
            table.add_row(
                Text(p.experiment.id, style="bold"),
                *("…" for _ in COLUMNS),
                key=p.experiment.id,
                height=None,
            )
        self._progress(
            f"{p.index}/{p.total} · {p.experiment.title} · {COLUMNS[p.column]} · escape stops"
        )

    @on(ReportCell)
    def _on_cell(self, message: ReportCell) -> None:
        cell = message.cell
        if cell.error:
            content = Text(f"error: {one_line(cell.error, 80)}", style="red")
        else:
            content = Text(one_line(cell.text, 60) or "(nothing)")
            content.append(f"\n{cell.figures()}", style="dim")
        self.query_one(DataTable).update_cell(
            message.experiment.id, cell.column, content, update_width=True
        )

    @on(ReportDone)
    def _on_done(self, message: ReportDone) -> None:
        self.running = False
        if message.report is None:
            self._progress(f"could not run: {message.error}")
            self.notify(message.error, title="Experiments", severity="error", timeout=12)
            return
        self.report = message.report
        failed = len(message.report.failed)
        state = "cancelled" if message.report.cancelled else "done"
        extra = f", {failed} failed" if failed else ""
        self._progress(
            f"{state}: {len(message.report.rows)} experiments{extra} · the same table from "
            "the command line: localbvi experiments run --all · escape closes"
        )
