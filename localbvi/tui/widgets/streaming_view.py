"""Plumbing shared by the chat and completion views: one generation at a time, per frame."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, cast

from textual import on, work
from textual.containers import Vertical
from textual.reactive import reactive
from textual.timer import Timer
from textual.worker import get_current_worker

from localbvi.engine.types import DoneEvent, Event
from localbvi.tui.messages import GenerationFinished
from localbvi.tui.streaming import FRAME_S, TokenBuffer, pump
from localbvi.tui.widgets.status_bar import StatusBar

if TYPE_CHECKING:
    from localbvi.tui.app import LocalbviApp

__all__ = ["StreamingView"]


class StreamingView(Vertical):
    """A view that runs engine generations in a thread and drains their text once per frame."""

    generating: reactive[bool] = reactive(False)

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self._buffer = TokenBuffer()
        self._timer: Timer | None = None
        self._cancel_requested = False

    @property
    def lapp(self) -> LocalbviApp:
        return cast("LocalbviApp", self.app)

    def start_generation(self, events: Callable[[], Iterator[Event]]) -> None:
        """Begin streaming `events()` (called in the worker thread) into this view."""
        self._buffer = TokenBuffer()
        self._cancel_requested = False
        self.generating = True
        self.lapp.set_activity("generating…")
        self._timer = self.set_interval(FRAME_S, self._flush)
        for bar in self.screen.query(StatusBar):  # its context figure follows the stream
            bar.track(self._buffer)
        self._generate(events, self._buffer)

    @work(thread=True, exclusive=True, group="generation")
    def _generate(self, events: Callable[[], Iterator[Event]], buffer: TokenBuffer) -> None:
        worker = get_current_worker()
        engine = self.lapp.engine

        def cancelled() -> bool:
            return self._cancel_requested or worker.is_cancelled

        with self.lapp.engine_lock:
            done = pump(events, buffer, cancelled, engine.cancel)
        self.post_message(GenerationFinished(done))

    def _flush(self) -> None:
        text = self._buffer.drain()
        if text:
            self.on_stream_text(text)

    def cancel_generation(self) -> bool:
        """Ask the engine to stop; the partial text stays. False when nothing runs."""
        if not self.generating:
            return False
        self._cancel_requested = True
        self.lapp.engine.cancel()
        return True

    @on(GenerationFinished)
    def _finished(self, message: GenerationFinished) -> None:
        if self._timer is not None:
            self._timer.stop()
            self._timer = None
        self._flush()
        self.generating = False
        self.lapp.set_activity("")
        self.on_stream_done(message.done)

    def on_stream_text(self, text: str) -> None:
        """Show newly streamed text (called on the UI thread, at most once per frame)."""

    def on_stream_done(self, done: DoneEvent) -> None:
        """The generation ended: done, cancelled, or `done.error`."""
