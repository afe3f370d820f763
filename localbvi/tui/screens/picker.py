"""The model picker: every catalog and on-disk model, filtered as you type."""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar, cast

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Footer, Input, Label, OptionList

from localbvi.tui.services import all_models
from localbvi.tui.state import ModelChoice
from localbvi.tui.widgets.model_list import ModelList

if TYPE_CHECKING:
    from localbvi.tui.app import LocalbviApp

__all__ = ["PickerScreen"]


class PickerScreen(ModalScreen[ModelChoice | None]):
    """Pick a model to load; one not on disk is downloaded first (progress in Downloads)."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "dismiss_picker", "Close", id="picker.close"),
        Binding("enter", "pick", "Load", id="picker.load", priority=True),
        Binding(
            "ctrl+f",
            "search_hub",
            "Search Hub",
            id="picker.search_hub",
            tooltip="Find any GGUF model on the Hugging Face Hub (the filter text is the query)",
        ),
        Binding("down", "move(1)", "Next", id="picker.next", show=False, priority=True),
        Binding("up", "move(-1)", "Previous", id="picker.previous", show=False, priority=True),
    ]

    def compose(self) -> ComposeResult:
        with Vertical(id="picker-dialog", classes="dialog"):
            yield Label("Models", classes="dialog-title")
            yield Input(placeholder="Type to filter: name, base/instruct, quant…", id="filter")
            yield ModelList(id="models")
            yield Label("Loading the model list…", id="picker-note", classes="dialog-note")
        yield Footer()

    def on_mount(self) -> None:
        self._list_models()

    @work(thread=True, exit_on_error=False)
    def _list_models(self) -> None:
        app = cast("LocalbviApp", self.app)
        try:
            models = all_models(app.services, app.settings.engine.n_ctx, app.settings.remote)
            error = ""
        except Exception as exc:
            models, error = [], str(exc)
        self.app.call_from_thread(self._show, models, error)

    def _show(self, models: list[ModelChoice], error: str) -> None:
        model_list = self.query_one(ModelList)
        model_list.set_models(models, self.query_one("#filter", Input).value)
        app = cast("LocalbviApp", self.app)
        current = app.model.display_name if app.model else "none"
        note = error or (
            f"{len(models)} models · loaded: {current} · Enter loads (downloads first if needed)"
        )
        self.query_one("#picker-note", Label).update(note)

    @on(Input.Changed, "#filter")
    def _filter(self, event: Input.Changed) -> None:
        self.query_one(ModelList).filter(event.value)

    @on(OptionList.OptionSelected)
    def _selected(self, event: OptionList.OptionSelected) -> None:
        event.stop()
        self.action_pick()

    def action_move(self, step: int) -> None:
        model_list = self.query_one(ModelList)
        if step > 0:
            model_list.action_cursor_down()
        else:
            model_list.action_cursor_up()

    def action_pick(self) -> None:
        model = self.query_one(ModelList).selected_model()
        if model is None:
            self.notify("No model matches the filter")
            return
        self.dismiss(model)

    def action_search_hub(self) -> None:
        """Search the Hub with the filter's words; a picked result loads like a catalog model."""
        from localbvi.tui.screens.hub_search import HubSearchScreen

        def picked(choice: ModelChoice | None) -> None:
            if choice is not None:
                self.dismiss(choice)

        self.app.push_screen(HubSearchScreen(self.query_one("#filter", Input).value), picked)

    def action_dismiss_picker(self) -> None:
        self.dismiss(None)
