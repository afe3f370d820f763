"""Token probabilities of one side: pick a generated token, see its alternatives, branch."""

from __future__ import annotations

from typing import ClassVar

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Footer, Label, OptionList

from localbvi.engine.types import Alternative
from localbvi.lab.compare import SideRun
from localbvi.tui.widgets.token_probs import AlternativeList, TokenList, show_token

__all__ = ["Branch", "TokenProbsScreen"]

Branch = tuple[int, Alternative]
"""The token index to replace and the alternative to put there."""


class TokenProbsScreen(ModalScreen[Branch | None]):
    """Left: the generated tokens. Right: the highlighted token's top-k alternatives as bars.
    Enter on an alternative dismisses with it, and the compare view branches from there."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "dismiss_none", "Close", id="probs.close"),
        Binding("tab", "app.focus_next", "Tokens / alternatives", id="probs.switch", show=False),
    ]

    def __init__(self, run: SideRun, title: str) -> None:
        super().__init__()
        self.run = run
        self.title_text = title

    def compose(self) -> ComposeResult:
        with Vertical(id="probs-dialog"):
            yield Label(f"Token probabilities · {self.title_text}", id="probs-title")
            yield Label(
                "↑↓ picks a generated token; tab moves to its alternatives; enter on one "
                "branches the generation from there.",
                id="probs-hint",
            )
            with Horizontal(id="probs-lists"):
                yield TokenList(id="probs-tokens")
                yield AlternativeList(id="probs-alternatives")
        yield Footer()

    def on_mount(self) -> None:
        tokens = self.query_one(TokenList)
        tokens.set_tokens(self.run.tokens)
        if self.run.tokens:
            tokens.highlighted = 0
        tokens.focus()

    @on(OptionList.OptionHighlighted, "#probs-tokens")
    def _token_highlighted(self, event: OptionList.OptionHighlighted) -> None:
        self.show_alternatives(event.option_index)

    @on(OptionList.OptionSelected, "#probs-tokens")
    def _token_selected(self, event: OptionList.OptionSelected) -> None:
        self.query_one(AlternativeList).focus()

    def show_alternatives(self, index: int) -> None:
        token = self.run.tokens[index]
        alternatives = self.query_one(AlternativeList)
        alternatives.set_alternatives(token.alternatives, token.id)
        alternatives.border_title = f"token {index + 1}: {show_token(token.text)}"

    @property
    def selected_index(self) -> int | None:
        return self.query_one(TokenList).highlighted

    @on(OptionList.OptionSelected, "#probs-alternatives")
    def _alternative_selected(self, event: OptionList.OptionSelected) -> None:
        index = self.selected_index
        if index is None:
            return
        token = self.run.tokens[index]
        alternative = token.alternatives[event.option_index]
        if alternative.id == token.id:
            self.notify("That is the token the model chose: pick another to branch")
            return
        self.dismiss((index, alternative))

    def action_dismiss_none(self) -> None:
        self.dismiss(None)
