"""The status bar: which model, what kind, which mode, and how the last generation went."""

from __future__ import annotations

from rich.text import Text
from textual.reactive import reactive
from textual.widget import Widget

from localbvi.engine.types import DoneEvent, LoadInfo

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

    def set_model(self, name: str, kind: str, info: LoadInfo) -> None:
        """Show a freshly loaded model; the last generation's figures no longer apply."""
        self.model_name = name
        self.kind = kind
        self.device = info.device
        self.n_ctx = info.n_ctx
        self.ctx_used = 0
        self.tokens_per_s = None
        self.ttft_s = None

    def set_done(self, done: DoneEvent) -> None:
        """Show the figures of a finished generation."""
        if done.finish_reason == "error":
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
            facts += [sep, f"ctx {self.ctx_used}/{self.n_ctx}"]
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
