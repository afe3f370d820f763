"""The Textual app: holds the engine, the loaded model, settings and downloads.

Every engine or store call blocks, so it runs in a thread worker and reports back with a
Message; the UI thread only draws. `make_app` builds the app for the CLI and for tests.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from textual import on, work
from textual.app import App
from textual.binding import Binding, BindingType
from textual.reactive import reactive
from textual.screen import Screen

from localbvi.engine.base import Engine
from localbvi.engine.host import ModelHost
from localbvi.engine.types import MODES, Event, Kind, LoadInfo, Message, Mode
from localbvi.errors import LocalbviError, SettingsError
from localbvi.settings import Settings, load_settings, save_settings
from localbvi.tui.commands import ModelCommands, ScreenCommands
from localbvi.tui.downloads import Downloads, DownloadTask
from localbvi.tui.messages import (
    DownloadUpdated,
    ModelLoaded,
    ModelLoadFailed,
    ModelLoading,
    OnlineChecked,
)
from localbvi.tui.services import Services
from localbvi.tui.session_log import SessionLog
from localbvi.tui.state import (
    AppSettings,
    ModelChoice,
    default_mode,
)

if TYPE_CHECKING:
    # Imported when first shown: with no --model the welcome screen comes first, and the
    # chat/completion widgets (TextArea, Markdown) need not slow the first frame.
    from localbvi.sessions import SessionRecord
    from localbvi.store.hub import Progress
    from localbvi.store.refs import ResolvedModel
    from localbvi.tui.screens.main import MainScreen

__all__ = ["LoadedModel", "LocalbviApp", "make_app"]

LESSONS: dict[tuple[Kind, Mode], str] = {
    ("instruct", "chat"): "Instruct model, chat mode: your messages go through its chat "
    "template, and it answers.",
    ("base", "completion"): "Base model, raw completion: it continues whatever text you write.",
    ("instruct", "completion"): "Instruct model run raw: no template, so it just continues "
    "the text.",
    ("base", "chat"): "Base model through a chat template it was never trained on: watch "
    "what it does.",
}

INCONTEXT_LABEL = "in-context chat"
"""The status bar's mode for a base model chatting through in-context examples."""
INCONTEXT_LESSON = (
    "Base model, chat through in-context examples: not an instruct model. It continues a "
    "document — a preamble and example # Query / # Answer exchanges ({source}) — with your "
    "conversation appended as further queries, and stops at the next # Query."
)
INCONTEXT_TITLE = "Base model · in-context examples"
"""The heading of its replies in the transcript."""


@dataclass(frozen=True)
class LoadedModel:
    """The model the engine holds, as the UI names it."""

    ref: str
    display_name: str
    kind: Kind
    info: LoadInfo


