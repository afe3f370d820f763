"""The status bar: which model, what kind, which mode, and how the last generation went."""

from __future__ import annotations

from rich.text import Text
from textual.reactive import reactive
from textual.timer import Timer
from textual.widget import Widget

from localbvi.engine.types import DoneEvent, LoadInfo
from localbvi.tui.streaming import STATUS_S, TokenBuffer

__all__ = ["StatusBar"]


class StatusBar(Widget):
    """One line of facts a learner compares between models: speed, context use, device."""

    model_name: reactive[str] = reactive("no model")
    kind: reactive[str] = reactive("")
    mode: reactive[str] = reactive("")
    device: reactive[str] = reactive("")
    n_ctx: reactive[int] = reactive(0)
    ctx_used: reactive[int] = reactive(0)
    tokens_per_s: reactive[float | None] = reactive(None)
    ttft_s: reactive[float | None] = reactive(None)
    activity: reactive[str] = reactive("")
    streaming: reactive[bool] = reactive(False)
    """A reply is streaming: `ctx_used` is the last exact figure plus the tokens so far."""

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self._stream: TokenBuffer | None = None
        self._stream_base = 0
        self._ticker: Timer | None = None

    def track(self, buffer: TokenBuffer) -> None:
        """Follow a starting stream: the context figure grows with its tokens until it ends.

        The prompt's own size is only reported when the reply ends, so while it streams the
        figure is the last exact one plus the new tokens, marked "~"; `set_done` makes it exact.
        Redrawn at most every `STATUS_S`, however fast the tokens come.
        """
        self._stream = buffer
        self._stream_base = self.ctx_used
        self.streaming = True
        if self._ticker is None:
            self._ticker = self.set_interval(STATUS_S, self._follow)
        else:
            self._ticker.resume()

    def _follow(self) -> None:
        if self._stream is not None:
            self.ctx_used = self._stream_base + self._stream.tokens

    def _untrack(self) -> None:
        self._stream = None
        self.streaming = False
        if self._ticker is not None:
            self._ticker.pause()

    def set_model(self, name: str, kind: str, info: LoadInfo) -> None:
        """Show a freshly loaded model; the last generation's figures no longer apply."""
        self._untrack()
        self.model_name = name
        self.kind = kind
        self.device = info.device
        self.n_ctx = info.n_ctx
        self.ctx_used = 0
        self.tokens_per_s = None
        self.ttft_s = None

    def set_done(self, done: DoneEvent) -> None:
        """Show the figures of a finished generation."""
        base = self._stream_base if self._stream is not None else self.ctx_used
        self._untrack()
        if done.finish_reason == "error":
            self.ctx_used = base  # nothing was added to the conversation
            return
        used = done.prompt_tokens + done.tokens
        if used:  # a server that reports no usage (a cancelled stream) leaves the last figure
            self.ctx_used = used
        self.tokens_per_s = done.tokens_per_s
        self.ttft_s = done.ttft_s

    def render(self) -> Text:
        sep = (" │ ", "dim")
        facts: list[str | tuple[str, str]] = []
        if self.kind:
            facts += [sep, (self.kind, "bold magenta" if self.kind == "base" else "bold cyan")]
        if self.mode:
            facts += [sep, f"{self.mode} mode"]
        if self.n_ctx:
            about = "~" if self.streaming else ""
            facts += [sep, f"ctx {about}{self.ctx_used}/{self.n_ctx}"]
        if self.tokens_per_s is not None:
            facts += [sep, f"{self.tokens_per_s:.1f} tok/s"]
        if self.ttft_s is not None:
            facts += [sep, f"TTFT {self.ttft_s:.2f} s"]
        if self.device:
            facts += [sep, self.device]
        head: list[str | tuple[str, str]] = []
        if self.activity:
            head += [(f"● {self.activity}", "bold yellow"), sep]
        # The name gives way first: the figures are what a learner compares.
        used = Text.assemble(*head, *facts).cell_len
        budget = max(12, self.size.width - used)
        name = self.model_name
        if len(name) > budget:
            name = name[: budget - 1] + "…"
        return Text.assemble(*head, (name, "bold"), *facts, no_wrap=True, overflow="ellipsis")
