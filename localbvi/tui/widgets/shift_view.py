"""The instruct answer with each token coloured by how the base model ranked it, and a cursor.

Left/right (or a click) moves the cursor; the screen shows the token under it in detail. The
pure renderers below (`summary_text`, `token_detail`) draw the figures of a `ShiftResult`
(percentages, the most shifted tokens, KL by position) and the alternatives at one token.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from rich.style import Style
from rich.text import Text
from textual import events
from textual.binding import Binding, BindingType
from textual.message import Message
from textual.reactive import reactive
from textual.widgets import Static

from localbvi.errors import printable
from localbvi.lab.shift import PAPER_FIGURES, Category, ShiftResult, sparkline
from localbvi.tui.widgets.token_probs import prob_bar, show_token

__all__ = ["CATEGORY_STYLES", "ShiftView", "summary_text", "token_detail"]

CATEGORY_STYLES: dict[Category, str] = {
    "unshifted": "",
    "marginal": "bold yellow",
    "shifted": "bold white on dark_red",
}
"""How each category looks in the reply (unshifted tokens stay plain: they are most of it)."""

LEGEND: tuple[tuple[Category, str], ...] = (
    ("unshifted", "unshifted: the base model's own first choice"),
    ("marginal", "marginal: its 2nd or 3rd choice"),
    ("shifted", "shifted: ranked lower"),
)

SPARK_WIDTH = 60


class ShiftView(Static, can_focus=True):
    """The answer token by token; the selected token is shown reversed."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("left", "move(-1)", "Previous token", id="shift.previous", show=False),
        Binding("right", "move(1)", "Next token", id="shift.next", show=False),
        Binding("home", "move_to(0)", "First token", id="shift.first", show=False),
        Binding("end", "move_to(-1)", "Last token", id="shift.last", show=False),
        Binding("n", "next_shifted", "Next shifted", id="shift.next_shifted"),
    ]

    index: reactive[int] = reactive(0, init=False)

    @dataclass
    class Moved(Message):
        """The cursor moved to token `index` (by key or click)."""

        view: ShiftView
        index: int

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__("", id=id)
        self.result: ShiftResult | None = None
        self._streamed = ""

    # -- content ----------------------------------------------------------------------------

    def show_text(self, text: str, style: str = "") -> None:
        """Plain text (a note, an error, the answer as it streams), no tokens to select."""
        self.result = None
        self._streamed = text
        self.update(Text(printable(text), style=style))

    def stream(self, text: str) -> None:
        """More of the instruct answer while it is written (coloured once it is scored)."""
        self._streamed += text
        self.update(Text(printable(self._streamed)))

    def show_result(self, result: ShiftResult) -> None:
        self.result = result
        self.index = 0
        self._draw()
        self.post_message(self.Moved(self, 0))

    def _draw(self) -> None:
        result = self.result
        if result is None:
            return
        text = Text()
        for i, token in enumerate(result.tokens):
            shown = printable(token.text)
            style = Style.parse(CATEGORY_STYLES[token.category] or "none")
            if i == self.index:
                # Whitespace is a token too: make it visible where the cursor is.
                if not shown.strip():
                    shown = shown.replace(" ", "·").replace("\n", "↵\n") or "∅"
                style = style + Style(reverse=True, underline=True)
            text.append(shown, style + Style(meta={"token": i}))
        self.update(text)

    def watch_index(self) -> None:
        self._draw()

    # -- moving -----------------------------------------------------------------------------

    def move_to(self, index: int) -> None:
        if self.result is None or not self.result.tokens:
            return
        n = len(self.result.tokens)
        index = max(0, min(index if index >= 0 else n + index, n - 1))
        self.index = index
        self.post_message(self.Moved(self, index))

    def action_move(self, step: int) -> None:
        self.move_to(self.index + step)

    def action_move_to(self, index: int) -> None:
        self.move_to(index)

    def action_next_shifted(self) -> None:
        """The next shifted token after the cursor (wrapping round)."""
        if self.result is None:
            return
        tokens = self.result.tokens
        for step in range(1, len(tokens) + 1):
            i = (self.index + step) % len(tokens)
            if tokens[i].category == "shifted":
                self.move_to(i)
                return
        self.notify("No shifted token in this answer")

    def on_click(self, event: events.Click) -> None:
        index = event.style.meta.get("token")
        if isinstance(index, int):
            self.focus()
            self.move_to(index)


# -- the figures ------------------------------------------------------------------------------


def _pct(value: float) -> str:
    return f"{value:.1f} %"


def summary_text(result: ShiftResult, index: int | None = None) -> Text:
    """Legend, percentages, most shifted tokens, KL by position (a caret under `index`)."""
    pct, counts = result.percentages(), result.counts()
    out = Text()
    for cat, words in LEGEND:
        out.append(" ■ ", style=CATEGORY_STYLES[cat] or "bold")
        out.append(f"{words}  ")
    out.append("\n")
    out.append(f"{len(result.tokens)} tokens:  ")
    for cat, _ in LEGEND:
        out.append(f"{cat} {_pct(pct[cat])}", style=CATEGORY_STYLES[cat] or "bold")
        out.append(f" ({counts[cat]})   ")
    out.append("\n")
    top = result.top_shifted(8)
    out.append("most shifted: ")
    if top:
        out.append(", ".join(f"{show_token(printable(t))} ×{n}" for t, n in top))
    else:
        out.append("none: every token is among the base model's top 3", style="dim")
    out.append("\n")
    series = result.kl_series()
    width = min(SPARK_WIDTH, len(series))
    line = sparkline(series, width)
    label = "KL by position: "
    out.append(label)
    out.append(line, style="cyan")
    if series:
        out.append(f"  max {max(series):.2f}", style="dim")
    if index is not None and series and width:
        col = min(width - 1, index * width // len(series))
        out.append("\n" + " " * (len(label) + col) + "▲", style="bold")
    out.append("\n")
    paper = " · ".join(f"{name} {u} / {m} / {s} %" for name, u, m, s in PAPER_FIGURES)
    out.append(f"Lin et al. 2024, unshifted / marginal / shifted: {paper}", style="dim")
    return out


def token_detail(result: ShiftResult, index: int) -> Text:
    """One token as both models saw it, and the base model's own top choices there."""
    token = result.tokens[index]
    out = Text()
    out.append(f"token {index + 1} of {len(result.tokens)}: ")
    out.append(show_token(printable(token.text)), style="bold")
    out.append("  ")
    out.append(token.category, style=CATEGORY_STYLES[token.category] or "bold")
    out.append("\n")
    out.append(f"rank in the base model: {token.rank}\n")
    out.append(f"base prob {token.base_prob:.1%}\ninstruct prob {token.instruct_prob:.1%}\n")
    out.append(f"KL (instruct ‖ base, top-k): {token.kl:.3f}\n\n")
    out.append("The base model's top choices here:\n", style="underline")
    for alt in token.base_alternatives:
        chosen = alt.id == token.id
        out.append("▶ " if chosen else "  ", style="bold")
        out.append(prob_bar(alt.prob, 12), style="green" if chosen else "cyan")
        out.append(f" {alt.prob:6.1%}  ")
        out.append(show_token(printable(alt.text)) + "\n", style="bold" if chosen else "")
    if not any(alt.id == token.id for alt in token.base_alternatives):
        out.append("  (the instruct model's token is not among them)\n", style="dim")
    out.append(f"\nframe: {result.frame}", style="dim")
    return out
