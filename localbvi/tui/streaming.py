"""Hand-off of streamed tokens from a worker thread to the UI, batched per frame.

The worker appends each token's text to a `TokenBuffer`; a timer on the UI side drains it
about 30 times a second and updates the widget once per drain. A widget update per token
would flood the message queue at hundreds of tokens per second and delay keypresses.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator

from localbvi.engine.types import DoneEvent, Event, TokenEvent
from localbvi.errors import LocalbviError

__all__ = ["FRAME_S", "STATUS_S", "TokenBuffer", "pump"]

FRAME_S = 1 / 30
"""How often the UI drains streamed text."""

STATUS_S = 0.1
"""How often the status bar's context figure follows a stream (at most 10 redraws a second)."""


class TokenBuffer:
    """A thread-safe append/drain buffer of text pieces, with a running token count."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._parts: list[str] = []
        self.tokens = 0
        """Tokens pushed so far (the UI thread reads it to show progress)."""

    def push(self, text: str) -> None:
        with self._lock:
            self._parts.append(text)
            self.tokens += 1

    def drain(self) -> str:
        with self._lock:
            if not self._parts:
                return ""
            text = "".join(self._parts)
            self._parts.clear()
            return text


def pump(
    events: Callable[[], Iterator[Event]],
    buffer: TokenBuffer,
    is_cancelled: Callable[[], bool],
    cancel: Callable[[], None],
) -> DoneEvent:
    """Run a generation into `buffer` and return its `DoneEvent`; never raises LocalbviError.

    `events` is called here (not before) so a template or context error becomes a done event
    with `error` set, which the UI shows like any other outcome.
    """
    try:
        for event in events():
            if isinstance(event, TokenEvent):
                if event.text:
                    buffer.push(event.text)
                if is_cancelled():
                    cancel()
            else:
                return event
    except LocalbviError as exc:
        return DoneEvent(finish_reason="error", error=str(exc))
    except Exception as exc:  # a bug or a dead pipe: still a readable line, never a traceback
        return DoneEvent(
            finish_reason="error", error=f"internal error: {type(exc).__name__}: {exc}"
        )
    return DoneEvent(finish_reason="error", error="the engine stopped without a done event")
