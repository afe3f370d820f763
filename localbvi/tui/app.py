"""The Textual app: holds the engine, the loaded model, settings and downloads.

Every engine or store call blocks, so it runs in a thread worker and reports back with a
Message; the UI thread only draws. `make_app` builds the app for the CLI and for tests.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from textual import on, work
from textual.app import App
from textual.binding import Binding, BindingType
from textual.reactive import reactive
from textual.screen import Screen

from localbvi.engine.base import Engine
from localbvi.engine.types import LoadConfig, LoadInfo
from localbvi.errors import LocalbviError
from localbvi.tui.commands import ModelCommands, ScreenCommands
from localbvi.tui.downloads import Downloads, DownloadTask
from localbvi.tui.messages import (
    DownloadUpdated,
    ModelLoaded,
    ModelLoadFailed,
    ModelLoading,
    OnlineChecked,
)
from localbvi.tui.services import Services, StoreServices, TransferProgress
from localbvi.tui.state import AppSettings, Kind, Mode, ModelChoice, default_mode, kind_of

if TYPE_CHECKING:
    # Imported when first shown: with no --model the welcome screen comes first, and the
    # chat/completion widgets (TextArea, Markdown) need not slow the first frame.
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
        settings: AppSettings | None = None,
        model_ref: str | None = None,
        mode: Mode | None = None,
        check_online: bool = True,
    ) -> None:
        super().__init__()
        self.engine = engine
        self.services = services
        self.settings = settings or AppSettings()
        self.downloads = Downloads()
        self.engine_lock = threading.Lock()
        """Held while the engine loads or generates: it does one thing at a time."""
        self.model: LoadedModel | None = None
        self._model_ref = model_ref
        self._requested_mode = mode
        self._check_online = check_online
        self._loaded_config: LoadConfig | None = None
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
        self.engine.cancel()
        with contextlib.suppress(LocalbviError):
            self.engine.close()

    # -- state shown on the main screen -----------------------------------------------------

    def set_activity(self, text: str) -> None:
        """What the app is busy with, in the status bar ("" when idle)."""
        self._activity = text
        if self._main is not None:
            self._main.status.activity = text

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
        else:
            self.main.show_banner(LESSONS[(self.model.kind, self.mode)])
        self.main.status.mode = self.mode

    def ready_for_generation(self) -> bool:
        """True when a model can take a request; otherwise tell the user why not."""
        if self.loading:
            self.notify(f"{self.loading} is still loading", severity="warning")
            return False
        if self.model is None or self.engine.info is None:
            self.notify("No model loaded: press ctrl+o to pick one", severity="warning")
            return False
        return True

    # -- loading models ---------------------------------------------------------------------

    def choose(self, choice: ModelChoice) -> None:
        """Open a model picked in the picker or on the welcome screen."""
        if not choice.downloaded and self.online is False:
            self.notify(
                f"{choice.display_name} is not on disk and localbvi is offline: "
                "pick a model on disk",
                severity="warning",
            )
            return
        self.open_model(
            choice.path or choice.ref,
            display_name=choice.display_name,
            kind=choice.kind,
            chat_template=choice.chat_template,
        )

    def open_model(
        self,
        ref: str,
        *,
        display_name: str | None = None,
        kind: Kind | None = None,
        chat_template: str | None = None,
    ) -> None:
        """Resolve (maybe download) and load `ref`, replacing the current model."""
        if self.loading:
            self.notify(f"Still loading {self.loading}: wait a moment", severity="warning")
            return
        name = display_name or Path(ref).name or ref
        self.loading = name
        self.set_activity(f"loading {name}…")
        self._load(ref, name, kind, chat_template)

    @work(thread=True, group="load", exit_on_error=False)
    def _load(self, ref: str, name: str, kind: Kind | None, chat_template: str | None) -> None:
        self.post_message(ModelLoading(ref, name))
        cancel = threading.Event()
        task: DownloadTask | None = None

        def progress(p: TransferProgress) -> None:
            nonlocal task
            if task is None:
                task = self.downloads.new(ref, name)
                task.cancel = cancel
            task.progress = p
            self.post_message(DownloadUpdated(task.id, p))

        try:
            resolved = self.services.resolve(
                ref, download=self.online is not False, on_progress=progress, cancel=cancel
            )
            name = resolved.display_name or name
            _check_gguf(resolved.path)
        except LocalbviError as exc:
            self._finish_task(task, error=str(exc))
            self.post_message(ModelLoadFailed(ref, str(exc), self.engine.info is not None))
            return
        except Exception as exc:  # a bug: readable, never a traceback on screen
            self.post_message(ModelLoadFailed(ref, _internal(exc), self.engine.info is not None))
            return
        self._finish_task(task, path=resolved.path)

        config = self.settings.load_config(resolved.chat_template or chat_template)
        self.engine.cancel()  # a running reply ends within a token and frees the lock
        with self.engine_lock:
            previous, previous_config = self.engine.info, self._loaded_config
            try:
                info = self.engine.load(resolved.path, config)
            except Exception as exc:
                error = str(exc) if isinstance(exc, LocalbviError) else _internal(exc)
                restored = self._restore(previous, previous_config)
                self.post_message(ModelLoadFailed(ref, error, restored))
                return
            self._loaded_config = config
        model_kind = kind_of(resolved.kind or kind, info)
        self.post_message(ModelLoaded(ref, name, model_kind, info))

    def _restore(self, previous: LoadInfo | None, config: LoadConfig | None) -> bool:
        """After a failed load, make sure the previous model is usable again."""
        if self.engine.info is not None:
            return True
        if previous is None or config is None:
            return False
        try:
            self.engine.load(previous.path, config)
        except Exception:
            return False
        return True

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
        self.notify(
            f"{message.display_name} ({message.kind}) on {info.device}, "
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
        def progress(p: TransferProgress) -> None:
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
        self._finish_task(task, path=resolved.path)

    @on(DownloadUpdated)
    def _download_updated(self, message: DownloadUpdated) -> None:
        task = self.downloads.get(message.task_id)
        if task is None:
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
        """Run an instruct model raw, or a base model through a template: part of the lesson."""
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

        def saved(settings: AppSettings | None) -> None:
            if settings is None:
                return
            reload_needed = settings.load_fields_differ(self.settings)
            self.settings = settings
            if reload_needed and self.model is not None:
                self.notify(
                    "Context size, threads and GPU layers apply on the next load "
                    "(ctrl+o to load a model).",
                    title="Settings saved",
                )
            else:
                self.notify("Sampling settings apply to the next request.", title="Settings saved")

        self.push_screen(SettingsScreen(self.settings), saved)

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


def _check_gguf(path: str) -> None:
    """Refuse a broken file before the engine drops the current model for it."""
    if not Path(path).is_file():
        return
    try:
        from localbvi.inspector import inspect_gguf
    except ImportError:
        return
    inspect_gguf(path)


def _internal(exc: BaseException) -> str:
    return f"internal error: {type(exc).__name__}: {exc} (please report it)"


def make_app(
    engine_factory: Callable[[], Engine] | None = None,
    model_ref: str | None = None,
    mode: str | None = None,
    *,
    services: Services | None = None,
    settings: AppSettings | None = None,
    check_online: bool = True,
) -> LocalbviApp:
    """The app as the CLI runs it; tests pass a FakeEngine factory and `StaticServices`."""
    if engine_factory is None:
        from localbvi.engine.local import LocalEngine

        engine_factory = LocalEngine
    if mode not in (None, "chat", "completion"):
        raise ValueError(f"mode must be 'chat' or 'completion', not {mode!r}")
    return LocalbviApp(
        engine_factory(),
        services=services or StoreServices(),
        settings=settings,
        model_ref=model_ref,
        mode=mode,  # type: ignore[arg-type]
        check_online=check_online,
    )
