"""Token probabilities: the generated tokens, and for the selected one its alternatives as bars."""

from __future__ import annotations

from rich.text import Text
from textual.widgets import OptionList
from textual.widgets.option_list import Option

from localbvi.engine.types import Alternative
from localbvi.lab.compare import GenToken

__all__ = ["AlternativeList", "TokenList", "prob_bar", "show_token"]

_EIGHTHS = " ▏▎▍▌▋▊▉"


def prob_bar(prob: float, width: int = 20) -> str:
    """A horizontal bar of `width` cells for a probability, in eighth-cell steps."""
    eighths = round(max(0.0, min(prob, 1.0)) * width * 8)
    full, part = divmod(eighths, 8)
    bar = "█" * full + (_EIGHTHS[part] if part else "")
    return bar.ljust(width)


def show_token(text: str) -> str:
    """A token's text quoted, whitespace made visible: a lone space or newline is a token too."""
    return repr(text)


class TokenList(OptionList):
    """The generated tokens of one side, each with the probability it was picked with."""

    def set_tokens(self, tokens: list[GenToken]) -> None:
        self.clear_options()
        for index, token in enumerate(tokens):
            prob = f"{token.prob:6.1%}" if token.prob is not None else "   –  "
            self.add_option(Option(Text(f"{index + 1:>4} {prob}  {show_token(token.text)}")))


class AlternativeList(OptionList):
    """The alternatives at one step, most likely first; the chosen token is marked."""

    def set_alternatives(self, alternatives: tuple[Alternative, ...], chosen: int) -> None:
        self.clear_options()
        for alt in alternatives:
            line = Text()
            line.append("▶ " if alt.id == chosen else "  ", style="bold")
            line.append(prob_bar(alt.prob), style="green" if alt.id == chosen else "cyan")
            line.append(f" {alt.prob:6.1%}  ")
            line.append(show_token(alt.text), style="bold" if alt.id == chosen else "")
            self.add_option(Option(line, id=f"alt-{alt.id}"))
        if alternatives:
            self.highlighted = 0
