"""Every key binding of the app, by where it works (built from the classes' BINDINGS)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, ClassVar, cast

from rich.table import Table
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Footer, Label, Static

if TYPE_CHECKING:
    from localbvi.tui.app import LocalbviApp

__all__ = ["HelpScreen", "binding_groups", "binding_ids"]


def _bindings(
    bindings: list[BindingType], keymap: Mapping[str, str] | None = None
) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    keymap = keymap or {}
    for item in bindings:
        binding = item if isinstance(item, Binding) else Binding(*item)
        if binding.description:
            key = keymap.get(binding.id or "", binding.key)  # a settings-file override
            out.append((key.replace(",", " / "), binding.description))
    return out


def _binding_classes() -> list[tuple[str, list[BindingType]]]:
    from localbvi.tui.app import LocalbviApp
    from localbvi.tui.screens.compare import CompareScreen
    from localbvi.tui.screens.confirm import ConfirmScreen
    from localbvi.tui.screens.downloads import DownloadsScreen
    from localbvi.tui.screens.log import LogScreen
    from localbvi.tui.screens.main import MainScreen
    from localbvi.tui.screens.picker import PickerScreen
    from localbvi.tui.screens.sessions import SessionsScreen
    from localbvi.tui.screens.settings import SettingsScreen
    from localbvi.tui.screens.shift import ShiftScreen
    from localbvi.tui.screens.welcome import WelcomeScreen
    from localbvi.tui.widgets.chat_message import ChatMessage
    from localbvi.tui.widgets.chat_view import ChatView
    from localbvi.tui.widgets.completion_view import CompletionView
    from localbvi.tui.widgets.downloads_panel import DownloadRow
    from localbvi.tui.widgets.shift_view import ShiftView

    return [
        ("app", LocalbviApp.BINDINGS),
        ("main", MainScreen.BINDINGS),
        ("chat", ChatView.BINDINGS),
        ("message", ChatMessage.BINDINGS),
        ("completion", CompletionView.BINDINGS),
        ("compare", CompareScreen.BINDINGS),
        ("shift", ShiftScreen.BINDINGS + ShiftView.BINDINGS),
        ("welcome", WelcomeScreen.BINDINGS),
        ("picker", PickerScreen.BINDINGS),
        ("sessions", SessionsScreen.BINDINGS),
        ("confirm", ConfirmScreen.BINDINGS),
        ("settings", SettingsScreen.BINDINGS),
        ("downloads", DownloadsScreen.BINDINGS + DownloadRow.BINDINGS),
        ("log", LogScreen.BINDINGS),
        ("help", HelpScreen.BINDINGS),
    ]


def binding_ids() -> set[str]:
    """Every binding id a settings file's `[keys]` may rebind."""
    return {
        item.id
        for _, bindings in _binding_classes()
        for item in bindings
        if isinstance(item, Binding) and item.id
    }


def binding_groups(
    keymap: Mapping[str, str] | None = None,
) -> list[tuple[str, list[tuple[str, str]]]]:
    """(area, [(keys, description)]) for every screen and widget that binds keys.

    `keymap` (binding id → key, the settings file's `[keys]`) replaces the default keys.
    """
    b = dict(_binding_classes())
    km = keymap or {}
    return [
        ("Everywhere", [*_bindings(b["app"], km), ("ctrl+p", "Command palette: every action")]),
        ("Main screen", _bindings(b["main"], km)),
        ("Chat mode", [("enter", "Send the message"), *_bindings(b["chat"], km)]),
        ("A focused chat message", _bindings(b["message"], km)),
        ("Completion mode", _bindings(b["completion"], km)),
        ("Compare (ctrl+b)", [("enter", "Run the prompt on both"), *_bindings(b["compare"], km)]),
        ("Token shift (f9 in compare or after a chat reply)", _shift_rows(b["shift"], km)),
        ("Welcome", _bindings(b["welcome"], km)),
        ("Model picker", [("type", "Filter the list"), *_bindings(b["picker"], km)]),
        ("Sessions", [("type", "Search the text"), *_bindings(b["sessions"], km)]),
        ("Settings", _bindings(b["settings"], km)),
        ("Downloads", _bindings(b["downloads"], km)),
        ("Log", _bindings(b["log"], km)),
        ("Help", _bindings(b["help"], km)),
    ]


def _shift_rows(bindings: list[BindingType], km: Mapping[str, str]) -> list[tuple[str, str]]:
    """The shift view's keys, what its colours mean and the paper's figures to compare with."""
    from localbvi.lab.shift import PAPER_FIGURES

    rows = [
        ("click", "Pick a token: the base model's alternatives there"),
        *_bindings(bindings, km),
    ]
    ranks = "1 unshifted, 2-3 marginal, lower shifted (Lin et al., ICLR 2024)"
    rows.append(("", f"Rank of each instruct token in the base model: {ranks}"))
    rows += [
        ("", f"The paper, {name}: {u} / {m} / {s} % (unshifted / marginal / shifted)")
        for name, u, m, s in PAPER_FIGURES
    ]
    return rows


class HelpScreen(ModalScreen[None]):
    """The full list of keys; the footer only shows the main ones."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape,f1", "app.pop_screen", "Close", id="help.close")
    ]

    def compose(self) -> ComposeResult:
        table = Table(box=None, show_header=False, padding=(0, 2, 0, 0), expand=False)
        table.add_column("keys", style="bold", no_wrap=True)
        table.add_column("action")
        keymap = cast("LocalbviApp", self.app).settings.keys
        for area, rows in binding_groups(keymap):
            table.add_row(f"[underline]{area}[/]", "")
            for keys, description in rows:
                table.add_row(keys, description)
            table.add_row("", "")
        with Vertical(id="help-dialog", classes="dialog"):
            yield Label("Keys", classes="dialog-title")
            with VerticalScroll():
                yield Static(table)
        yield Footer()
