"""The app's list of downloads: what is running, finished or failed, and how to stop it.

Plain data with no Textual: the app runs each task in a thread worker and posts
`DownloadUpdated` messages; screens read the tasks to draw progress bars.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from localbvi.store.hub import Progress  # the store is imported on first use


__all__ = ["DownloadState", "DownloadTask", "Downloads"]

DownloadState = Literal["downloading", "done", "failed", "cancelled"]


@dataclass
class DownloadTask:
    """One model download; `cancel` is set to stop it, `then_load` opens the model after."""

    id: int
    ref: str
    display_name: str
    state: DownloadState = "downloading"
    progress: Progress | None = None
    error: str = ""
    path: str = ""
    then_load: bool = False
    cancel: threading.Event = field(default_factory=threading.Event)

    @property
    def fraction(self) -> float | None:
        if self.progress is None or not self.progress.total:
            return None
        return min(1.0, self.progress.done / self.progress.total)

    @property
    def active(self) -> bool:
        return self.state == "downloading"


class Downloads:
    """Every download of this run, oldest first."""

    def __init__(self) -> None:
        self._tasks: dict[int, DownloadTask] = {}
        self._next = 1
        self._lock = threading.Lock()

    def new(self, ref: str, display_name: str, *, then_load: bool = False) -> DownloadTask:
        with self._lock:
            task = DownloadTask(self._next, ref, display_name, then_load=then_load)
            self._tasks[task.id] = task
            self._next += 1
            return task

    def get(self, task_id: int) -> DownloadTask | None:
        return self._tasks.get(task_id)

    def active_for(self, ref: str) -> DownloadTask | None:
        """The running download of `ref`, so the same model is never fetched twice at once."""
        for task in self._tasks.values():
            if task.ref == ref and task.active:
                return task
        return None

    @property
    def tasks(self) -> list[DownloadTask]:
        return list(self._tasks.values())
