"""Every key binding of the app, by where it works (built from the classes' BINDINGS)."""

from __future__ import annotations

from typing import ClassVar

from rich.table import Table
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Footer, Label, Static

__all__ = ["HelpScreen", "binding_groups"]


def _bindings(bindings: list[BindingType]) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    for item in bindings:
        binding = item if isinstance(item, Binding) else Binding(*item)
        if binding.description:
            out.append((binding.key.replace(",", " / "), binding.description))
    return out


def binding_groups() -> list[tuple[str, list[tuple[str, str]]]]:
    """(area, [(keys, description)]) for every screen and widget that binds keys."""
    from localbvi.tui.app import LocalbviApp
    from localbvi.tui.screens.downloads import DownloadsScreen
    from localbvi.tui.screens.log import LogScreen
    from localbvi.tui.screens.main import MainScreen
    from localbvi.tui.screens.picker import PickerScreen
    from localbvi.tui.screens.settings import SettingsScreen
    from localbvi.tui.screens.welcome import WelcomeScreen
    from localbvi.tui.widgets.chat_message import ChatMessage
    from localbvi.tui.widgets.chat_view import ChatView
    from localbvi.tui.widgets.completion_view import CompletionView
    from localbvi.tui.widgets.downloads_panel import DownloadRow

    return [
        (
            "Everywhere",
            [*_bindings(LocalbviApp.BINDINGS), ("ctrl+p", "Command palette: every action")],
        ),
        ("Main screen", _bindings(MainScreen.BINDINGS)),
        ("Chat mode", [("enter", "Send the message"), *_bindings(ChatView.BINDINGS)]),
        ("A focused chat message", _bindings(ChatMessage.BINDINGS)),
        ("Completion mode", _bindings(CompletionView.BINDINGS)),
        ("Welcome", _bindings(WelcomeScreen.BINDINGS)),
        ("Model picker", [("type", "Filter the list"), *_bindings(PickerScreen.BINDINGS)]),
        ("Settings", _bindings(SettingsScreen.BINDINGS)),
        ("Downloads", _bindings(DownloadsScreen.BINDINGS) + _bindings(DownloadRow.BINDINGS)),
        ("Log", _bindings(LogScreen.BINDINGS)),
        ("Help", _bindings(HelpScreen.BINDINGS)),
    ]


class HelpScreen(ModalScreen[None]):
    """The full list of keys; the footer only shows the main ones."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape,f1", "app.pop_screen", "Close", id="help.close")
    ]

    def compose(self) -> ComposeResult:
        table = Table(box=None, show_header=False, padding=(0, 2, 0, 0), expand=False)
        table.add_column("keys", style="bold", no_wrap=True)
        table.add_column("action")
        for area, rows in binding_groups():
            table.add_row(f"[underline]{area}[/]", "")
            for keys, description in rows:
                table.add_row(keys, description)
            table.add_row("", "")
        with Vertical(id="help-dialog", classes="dialog"):
            yield Label("Keys", classes="dialog-title")
            with VerticalScroll():
                yield Static(table)
        yield Footer()
