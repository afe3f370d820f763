"""Messages that carry results from worker threads back to the UI (posted thread-safely)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from textual.message import Message

from localbvi.engine.types import DoneEvent, Kind, LoadInfo

if TYPE_CHECKING:
    from localbvi.engine.base import Engine
    from localbvi.lab import report as lab_report
    from localbvi.lab.compare import Side, SideRun
    from localbvi.lab.experiments import Experiment
    from localbvi.store.hub import Progress  # the store is imported on first use

__all__ = [
    "DownloadUpdated",
    "GenerationFinished",
    "ModelLoadFailed",
    "ModelLoaded",
    "ModelLoading",
    "OnlineChecked",
    "ReportCell",
    "ReportDone",
    "ReportProgress",
    "RunFinished",
    "SideDone",
    "SideLoaded",
]


@dataclass
class ModelLoading(Message):
    """A model is being resolved (maybe downloaded) and loaded."""

    ref: str
    display_name: str


@dataclass
class ModelLoaded(Message):
    """The engine now holds this model."""

    ref: str
    display_name: str
    kind: Kind
    info: LoadInfo


@dataclass
class ModelLoadFailed(Message):
    """Loading failed; `restored` says whether the previous model is still loaded."""

    ref: str
    error: str
    restored: bool
    session: bool = False
    """The model of a reopened session: its text is shown all the same."""


@dataclass
class GenerationFinished(Message):
    """A reply or continuation ended (done, cancelled, or failed with `done.error`)."""

    done: DoneEvent


@dataclass
class DownloadUpdated(Message):
    """A download changed state or made progress; bursts of progress merge."""

    task_id: int
    progress: Progress | None = None

    def can_replace(self, message: Message) -> bool:
        return (
            isinstance(message, DownloadUpdated)
            and message.task_id == self.task_id
            and self.progress is not None
            and message.progress is not None
        )


@dataclass
class OnlineChecked(Message):
    """Whether the Hub can be reached."""

    online: bool


# -- compare view (screens/compare.py) ------------------------------------------------------


@dataclass
class SideDone(Message):
    """One side finished (done, cancelled or failed)."""

    side: Side
    done: DoneEvent


@dataclass
class RunFinished(Message):
    """A comparison (`compare`) or a single-side run (branch, edited X-ray) ended."""

    runs: dict[Side, SideRun]
    compare: bool = False


@dataclass
class SideLoaded(Message):
    """One side's model is loaded (or `error` says why not); `generation` drops stale loads."""

    side: Kind
    engine: Engine | None
    generation: int
    error: str = ""


# -- experiments' seed table (screens/experiments.py) --------------------------------------


@dataclass
class ReportProgress(Message):
    """The report starts a cell."""

    progress: lab_report.Progress


@dataclass
class ReportCell(Message):
    """The report finished a cell."""

    experiment: Experiment
    cell: lab_report.Cell


@dataclass
class ReportDone(Message):
    """The report ended (`report` is None when it could not run: `error` says why)."""

    report: lab_report.Report | None
    error: str = ""
