"""The first screen: what base and instruct mean, the catalog as pairs, and what is on disk."""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, ClassVar, cast

from rich.markup import escape
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.screen import Screen
from textual.widgets import Footer, Label, OptionList, Static

from localbvi.tui.services import all_models
from localbvi.tui.state import ModelChoice
from localbvi.tui.widgets.downloads_panel import DownloadsPanel
from localbvi.tui.widgets.model_list import ModelList
from localbvi.tui.widgets.pair_list import Pair, PairList

if TYPE_CHECKING:
    from localbvi.tui.app import LocalbviApp

__all__ = ["WelcomeScreen"]

INTRO = (
    "A [b]base[/b] model has only learned to continue text: give it the start of a document "
    "and it writes more of it. An [b]instruct[/b] model is the same network trained further "
    "on conversations in a chat template, so it answers you."
)

INCONTEXT_OFFER = (
    "No instruct model for {name} on disk. [b]c[/b]: chat with the base model through "
    "in-context examples: it continues a document of example questions and answers, with "
    "yours appended. It is not an instruct model: a base model imitating one."
)


class WelcomeScreen(Screen[None]):
    """Pick or download a pair; shown when the app starts without --model."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("d", "download_pair", "Download pair", id="welcome.download_pair"),
        Binding("enter", "open", "Open", id="welcome.open", show=True),
        Binding("escape", "skip", "Skip", id="welcome.skip"),
        Binding(
            "c",
            "chat_in_context",
            "Chat with base (in-context)",
            id="welcome.chat_in_context",
            tooltip="Chat with a base model through in-context examples (no instruct model "
            "on disk)",
        ),
    ]

    def compose(self) -> ComposeResult:
        # Not focusable itself: Tab goes between the two lists (and download rows), never to
        # the scroll container, where Enter would open nothing.
        with VerticalScroll(id="welcome", can_focus=False):
            yield Label("localbvi — local base vs instruct", classes="welcome-title")
            yield Static(INTRO, id="intro")
            yield Label("", id="offline-note")
            yield Label(
                "Catalog pairs — d downloads both, Enter opens the instruct one",
                classes="section-title",
            )
            yield PairList(id="pairs")
            yield Static("", id="incontext-offer")
            yield DownloadsPanel(active_only=True, id="welcome-downloads")
            yield Label("On disk — Enter opens", classes="section-title")
            yield ModelList(id="local")
            yield Label("", id="local-empty", classes="dialog-note")
        yield Footer()

    @property
    def lapp(self) -> LocalbviApp:
        return cast("LocalbviApp", self.app)

    def on_mount(self) -> None:
        self.watch(self.app, "online", self._online_changed)
        self.watch(self.app, "loading", self._loading_changed)
        # After the first frame: listing imports the store (and huggingface_hub) in a thread,
        # which would otherwise compete with drawing the screen.
        self.call_after_refresh(self.refresh_models)

    def _online_changed(self, online: bool | None) -> None:
        note = self.query_one("#offline-note", Label)
        note.display = online is False
        note.update("⚠ Offline: the Hub cannot be reached, so only models on disk can be opened.")

    def _loading_changed(self, loading: str | None) -> None:
        note = self.query_one("#local-empty", Label)
        if loading:
            note.update(f"Loading {loading}…")
            note.display = True
        else:
            self._update_local_note()

    @work(thread=True, exclusive=True, exit_on_error=False)
    def refresh_models(self) -> None:
        """List pairs and local files without blocking the first frame."""
        app = self.lapp
        try:
            n_ctx = app.settings.engine.n_ctx
            pairs = app.services.catalog_pairs(n_ctx)
            local = app.services.local_models(n_ctx)
            models = all_models(app.services, n_ctx)
        except Exception as exc:
            self.app.call_from_thread(self.notify, str(exc), severity="error")
            return
        on_disk = {m.ref: m.path for m in models if m.path}
        pairs = [
            (replace(b, path=on_disk.get(b.ref)), replace(i, path=on_disk.get(i.ref)))
            for b, i in pairs
        ]
        self.app.call_from_thread(self._show, pairs, local)

    def _show(self, pairs: list[Pair], local: list[ModelChoice]) -> None:
        self.query_one(PairList).set_pairs(pairs)
        self.query_one(ModelList).set_models(local)
        self.query_one(ModelList).display = bool(local)
        self._update_local_note()
        focus = self.query_one(ModelList) if local else self.query_one(PairList)
        focus.focus()
        self._update_offer()

    def incontext_choice(self) -> ModelChoice | None:
        """The base model to chat with through in-context examples, when no instruct model
        is at hand: the highlighted base on disk, the highlighted pair's base when its
        instruct half is not downloaded, or the only kind of model on disk."""
        local = self.query_one(ModelList)
        if self.focused is local:
            model = local.selected_model()
            if model is not None and model.kind == "base" and model.downloaded:
                return model
        pair = self.query_one(PairList).selected_pair()
        if pair is not None:
            base, instruct = pair
            if base.downloaded and not instruct.downloaded:
                return base
        on_disk = [m for m in local.models if m.downloaded]
        bases = [m for m in on_disk if m.kind == "base"]
        if bases and not any(m.kind == "instruct" for m in on_disk):
            return bases[0]
        return None

    def _update_offer(self) -> None:
        offer = self.query_one("#incontext-offer", Static)
        choice = self.incontext_choice()
        offer.display = choice is not None
        if choice is not None:
            offer.update(INCONTEXT_OFFER.format(name=escape(choice.display_name)))
        self.refresh_bindings()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "chat_in_context":
            return self.incontext_choice() is not None  # hidden from the footer otherwise
        return True

    def action_chat_in_context(self) -> None:
        choice = self.incontext_choice()
        if choice is None:
            self.notify("An instruct model is on disk: Enter opens it", severity="warning")
            return
        self.lapp.chat_in_context(choice)

    @on(OptionList.OptionHighlighted)
    def _highlighted(self, event: OptionList.OptionHighlighted) -> None:
        self._update_offer()

    def on_descendant_focus(self) -> None:
        self._update_offer()

    def _update_local_note(self) -> None:
        note = self.query_one("#local-empty", Label)
        empty = not self.query_one(ModelList).models
        note.update("Nothing on disk yet: download a pair above (d)." if empty else "")
        note.display = empty

    @on(OptionList.OptionSelected)
    def _selected(self, event: OptionList.OptionSelected) -> None:
        event.stop()
        self.action_open(event.option_list)

    def action_open(self, source: OptionList | None = None) -> None:
        widget = source or self.focused
        if not isinstance(widget, OptionList):
            # Focus elsewhere (a download row): open what the "On disk" list highlights.
            widget = self.query_one(ModelList) if self.query_one(ModelList).models else None
        if isinstance(widget, ModelList):
            model = widget.selected_model()
            if model is not None:
                self.lapp.choose(model)
        elif isinstance(widget, PairList):
            pair = widget.selected_pair()
            if pair is None:
                return
            _base, instruct = pair
            if instruct.downloaded:
                self.lapp.choose(instruct)
            else:
                self.action_download_pair()

    def action_download_pair(self) -> None:
        pair = self.query_one(PairList).selected_pair()
        if pair is None:
            self.notify("No catalog pair to download")
            return
        if self.lapp.online is False:
            hint = ""
            if self.incontext_choice() is not None:
                hint = "; c chats with the base model through in-context examples"
            self.notify(f"Offline: downloads need the network{hint}", severity="warning")
            return
        base, instruct = pair
        if not base.downloaded:
            self.lapp.start_download(base)
        if instruct.downloaded:
            self.lapp.choose(instruct)
        else:
            self.lapp.start_download(instruct, then_load=True)

    def action_skip(self) -> None:
        self.lapp.show_main()
