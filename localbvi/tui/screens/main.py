"""The main screen: the chat or completion view, the status bar and the footer."""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar, cast

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.screen import Screen
from textual.widgets import ContentSwitcher, Footer, Label

from localbvi.engine.types import Mode
from localbvi.tui.messages import GenerationFinished
from localbvi.tui.widgets.chat_view import ChatView
from localbvi.tui.widgets.completion_view import CompletionView
from localbvi.tui.widgets.status_bar import StatusBar
from localbvi.tui.widgets.streaming_view import StreamingView

if TYPE_CHECKING:
    from localbvi.tui.app import LocalbviApp

__all__ = ["MainScreen"]


class MainScreen(Screen[None]):
    """Where the user talks to (chat) or writes with (completion) the loaded model."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding(
            "ctrl+t",
            "app.toggle_mode",
            "Mode",
            id="main.toggle_mode",
            tooltip="Switch between chat and completion mode",
        ),
        Binding(
            "f9",
            "shift",
            "Token shift",
            id="main.shift",
            show=False,
            tooltip="The instruct model's reply scored token by token by its base sibling",
        ),
    ]

    def compose(self) -> ComposeResult:
        app = cast("LocalbviApp", self.app)
        yield Label("", id="model-banner")
        with ContentSwitcher(initial="chat", id="views"):
            yield ChatView(system_prompt=app.system_prompt, id="chat")
            yield CompletionView(id="completion")
        yield StatusBar(id="status")
        yield Footer()

    def on_mount(self) -> None:
        cast("LocalbviApp", self.app).main_mounted(self)

    @property
    def status(self) -> StatusBar:
        return self.query_one(StatusBar)

    @property
    def chat(self) -> ChatView:
        return self.query_one(ChatView)

    @property
    def completion(self) -> CompletionView:
        return self.query_one(CompletionView)

    def active_view(self) -> StreamingView:
        return self.chat if self.query_one(ContentSwitcher).current == "chat" else self.completion

    def show_mode(self, mode: Mode) -> None:
        """Switch the visible view; a running generation in the other view is stopped."""
        switcher = self.query_one(ContentSwitcher)
        if switcher.current != mode:
            self.active_view().cancel_generation()
            switcher.current = mode
        self.status.mode = mode
        self.focus_input()

    def focus_input(self) -> None:
        if self.query_one(ContentSwitcher).current == "chat":
            self.chat.prompt.focus()
        else:
            self.completion.document.focus()

    def action_shift(self) -> None:
        """Token shift view on the focused (else the last) chat reply (issue 10)."""
        from localbvi.tui.screens.shift import open_shift_from_chat

        open_shift_from_chat(cast("LocalbviApp", self.app))

    def show_banner(self, text: str) -> None:
        banner = self.query_one("#model-banner", Label)
        banner.update(text)
        banner.display = bool(text)

    @on(GenerationFinished)
    def _generation_finished(self, message: GenerationFinished) -> None:
        self.status.set_done(message.done)
        if message.done.notice:  # the engine reloaded the model to serve this request
            model = getattr(self.app, "model", None)
            info = getattr(getattr(model, "engine", None), "info", None)
            if info is not None:
                self.status.device = info.device
            self.notify(message.done.notice, severity="warning", timeout=8)
