"""The engine interface that the CLI, the TUI and the remote backend share."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Protocol, runtime_checkable

from localbvi.engine.types import Event, LoadConfig, LoadInfo, Message, Rendered, Sampling, Token

__all__ = ["Engine"]


@runtime_checkable
class Engine(Protocol):
    """A loaded (or loadable) model that streams completions.

    Generation methods return iterators of events: zero or more `TokenEvent`s, then exactly
    one `DoneEvent`. One generation at a time per engine; `cancel()` may be called from any
    thread and ends the running stream within a token with finish reason "cancelled".
    """

    @property
    def info(self) -> LoadInfo | None:
        """Facts about the loaded model, or None when nothing is loaded."""
        ...

    def load(self, path: str, config: LoadConfig) -> LoadInfo:
        """Load a model, replacing the current one. Raises ModelLoadError."""
        ...

    def unload(self) -> None:
        """Free the loaded model (and its process)."""
        ...

    def complete(self, prompt: str | Sequence[int], sampling: Sampling) -> Iterator[Event]:
        """Raw completion: the text (or token ids) goes to the model as is."""
        ...

    def chat(self, messages: Sequence[Message], sampling: Sampling) -> Iterator[Event]:
        """Chat: messages rendered with the model's chat template. Raises TemplateError."""
        ...

    def render(self, messages: Sequence[Message]) -> Rendered:
        """The exact prompt `chat` would send, as text and tokens."""
        ...

    def tokenize(self, text: str) -> list[Token]:
        """Tokens of `text` as raw completion would send them (special tokens parsed)."""
        ...

    def cancel(self) -> None:
        """Stop the running generation (thread-safe; a no-op when idle)."""
        ...

    def logs(self) -> list[str]:
        """llama.cpp's log lines for the loaded model, oldest first."""
        ...

    def close(self) -> None:
        """Release everything; the engine can be loaded again afterwards."""
        ...
