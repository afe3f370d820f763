"""The catalog as base/instruct pairs, one line each, for the welcome screen."""

from __future__ import annotations

from collections.abc import Sequence

from rich.text import Text
from textual.widgets import OptionList
from textual.widgets.option_list import Option

from localbvi.inspector import format_size
from localbvi.tui.state import ModelChoice
from localbvi.tui.widgets.model_list import FIT_STYLE

__all__ = ["PairList", "pair_line"]

Pair = tuple[ModelChoice, ModelChoice]


def _family(base: ModelChoice, instruct: ModelChoice) -> str:
    """The pair's shared name: the longest common word prefix of both names."""
    words = []
    for a, b in zip(base.display_name.split(), instruct.display_name.split(), strict=False):
        if a != b:
            break
        words.append(a)
    return " ".join(words) or base.display_name


def pair_line(base: ModelChoice, instruct: ModelChoice) -> Text:
    def half(model: ModelChoice, kind: str, style: str) -> Text:
        mark = ("●", "green") if model.downloaded else ("○", "dim")
        return Text.assemble(
            (f" {kind} ", style), " ", mark, f" {format_size(model.size) if model.size else '?':>7}"
        )

    fit = instruct.ram_fit or base.ram_fit
    return Text.assemble(
        (f"{_family(base, instruct)[:22]:<22}", "bold"),
        "  ",
        half(base, "base", "bold black on magenta"),
        "   ",
        half(instruct, "instruct", "bold black on cyan"),
        "   ",
        (f"{base.quant:<7}", "dim"),
        " RAM ",
        (f"{fit or '?':<9}", FIT_STYLE.get(fit, "dim")),
        ("  🔒 gated" if base.gated or instruct.gated else "", "yellow"),
        no_wrap=True,
    )


class PairList(OptionList):
    """Catalog pairs; the highlighted one is what "download pair" fetches."""

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.pairs: list[Pair] = []

    def set_pairs(self, pairs: Sequence[Pair]) -> None:
        self.pairs = list(pairs)
        self.clear_options()
        self.add_options(Option(pair_line(b, i)) for b, i in self.pairs)
        if self.pairs:
            self.highlighted = 0

    def selected_pair(self) -> Pair | None:
        index = self.highlighted
        if index is None or not 0 <= index < len(self.pairs):
            return None
        return self.pairs[index]