class LocalbviApp(App[int]):
    """Run a base model and its instruct sibling, and see the difference."""

    TITLE = "localbvi"
    SUB_TITLE = "local base vs instruct"
    CSS_PATH = "app.tcss"
    COMMANDS: ClassVar = App.COMMANDS | {ScreenCommands, ModelCommands}

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("ctrl+q", "quit", "Quit", id="app.quit", priority=True),
        Binding("ctrl+o", "pick_model", "Models", id="app.models"),
        Binding(
            "ctrl+b",
            "compare",
            "Compare",
            id="app.compare",
            show=False,
            tooltip="Base vs instruct side by side: the loaded model and its catalog sibling",
        ),
        Binding("ctrl+s", "settings", "Settings", id="app.settings"),
        Binding(
            "f8",
            "sessions",
            "Sessions",
            id="app.sessions",
            tooltip="Saved chats, documents and comparisons: reopen, search, export, delete",
        ),
        Binding("f1", "help", "Help", id="app.help"),
        Binding("f5", "downloads", "Downloads", id="app.downloads", show=False),
        Binding("ctrl+l", "log", "Log", id="app.log", show=False),
    ]

    mode: reactive[Mode] = reactive("chat", init=False)
    online: reactive[bool | None] = reactive(None, init=False)
    loading: reactive[str | None] = reactive(None, init=False)

    def __init__(
        self,
        engine: Engine,
        *,
        services: Services,
        settings: Settings | None = None,
        model_ref: str | None = None,
        mode: Mode | None = None,
        check_online: bool = True,
        settings_problem: str | None = None,
        sessions: SessionLog | None = None,
        system_prompt: str = "",
    ) -> None:
        super().__init__()
        self.services = services
        self.settings = settings or Settings()
        """The settings file's values: the one source of truth, written back by Save."""
        self.system_prompt = system_prompt
        """The system prompt of new chats (this run only: the settings file has no such key)."""
        self._settings_problem = settings_problem
        self.sessions = sessions or SessionLog(self._sessions_failed)
        self.downloads = Downloads()
        self.host = ModelHost(engine, settings=self.settings, resolve=services.resolve)
        """Opens models: `engine` (llama.cpp or fake) for files, a RemoteEngine for servers."""
        self.engine_lock = self.host.lock
        """Held while the engine loads or generates: it does one thing at a time."""
        self.model: LoadedModel | None = None
        self._model_ref = model_ref
        self._requested_mode = mode
        self._check_online = check_online
        self._main: MainScreen | None = None
        self._activity = ""

    # -- screens ----------------------------------------------------------------------------

    def get_default_screen(self) -> Screen[None]:
        # Without --model the welcome screen comes first and the main screen is built when
        # it is needed: composing both before the first frame slowed startup by a third.
        if self._model_ref:
            from localbvi.tui.screens.main import MainScreen

            return MainScreen()
        from localbvi.tui.screens.welcome import WelcomeScreen

        return WelcomeScreen()

    @property
    def main(self) -> MainScreen:
        """The main screen (chat/completion views, status bar), once it is shown."""
        assert self._main is not None, "the main screen is not shown yet"
        return self._main

    def on_mount(self) -> None:
        self._apply_settings_file()
        if self._requested_mode is not None:
            self.mode = self._requested_mode
        if self._check_online:
            self._probe_online()
        if self._model_ref:
            self.open_model(self._model_ref)

    def main_mounted(self, screen: MainScreen) -> None:
        """The main screen exists: draw the app's current state on it."""
        self._main = screen
        if self.model is not None:
            screen.status.set_model(self.model.display_name, self.model.kind, self.model.info)
        screen.status.activity = self._activity
        screen.show_mode(self.mode)
        self._show_lesson()

    def show_main(self) -> None:
        """Leave the welcome screen for the main screen (built on first use)."""
        from localbvi.tui.screens.main import MainScreen
        from localbvi.tui.screens.welcome import WelcomeScreen

        if any(isinstance(screen, MainScreen) for screen in self.screen_stack):
            while isinstance(self.screen, WelcomeScreen) and len(self.screen_stack) > 1:
                self.pop_screen()
            return
        while len(self.screen_stack) > 1:  # dialogs opened over the welcome screen
            self.pop_screen()
        # The welcome screen is the base screen here; the main screen goes over it.
        self.push_screen(MainScreen())

    def on_unmount(self) -> None:
        # Stop a reply mid-stream so its worker thread ends, then free the model process.
        self.host.close()
        self.sessions.close()

    # -- settings file ----------------------------------------------------------------------

    def _apply_settings_file(self) -> None:
        """Theme and key overrides from the settings file; its problems as a notification."""
        from textual.app import InvalidThemeError

        if self._settings_problem:
            self.notify(
                self._settings_problem,
                title="Settings file has problems: defaults used there",
                severity="warning",
                timeout=30,
            )
        try:
            self.theme = self.settings.theme
        except InvalidThemeError:
            themes = ", ".join(sorted(self.available_themes))
            self.notify(
                f"unknown theme {self.settings.theme!r} in the settings file: use one of {themes}",
                title="Settings",
                severity="warning",
                timeout=20,
            )
        self._apply_keymap()

    def _apply_keymap(self) -> None:
        from localbvi.tui.screens.help import binding_ids

        keys = dict(self.settings.keys)
        if not keys:
            return  # the help module imports every screen: only when there is a keymap
        known = binding_ids()
        unknown = sorted(set(keys) - known)
        if unknown:
            self.notify(
                f"unknown action id {', '.join(unknown)} in [keys]: ids look like "
                f"{', '.join(sorted(known)[:4])}… (F1 lists the keys)",
                title="Settings",
                severity="warning",
                timeout=20,
            )
        self.set_keymap({k: v for k, v in keys.items() if k in known})

    def settings_form(self) -> AppSettings:
        """What the settings screen edits."""
        return AppSettings.from_settings(self.settings, self.system_prompt)

    def save_settings_form(self, form: AppSettings) -> None:
        """Apply the settings screen's values and write the settings file."""
        reload_needed = form.load_fields_differ(self.settings_form())
        # The theme picked in the palette is saved with the rest.
        self.settings = replace(form.apply_to(self.settings), theme=self.theme)
        self.system_prompt = form.system_prompt
        try:
            saved = save_settings(self.settings)
        except SettingsError as exc:
            self.notify(str(exc), title="Settings not saved to a file", severity="error")
            return
        when = (
            "Context size, threads and GPU layers apply on the next load (ctrl+o to load a model)."
            if reload_needed and self.model is not None
            else "Sampling settings apply to the next request."
        )
        if saved.note:  # the settings file could not be read: it was left as it was
            self.notify(
                f"{saved.note}. {when}",
                title=f"Settings saved to {saved.path.name}",
                severity="warning",
                timeout=30,
            )
            return
        self.notify(f"{when} Written to {saved.path}", title="Settings saved")

    # -- sessions ---------------------------------------------------------------------------

    def _sessions_failed(self, error: str) -> None:
        """Called once, from the writer thread, when the sessions database fails."""
        with contextlib.suppress(RuntimeError):  # the app already stopped
            self.call_from_thread(
                self.notify,
                f"{error}. The chat goes on; it is not being saved.",
                title="Sessions are not saved",
                severity="warning",
                timeout=15,
            )

    def reopen_session(self, record: SessionRecord) -> None:
        """Show a saved session again, in its mode, with its model (loaded if needed)."""
        if record.kind == "compare":
            from localbvi.tui.screens.compare import open_saved_compare

            open_saved_compare(self, record)
            return
        mode: Mode = "completion" if record.mode == "completion" else "chat"
        self.show_main()
        self.call_after_refresh(self._restore_session, record, mode)

    def _restore_session(self, record: SessionRecord, mode: Mode) -> None:
        if self._main is None:  # the main screen is still being built
            self.call_after_refresh(self._restore_session, record, mode)
            return
        self.mode = mode
        if record.kind == "completion":
            self.main.completion.restore(record)
        else:
            self.main.chat.restore(record)
        model = self.model
        same = model is not None and record.model in (model.ref, model.info.path)
        if not same and record.model:
            self._requested_mode = mode
            self.open_model(record.model, download=False, session=True)
        self.notify(record.display_title, title="Session reopened")

    # -- state shown on the main screen -----------------------------------------------------

    def set_activity(self, text: str) -> None:
        """What the app is busy with, in the status bar ("" when idle)."""
        self._activity = text
        if self._main is not None:
            self._main.status.activity = text

    _base_via_template = False
    """A base model that has a chat template chats through it (ctrl+t), not in context."""
    _incontext_problem: str | None = None
    """The last problem of the user's incontext.toml that was shown (shown once)."""

    @property
    def in_context_chat(self) -> bool:
        """Chat mode with a base model: it answers through in-context examples (the issue's
        "base + in-context alignment"), unless the user chose its own chat template."""
        model = self.model
        if model is None or model.kind != "base" or self.mode != "chat":
            return False
        return not (self._base_via_template and model.info.chat_template)

    def watch_mode(self, mode: Mode) -> None:
        if self._main is not None:
            self._main.show_mode(mode)
        self._show_lesson()

    def _show_lesson(self) -> None:
        if self._main is None:
            return
        if self.model is None:
            self.main.show_banner(
                "No model loaded: press ctrl+o to pick one (base models continue text, "
                "instruct models answer)."
            )
        elif self.in_context_chat:
            from localbvi.lab.incontext import load_or_bundled

            incontext, problem = load_or_bundled()
            self._report_incontext_problem(problem)
            source = "bundled" if incontext.source == "bundled" else "from your incontext.toml"
            self.main.show_banner(INCONTEXT_LESSON.format(source=source))
        else:
            self.main.show_banner(LESSONS[(self.model.kind, self.mode)])
        self.main.status.mode = INCONTEXT_LABEL if self.in_context_chat else self.mode

    def _report_incontext_problem(self, problem: str | None) -> None:
        """One warning per new problem of the user's incontext.toml (it is never rewritten)."""
        if problem and problem != self._incontext_problem:
            self.notify(
                problem,
                title="In-context examples file has a problem",
                severity="warning",
                timeout=20,
            )
        self._incontext_problem = problem

    def chat_events(self, messages: Sequence[Message]) -> tuple[str, Callable[[], Iterator[Event]]]:
        """What a chat turn runs (called in the worker thread) and the heading of its reply.

        An instruct model (or a base model the user runs through its template) goes through
        the chat template; a base model answers through in-context examples: the preamble and
        examples, the conversation so far as earlier queries, the last message as the open
        query. The examples file is read at each turn, so an edit applies to the next reply.
        """
        engine, sampling = self.engine, self.settings.to_sampling()
        if not self.in_context_chat:
            return "", lambda: engine.chat(messages, sampling)

        def events() -> Iterator[Event]:
            from localbvi.lab.incontext import load_or_bundled, stream, tidy_answer

            incontext, problem = load_or_bundled()
            with contextlib.suppress(RuntimeError):  # the app already stopped
                self.call_from_thread(self._report_incontext_problem, problem)
            return tidy_answer(stream(engine, messages, sampling, incontext))

        return INCONTEXT_TITLE, events

    def ready_for_generation(self) -> bool:
        """True when a model can take a request; otherwise tell the user why not."""
        if self.loading:
            self.notify(f"{self.loading} is still loading", severity="warning")
            return False
        if self.model is None or self.engine.info is None:
            self.notify("No model loaded: press ctrl+o to pick one", severity="warning")
            return False
        return True

    def chat_in_context(self, choice: ModelChoice) -> None:
        """Open a base model straight into chat through in-context examples (the welcome
        screen's offer when no instruct model is on disk)."""
        model = self.model
        if model is not None and model.info.path in (choice.path, choice.ref):
            self._base_via_template = False
            self.mode = "chat"
            self._show_lesson()
            self.show_main()
            return
        self._requested_mode = "chat"
        self.choose(choice)

    # -- loading models ---------------------------------------------------------------------

    @property
    def engine(self) -> Engine:
        """The engine in use: the local one, or a RemoteEngine while a server is used."""
        return self.host.engine

    def choose(self, choice: ModelChoice) -> None:
        """Open a model picked in the picker or on the welcome screen."""
        if not choice.downloaded and not choice.remote and self.online is False:
            self.notify(
                f"{choice.display_name} is not on disk and localbvi is offline: "
                "pick a model on disk",
                severity="warning",
            )
            return
        # The demo model's file is assembled on first use: its catalog ref does that.
        ref = choice.ref if choice.source == "demo" else (choice.path or choice.ref)
        self.open_model(ref, display_name=choice.display_name)

    def open_model(
        self,
        ref: str,
        *,
        display_name: str | None = None,
        download: bool = True,
        session: bool = False,
    ) -> None:
        """Resolve (maybe download) and load `ref`, replacing the current model.

        `display_name`: the picker's name for it (else the host names it).
        `session`: the model of a reopened session (a failure says the text is still shown).
        """
        if self.loading:
            self.notify(f"Still loading {self.loading}: wait a moment", severity="warning")
            return
        name = display_name or Path(ref).name or ref
        self.loading = name
        self.set_activity(f"loading {name}…")
        self.host.settings = self.settings  # the [[remote]] servers and load options of now
        self._load(ref, name, display_name is not None, download, session)

    @work(thread=True, group="load", exit_on_error=False)
    def _load(self, ref: str, name: str, named: bool, download: bool, session: bool) -> None:
        """The host opens the model; its callbacks become the app's messages."""
        self.post_message(ModelLoading(ref, name))
        cancel = threading.Event()
        task: DownloadTask | None = None

        def progress(p: Progress) -> None:
            nonlocal task
            if task is None:
                task = self.downloads.new(ref, name)
                task.cancel = cancel
            task.progress = p
            self.post_message(DownloadUpdated(task.id, p))

        def resolved(model: ResolvedModel) -> None:
            self._finish_task(task, path=str(model.path))

        try:
            opened = self.host.open(
                ref,
                download=download and self.online is not False,
                on_progress=progress,
                cancel=cancel,
                on_resolved=resolved,
            )
        except Exception as exc:  # a bug too is one readable line, never a traceback
            error = str(exc) if isinstance(exc, LocalbviError) else _internal(exc)
            if task is not None and task.active:
                self._finish_task(task, error=error)
            self.post_message(ModelLoadFailed(ref, error, self.engine.info is not None, session))
            return
        shown = name if named else opened.display_name
        self.post_message(ModelLoaded(ref, shown, opened.kind, opened.info))

    def _finish_task(self, task: DownloadTask | None, *, path: str = "", error: str = "") -> None:
        if task is None:
            return
        if error:
            task.state = "cancelled" if task.cancel.is_set() else "failed"
            task.error = error
        else:
            task.state = "done"
            task.path = path
        self.post_message(DownloadUpdated(task.id))

    @on(ModelLoaded)
    def _model_loaded(self, message: ModelLoaded) -> None:
        self.loading = None
        self.set_activity("")
        self.model = LoadedModel(message.ref, message.display_name, message.kind, message.info)
        self._base_via_template = False
        mode = self._requested_mode or default_mode(message.kind)
        self._requested_mode = None
        if self._main is not None:
            self._main.status.set_model(message.display_name, message.kind, message.info)
            if mode == self.mode:
                self._main.show_mode(mode)
        self.mode = mode
        self._show_lesson()
        self.show_main()
        if self._main is not None:
            self._main.focus_input()
        info = message.info
        how = ", chatting through in-context examples" if self.in_context_chat else ""
        self.notify(
            f"{message.display_name} ({message.kind}{how}) on {info.device}, "
            f"loaded in {info.load_s:.1f} s",
            title="Model loaded",
        )

    @on(ModelLoadFailed)
    def _model_load_failed(self, message: ModelLoadFailed) -> None:
        self.loading = None
        self.set_activity("")
        if self.model is not None and message.restored:
            tail = f" {self.model.display_name} is still loaded."
        else:
            tail = ""
            if self.model is not None:
                self.model = None
                if self._main is not None:
                    self._main.status.model_name = "no model"
            self._show_lesson()
        if message.session:
            tail += " The session's text is shown; ctrl+o loads a model to go on."
        self.notify(
            f"{message.error}{tail}",
            title=f"Could not load {Path(message.ref).name or message.ref}",
            severity="error",
            timeout=12,
        )

    @on(ModelLoading)
    def _model_loading(self, message: ModelLoading) -> None:
        self.set_activity(f"loading {message.display_name}…")

    # -- downloads --------------------------------------------------------------------------

    def start_download(self, choice: ModelChoice, *, then_load: bool = False) -> DownloadTask:
        """Download `choice` into the HF cache (progress in the Downloads screen)."""
        running = self.downloads.active_for(choice.ref)
        if running is not None:
            running.then_load = running.then_load or then_load
            return running
        task = self.downloads.new(choice.ref, choice.display_name, then_load=then_load)
        self._download(task)
        self.post_message(DownloadUpdated(task.id))
        return task

    def resume_download(self, task: DownloadTask) -> None:
        """Start a failed or cancelled download again (the store resumes partial files)."""
        if task.active:
            return
        task.state = "downloading"
        task.error = ""
        task.cancel = threading.Event()
        self._download(task)
        self.post_message(DownloadUpdated(task.id))

    def cancel_download(self, task: DownloadTask) -> None:
        task.cancel.set()

    @work(thread=True, group="download", exit_on_error=False)
    def _download(self, task: DownloadTask) -> None:
        def progress(p: Progress) -> None:
            task.progress = p
            self.post_message(DownloadUpdated(task.id, p))

        try:
            resolved = self.services.resolve(
                task.ref, download=True, on_progress=progress, cancel=task.cancel
            )
        except LocalbviError as exc:
            self._finish_task(task, error=str(exc))
            return
        except Exception as exc:
            self._finish_task(task, error=_internal(exc))
            return
        self._finish_task(task, path=str(resolved.path))

    @on(DownloadUpdated)
    def _download_updated(self, message: DownloadUpdated) -> None:
        task = self.downloads.get(message.task_id)
        if task is None or not self.screen_stack:
            # A download thread can report after the app began to close: nothing to show.
            return
        from localbvi.tui.widgets.downloads_panel import DownloadsPanel

        for panel in self.screen.query(DownloadsPanel):
            panel.refresh_tasks()
        if message.progress is not None:
            return
        if task.state == "done" and task.then_load:
            task.then_load = False
            self.open_model(task.path, display_name=task.display_name)
        elif task.state == "failed":
            self.notify(
                task.error, title=f"Download of {task.display_name} failed", severity="error"
            )
        elif task.state == "cancelled":
            self.notify(f"Download of {task.display_name} cancelled")

    # -- network ----------------------------------------------------------------------------

    @work(thread=True, group="online", exit_on_error=False)
    def _probe_online(self) -> None:
        try:
            online = self.services.is_online()
        except Exception:
            online = False
        self.post_message(OnlineChecked(online))

    @on(OnlineChecked)
    def _online_checked(self, message: OnlineChecked) -> None:
        self.online = message.online

    # -- actions ----------------------------------------------------------------------------

    def action_toggle_mode(self) -> None:
        """Run an instruct model raw, or a base model in chat: part of the lesson.

        A base model that has a chat template goes chat in context → chat through its
        template → completion; without one, chat (in context) ↔ completion.
        """
        model = self.model
        if self.in_context_chat and model is not None and model.info.chat_template:
            self._base_via_template = True
            self._show_lesson()
            self.notify("Base model through its chat template (ctrl+t again: completion)")
            return
        self._base_via_template = False
        self.mode = "completion" if self.mode == "chat" else "chat"

    def action_pick_model(self) -> None:
        from localbvi.tui.screens.picker import PickerScreen

        if isinstance(self.screen, PickerScreen):
            return

        def picked(choice: ModelChoice | None) -> None:
            if choice is not None:
                self.choose(choice)

        self.push_screen(PickerScreen(), picked)

    def action_settings(self) -> None:
        from localbvi.tui.screens.settings import SettingsScreen

        if isinstance(self.screen, SettingsScreen):
            return

        from localbvi.settings import settings_path

        def saved(form: AppSettings | None) -> None:
            if form is not None:
                self.save_settings_form(form)

        self.push_screen(SettingsScreen(self.settings_form(), str(settings_path())), saved)

    def action_sessions(self) -> None:
        from localbvi.tui.screens.sessions import SessionsScreen

        if not isinstance(self.screen, SessionsScreen):
            self.push_screen(SessionsScreen())

    def action_downloads(self) -> None:
        from localbvi.tui.screens.downloads import DownloadsScreen

        if not isinstance(self.screen, DownloadsScreen):
            self.push_screen(DownloadsScreen())

    def action_log(self) -> None:
        from localbvi.tui.screens.log import LogScreen

        if not isinstance(self.screen, LogScreen):
            self.push_screen(LogScreen())

    def action_compare(self) -> None:
        from localbvi.tui.screens.compare import open_compare

        open_compare(self)

    def action_help(self) -> None:
        from localbvi.tui.screens.help import HelpScreen

        if not isinstance(self.screen, HelpScreen):
            self.push_screen(HelpScreen())


