"""Messages that carry results from worker threads back to the UI (posted thread-safely)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from textual.message import Message

from localbvi.engine.types import DoneEvent, Kind, LoadInfo

if TYPE_CHECKING:
    from localbvi.store.hub import Progress  # the store is imported on first use

__all__ = [
    "DownloadUpdated",
    "GenerationFinished",
    "ModelLoadFailed",
    "ModelLoaded",
    "ModelLoading",
    "OnlineChecked",
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
