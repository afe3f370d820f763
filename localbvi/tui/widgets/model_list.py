"""A list of models, one line each: kind badge, name, quantization, size, disk state, RAM fit."""

from __future__ import annotations

from collections.abc import Sequence

from rich.text import Text
from textual.widgets import OptionList
from textual.widgets.option_list import Option

from localbvi.inspector import format_size
from localbvi.tui.state import ModelChoice

__all__ = ["ModelList", "model_line", "source_label"]

FIT_STYLE = {"fits": "green", "tight": "yellow", "won't fit": "bold red"}


def model_line(model: ModelChoice) -> Text:
    """The row a model gets in the picker and on the welcome screen."""
    kind = model.kind or "?"
    badge_style = {"base": "bold black on magenta", "instruct": "bold black on cyan"}.get(
        kind, "bold black on grey50"
    )
    line = Text.assemble(
        (f" {kind:^8} ", badge_style),
        " ",
        (f"{model.display_name[:26]:<26}", "bold"),
        " ",
        (f"{model.quant[:7]:<7}", "dim"),
        f"{format_size(model.size) if model.size else '?':>8}  ",
        *_state(model),
        "  ",
        (f"{model.ram_fit or '':<9}", FIT_STYLE.get(model.ram_fit, "dim")),
        ("🔒 gated" if model.gated else "", "yellow"),
        no_wrap=True,
        overflow="ellipsis",
    )
    return line


def source_label(model: ModelChoice) -> str | None:
    """The other tool a model on disk belongs to ("Ollama", "LM Studio", …), if any."""
    if model.source in ("catalog", "hf-cache", "demo", "imported", "file", "remote"):
        return None
    # Only another tool's model gets here, and only after the store listed it: importing the
    # store now costs nothing, and keeps one table of tool names.
    from localbvi.store.foreign import tool_label

    return tool_label(model.source)


def _state(model: ModelChoice) -> tuple[tuple[str, str], str]:
    if model.remote:
        return (" remote ", "bold black on yellow"), "  "
    label = source_label(model) if model.downloaded else None
    if label is not None:  # where it is on disk: another tool's folder, read-only
        return (f"{label[:10]:<10}", "cyan"), ""
    if model.downloaded:
        return ("● on disk", "green"), " "
    return ("○ download", "dim"), ""


class ModelList(OptionList):
    """OptionList of `ModelChoice`s, filtered by a query on name, kind, quant and source."""

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.models: list[ModelChoice] = []
        self.shown: list[ModelChoice] = []

    def set_models(self, models: Sequence[ModelChoice], query: str = "") -> None:
        self.models = list(models)
        self.filter(query)

    def filter(self, query: str) -> None:
        words = query.lower().split()

        def matches(model: ModelChoice) -> bool:
            hay = " ".join(
                [
                    model.display_name,
                    model.ref,
                    model.kind or "",
                    model.quant,
                    model.source,
                    source_label(model) or "",
                ]
            ).lower()
            return all(word in hay for word in words)

        self.shown = [m for m in self.models if matches(m)]
        self.clear_options()
        self.add_options(Option(model_line(m)) for m in self.shown)
        if self.shown:
            self.highlighted = 0

    def selected_model(self) -> ModelChoice | None:
        index = self.highlighted
        if index is None or not 0 <= index < len(self.shown):
            return None
        return self.shown[index]