def _internal(exc: BaseException) -> str:
    return f"internal error: {type(exc).__name__}: {exc} (please report it)"


def make_app(
    engine_factory: Callable[[], Engine] | None = None,
    model_ref: str | None = None,
    mode: str | None = None,
    *,
    services: Services | None = None,
    settings: Settings | AppSettings | None = None,
    check_online: bool = True,
    sessions: SessionLog | None = None,
) -> LocalbviApp:
    """The app as the CLI runs it; tests pass a FakeEngine factory and `StaticServices`.

    Without `settings` the settings file is read (a broken one gives the defaults and a
    notification); its `model` and `mode` apply when `model_ref` is not given. An
    `AppSettings` form is applied over the defaults (tests).
    """
    if engine_factory is None:
        from localbvi.engine.local import LocalEngine

        engine_factory = LocalEngine
    if mode is not None and mode not in MODES:
        raise ValueError(f"mode must be 'chat' or 'completion', not {mode!r}")
    problem: str | None = None
    system_prompt = ""
    if settings is None:
        loaded = load_settings()
        settings, problem = loaded.settings, loaded.problem
        if model_ref is None and settings.model:
            model_ref, mode = settings.model, mode or settings.mode
    elif isinstance(settings, AppSettings):
        system_prompt = settings.system_prompt
        settings = settings.apply_to(Settings())
    return LocalbviApp(
        engine_factory(),
        services=services or Services(),
        settings=settings,
        model_ref=model_ref,
        mode=mode,
        check_online=check_online,
        settings_problem=problem,
        sessions=sessions,
        system_prompt=system_prompt,
    )
