"""The compare view: one prompt, the base model raw on the left, the instruct model on the right,
and on demand the base model through in-context examples between them (or instead of raw).

The screen is thin: plans, runs, cancelling and branching are `localbvi.lab.compare`'s, and
each side's model is opened by a `ModelHost` (the domain's one way from a REF to an engine).
It owns its engines (loaded here, closed when it closes) unless a caller hands it loaded ones;
either side can be changed with the picker, and a model not on disk is downloaded through the
app's downloads, its progress shown in the pane. Tokens stream from the worker into one
buffer per side, drained once per frame.
"""

from __future__ import annotations

import contextlib
import random
import threading
from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING, ClassVar, Literal, cast

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal
from textual.reactive import reactive
from textual.screen import Screen
from textual.timer import Timer
from textual.widgets import Footer, Input, Label

from localbvi.engine.base import Engine
from localbvi.engine.host import ModelHost
from localbvi.engine.types import DoneEvent, Event, Sampling, TokenEvent
from localbvi.errors import LocalbviError
from localbvi.inspector import format_size
from localbvi.lab.compare import (
    SIDES,
    CompareResult,
    CompareRun,
    Plan,
    Side,
    SideRequest,
    SideRun,
    branch,
    plan,
    run_side,
)
from localbvi.lab.experiments import Experiment, load_experiments
from localbvi.lab.incontext import incontext_sampling
from localbvi.sessions import SessionRecord
from localbvi.tui.messages import RunFinished, SideDone, SideLoaded
from localbvi.tui.session_log import SessionHandle
from localbvi.tui.state import ModelChoice
from localbvi.tui.streaming import FRAME_S, TokenBuffer
from localbvi.tui.widgets.compare_pane import ComparePane

if TYPE_CHECKING:
    from localbvi.tui.app import LocalbviApp
    from localbvi.tui.downloads import DownloadTask

__all__ = ["CompareScreen", "open_compare", "open_saved_compare"]

TOP_PROBS = 5
"""Alternatives kept per token, for the probabilities view (measured cost: see ARCHITECTURE)."""

ModelSide = Literal["base", "instruct"]
"""A side that holds a model (the in-context side runs on the base side's)."""
PAIR: tuple[ModelSide, ModelSide] = ("base", "instruct")
Columns = Literal["two", "three", "instead"]
"""Raw base | instruct; raw base | base in context | instruct; base in context | instruct."""
LAYOUTS: tuple[Columns, ...] = ("two", "three", "instead")
LAYOUT_NOTES: dict[Columns, str] = {
    "two": "Two columns: raw base | instruct",
    "three": "Three columns: raw base | base + in-context examples | instruct",
    "instead": "Base + in-context examples in place of raw base | instruct",
}
SIDE_WORDS: dict[Side, str] = {"base": "base", "incontext": "in context", "instruct": "instruct"}


def model_side(side: Side) -> ModelSide:
    """Whose model a side runs on."""
    return "instruct" if side == "instruct" else "base"


class CompareScreen(Screen[None]):
    """Two panes, a prompt line, and the lab's keys."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "stop_or_close", "Stop / close", id="compare.stop"),
        Binding("ctrl+r", "rerun", "Re-run, new seed", id="compare.rerun"),
        Binding("ctrl+t", "experiments", "Experiments", id="compare.experiments"),
        Binding("f2", "xray('base')", "X-ray base", id="compare.xray_base"),
        Binding("f3", "xray('instruct')", "X-ray instruct", id="compare.xray_instruct"),
        Binding("f4", "probs('base')", "Probs base", id="compare.probs_base"),
        Binding("f6", "probs('instruct')", "Probs instruct", id="compare.probs_instruct"),
        Binding(
            "f7",
            "swap",
            "Swap modes",
            id="compare.swap",
            tooltip="Base model through the instruct template, instruct model raw (and back)",
        ),
        Binding(
            "ctrl+g",
            "incontext",
            "In-context",
            id="compare.incontext",
            tooltip="Add the base model answering through in-context examples as a third "
            "column, then in place of raw base, then back to two columns",
        ),
        Binding("f10", "xray('incontext')", "X-ray in-context", id="compare.xray_incontext"),
        Binding("f12", "probs('incontext')", "Probs in-context", id="compare.probs_incontext"),
        Binding(
            "ctrl+o",
            "pick('base')",
            "Base side model",
            id="compare.pick_base",
            tooltip="Pick any model for the left (base) side; one not on disk is downloaded",
        ),
        Binding(
            "ctrl+n",
            "pick('instruct')",
            "Instruct side model",
            id="compare.pick_instruct",
            tooltip="Pick any model for the right (instruct) side; one not on disk is downloaded",
        ),
        Binding(
            "ctrl+y",
            "download_missing",
            "Download missing",
            id="compare.download",
            tooltip="Download the side's model that is not on disk (progress in its pane)",
        ),
        Binding(
            "f9",
            "shift",
            "Token shift",
            id="compare.shift",
            tooltip="The instruct answer scored token by token by the base model",
        ),
    ]

    running: reactive[bool] = reactive(False)

    def __init__(
        self,
        base: ModelChoice | None = None,
        instruct: ModelChoice | None = None,
        *,
        engines: tuple[Engine, Engine] | None = None,
        engine_factory: Callable[[], Engine] | None = None,
        names: tuple[str, str] | None = None,
        saved: SessionRecord | None = None,
        columns: Columns = "two",
    ) -> None:
        """`saved`: a compare session to show again (its last run) and add new runs to."""
        super().__init__()
        self.saved = saved
        self.session: SessionHandle | None = None
        self.choices: dict[ModelSide, ModelChoice | None] = {"base": base, "instruct": instruct}
        self._engines: dict[ModelSide, Engine | None] = {
            "base": engines[0] if engines else None,
            "instruct": engines[1] if engines else None,
        }
        self._hosts: dict[ModelSide, ModelHost] = {}
        """The hosts of the engines this screen made (closed with it); handed-in ones are not."""
        self._generation: dict[ModelSide, int] = dict.fromkeys(PAIR, 0)
        self._previous: dict[ModelSide, tuple[ModelChoice | None, str, Engine | None]] = {}
        """What a side had before a pick, restored if the new model cannot be loaded."""
        self.downloads: dict[ModelSide, DownloadTask] = {}
        self._download_timer: Timer | None = None
        self.engine_factory = engine_factory
        self.names = names or (
            base.display_name if base else "base model",
            instruct.display_name if instruct else "instruct model",
        )
        self.columns: Columns = columns
        self.swapped = False
        self.experiment: Experiment | None = None
        self.prompt = ""
        self.seed: int | None = None
        self.runs: dict[Side, SideRun] = {}
        self.last_plan: Plan | None = None
        self._buffers: dict[Side, TokenBuffer] = {s: TokenBuffer() for s in SIDES}
        self._timer: Timer | None = None
        self._compare: CompareRun | None = None
        self._cancel = threading.Event()

    @property
    def lapp(self) -> LocalbviApp:
        return cast("LocalbviApp", self.app)

    @property
    def engines(self) -> tuple[Engine, Engine] | None:
        """(base, instruct) once both sides have a model; None while either is missing."""
        base, instruct = self._engines["base"], self._engines["instruct"]
        return (base, instruct) if base is not None and instruct is not None else None

    # -- layout -----------------------------------------------------------------------------

    def compose(self) -> ComposeResult:
        yield Label(
            "Compare: the base model continues your text, the instruct model answers it. "
            "Enter runs a prompt · ctrl+t experiments · ctrl+g adds the base model answering "
            "through in-context examples · ctrl+o / ctrl+n change the base / instruct model.",
            id="compare-lesson",
        )
        with Horizontal(id="compare-panes"):
            yield ComparePane("base", id="pane-base")
            yield ComparePane("incontext", id="pane-incontext")
            yield ComparePane("instruct", id="pane-instruct")
        yield Input(placeholder="A prompt for both models (enter runs it)", id="compare-prompt")
        yield Footer()

    def pane(self, side: Side) -> ComparePane:
        return self.query_one(f"#pane-{side}", ComparePane)

    def visible_sides(self) -> tuple[Side, ...]:
        """The panes the layout shows, left to right."""
        if self.columns == "two":
            return ("base", "instruct")
        if self.columns == "three":
            return SIDES
        return ("incontext", "instruct")

    def _show_layout(self) -> None:
        shown = self.visible_sides()
        for side in SIDES:
            self.pane(side).display = side in shown
        self.refresh_bindings()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """The in-context keys show only with the in-context column; download only when a
        side's model is missing."""
        if action in ("xray", "probs") and parameters == ("incontext",):
            return self.columns != "two"
        if action == "download_missing":
            return any(self._missing(side) for side in PAIR)
        return True

    def _stats(self, side: Side, text: str) -> None:
        self.pane(side).query_one(".pane-stats", Label).update(text)

    def _model_stats(self, side: ModelSide, text: str) -> None:
        """A model's state, on its side and (base) on the in-context side that shares it."""
        self._stats(side, text)
        if side == "base":
            self._stats("incontext", text)

    def _title(self, side: Side, request: SideRequest | None = None) -> str:
        name = self.names[0] if model_side(side) == "base" else self.names[1]
        label = f" · {request.label}" if request is not None else ""
        if side == "incontext" and request is None:
            label = " · base + in-context examples"
        return f"{SIDE_WORDS[side]} · {name}{label}"

    def on_mount(self) -> None:
        for side in SIDES:
            self.pane(side).start(self._title(side))
        for side in PAIR:
            self._model_stats(side, "ready" if self._engines[side] is not None else "loading…")
        self._show_layout()
        self.query_one(Input).focus()
        if self.saved is not None:
            self._show_saved(self.saved)
        for side in PAIR:
            if self._engines[side] is None:
                self._open_side(side)

    def _show_saved(self, record: SessionRecord) -> None:
        """The last run of a saved comparison, as it was; new runs go to the same session."""
        last: dict[str, str] = {}
        for message in record.messages:
            if message.role == "user":
                last = {"user": message.content}
            else:
                last[message.role] = message.content
        prompt = last.get("user", "")
        self.prompt = prompt
        self.query_one(Input).value = prompt
        if "incontext" in last:
            self.columns = "three" if "base" in last else "instead"
            self._show_layout()
        for side in SIDES:
            self.pane(side).append(last.get(side, ""))
        self.session = SessionHandle(
            "compare", record.model, record.mode, record.system, dict(record.meta), record.id
        )

    def on_unmount(self) -> None:
        self._cancel_all()
        if self._download_timer is not None:
            self._download_timer.stop()
        for host in self._hosts.values():
            with contextlib.suppress(LocalbviError):
                host.close()

    # -- loading, picking and downloading models --------------------------------------------

    def _missing(self, side: ModelSide) -> bool:
        """The side's model is not on disk (and not being downloaded or loaded)."""
        choice = self.choices[side]
        return (
            self._engines[side] is None
            and choice is not None
            and not choice.downloaded
            and not choice.remote
            and choice.source != "demo"  # the demo file is assembled by its catalog ref
            and side not in self.downloads
        )

    def _open_side(self, side: ModelSide) -> None:
        """Load the side's chosen model, or say what is missing and how to get it."""
        choice = self.choices[side]
        if choice is None:
            key = "ctrl+o" if side == "base" else "ctrl+n"
            self._model_stats(side, f"no model: {key} picks one")
            return
        if self._missing(side):
            size = f" ({format_size(choice.size)})" if choice.size else ""
            offline = " and localbvi is offline" if self.lapp.online is False else ""
            self._model_stats(
                side,
                f"not loaded: {choice.display_name} is not on disk{offline}: ctrl+y "
                f"downloads it{size}, or pick another model "
                f"({'ctrl+o' if side == 'base' else 'ctrl+n'})",
            )
            self.refresh_bindings()
            return
        self._generation[side] += 1
        self._model_stats(side, f"loading {choice.display_name}…")
        self._load_side(side, choice, self._generation[side])

    def _host(self, side: ModelSide) -> ModelHost:
        host = self._hosts.get(side)
        if host is None:
            app = self.lapp
            factory = self.engine_factory or _engine_factory(app)
            host = ModelHost(factory(), settings=app.settings, resolve=app.services.resolve)
            self._hosts[side] = host
        return host

    @work(thread=True, group="compare-load", exit_on_error=False)
    def _load_side(self, side: ModelSide, choice: ModelChoice, generation: int) -> None:
        app = self.lapp
        ref = (
            choice.ref if choice.source == "demo" or choice.remote else (choice.path or choice.ref)
        )
        try:
            host = self._host(side)
            config = app.settings.to_load_config()
            if choice.chat_template:
                config = replace(config, chat_template=choice.chat_template)
            opened = host.open(ref, config, download=False)
        except Exception as exc:
            error = str(exc) if isinstance(exc, LocalbviError) else f"internal error: {exc}"
            self.post_message(SideLoaded(side, None, generation, error))
            return
        self.post_message(SideLoaded(side, opened.engine, generation))

    @on(SideLoaded)
    def _side_loaded(self, message: SideLoaded) -> None:
        side = message.side
        if message.generation != self._generation[side]:
            return  # an older pick finished after a newer one started
        if message.engine is None:
            self.notify(message.error, title=f"Could not load the {side} model", severity="error")
            self._side_failed(side, message.error)
            return
        self._previous.pop(side, None)
        self._engines[side] = message.engine
        self._model_stats(side, "ready")
        for pane_side in SIDES:
            self.pane(pane_side).query_one(".pane-title", Label).update(self._title(pane_side))
        self.refresh_bindings()
        if self.engines is not None and self.prompt and not self.running:
            self._start_compare()

    def _side_failed(self, side: ModelSide, error: str) -> None:
        """The side's new model could not be had: back to the model it had, if any (the
        reason stays in the pane: a notification alone is gone before it is read)."""
        previous = self._previous.pop(side, None)
        if previous is not None and previous[2] is not None and previous[2].info is not None:
            self.choices[side], name, self._engines[side] = previous
            self.names = (name, self.names[1]) if side == "base" else (self.names[0], name)
            for pane_side in SIDES:
                if model_side(pane_side) == side:
                    self.pane(pane_side).start(self._title(pane_side))
            self._model_stats(side, f"ready (still {name}: {error})")
        else:
            self._engines[side] = None
            self._model_stats(side, f"not loaded: {error}")
        self.refresh_bindings()

    def action_pick(self, side: ModelSide) -> None:
        """Any model for one side, from the picker (a model not on disk downloads first)."""
        from localbvi.tui.screens.picker import PickerScreen

        if self.running:
            self.notify("The models are still writing: escape stops them", severity="warning")
            return

        def picked(choice: ModelChoice | None) -> None:
            if choice is not None:
                self.use_model(side, choice)

        self.app.push_screen(PickerScreen(), picked)

    def use_model(self, side: ModelSide, choice: ModelChoice) -> None:
        """Put `choice` on `side`: loaded now, or downloaded with progress and then loaded.
        If that fails, the side keeps the model it had."""
        old_name = self.names[0 if side == "base" else 1]
        self._previous[side] = (self.choices[side], old_name, self._engines[side])
        self.downloads.pop(side, None)  # an earlier pick's download goes on in Downloads
        self.choices[side] = choice
        names = list(self.names)
        names[0 if side == "base" else 1] = choice.display_name
        self.names = (names[0], names[1])
        for pane_side in SIDES:
            if model_side(pane_side) == side:
                self.pane(pane_side).start(self._title(pane_side))
        self._engines[side] = None  # the side waits for its new model
        if self._missing(side):
            self.download(side)
        else:
            self._open_side(side)

    def action_download_missing(self) -> None:
        for side in PAIR:
            if self._missing(side):
                self.download(side)

    def download(self, side: ModelSide) -> None:
        """Download the side's model through the app's downloads (also listed in Downloads)."""
        choice = self.choices[side]
        if choice is None:
            return
        if self.lapp.online is False:
            self.notify(
                f"{choice.display_name} is not on disk and localbvi is offline",
                severity="warning",
            )
        self.downloads[side] = self.lapp.start_download(choice)
        self._model_stats(side, f"downloading {choice.display_name}…")
        self.pane(side).download_progress(None)
        if self._download_timer is None:
            self._download_timer = self.set_interval(0.1, self._watch_downloads)
        self.refresh_bindings()

    def _watch_downloads(self) -> None:
        """Progress into the panes; a finished download loads its side."""
        for side, task in list(self.downloads.items()):
            choice = self.choices[side]
            name = choice.display_name if choice else task.display_name
            if task.state == "downloading":
                progress = task.progress
                amount = (
                    f" {format_size(progress.done)} of {format_size(progress.total)}"
                    if progress is not None and progress.total
                    else ""
                )
                percent = f" {task.fraction:.0%}" if task.fraction is not None else ""
                self._model_stats(side, f"downloading {name}…{percent}{amount} · escape cancels")
                self.pane(side).download_progress(task.fraction)
                continue
            del self.downloads[side]
            self.pane(side).download_progress(None, done=True)
            if task.state == "done" and choice is not None:
                self.choices[side] = replace(choice, path=task.path)
                self._open_side(side)
            else:
                word = "cancelled" if task.state == "cancelled" else "failed"
                self._side_failed(side, f"download {word}: {task.error}")
            self.refresh_bindings()
        if not self.downloads and self._download_timer is not None:
            self._download_timer.stop()
            self._download_timer = None

    # -- running ----------------------------------------------------------------------------

    def engine(self, side: Side) -> Engine:
        engine = self._engines[model_side(side)]
        assert engine is not None
        return engine

    def current_plan(self) -> Plan:
        """What the next run sends: the prompt (or experiment) in the current modes."""
        swap_template = None
        if self.swapped and self.engines is not None:
            base_info, instruct_info = self.engines[0].info, self.engines[1].info
            if base_info is not None and not base_info.chat_template and instruct_info:
                swap_template = instruct_info.chat_template
        modes: dict[str, object] = {
            "base_mode": "chat" if self.swapped else "raw",
            "instruct_mode": "raw" if self.swapped else "chat",
            "base_template": swap_template,
            "incontext": self.columns != "two",
            "run_base": self.columns != "instead",
        }
        e = self.experiment
        if e is not None and e.prompt == self.prompt:
            return plan(e.prompt, system=e.system, base_prompt=e.base_prompt, **modes)  # type: ignore[arg-type]
        return plan(self.prompt, **modes)  # type: ignore[arg-type]

    def sampling(self) -> Sampling:
        sampling = replace(self.lapp.settings.to_sampling(), top_probs=TOP_PROBS, seed=self.seed)
        if self.experiment is not None and self.experiment.prompt == self.prompt:
            sampling = self.experiment.apply(sampling)
        return sampling

    def run_prompt(self, prompt: str) -> None:
        """Run `prompt` on every shown side (used by the input line and by tests)."""
        self.prompt = prompt
        self.query_one(Input).value = prompt
        if self.engines is None:
            self.notify("The models are still loading: the prompt runs when they are ready")
            return
        self._start_compare()

    def _start_compare(self) -> None:
        if self.running:
            self.notify("The models are still writing: escape stops them", severity="warning")
            return
        if not self.prompt.strip():
            self.notify("Type a prompt first", severity="warning")
            return
        the_plan = self.current_plan()
        self.last_plan = the_plan
        for i, side in enumerate(the_plan.sides):
            title = self._title(side, the_plan.for_side(side))
            if i == 0:
                self.pane(side).start(title)
            else:
                self.pane(side).waiting(title)
        base, instruct = self.engine("base"), self.engine("instruct")
        self._compare = CompareRun(base, instruct, the_plan, self.sampling(), on_event=self._event)
        self._begin()
        self._run_compare(self._compare)

    def _begin(self) -> None:
        self._buffers = {s: TokenBuffer() for s in SIDES}
        self._cancel = threading.Event()
        self.running = True
        self._timer = self.set_interval(FRAME_S, self._flush)

    def _event(self, side: Side, event: Event) -> None:
        """Called in the worker thread for every event of any side."""
        if isinstance(event, TokenEvent):
            self._buffers[side].push(event.text)
        else:
            self.post_message(SideDone(side, event))

    @work(thread=True, exclusive=True, group="compare-run", exit_on_error=False)
    def _run_compare(self, run: CompareRun) -> None:
        result: CompareResult = run.run()
        self.post_message(RunFinished(dict(result.runs), compare=True))

    @work(thread=True, exclusive=True, group="compare-run", exit_on_error=False)
    def _run_one(self, side: Side, job: Callable[[], SideRun]) -> None:
        self.post_message(RunFinished({side: job()}))

    def _flush(self) -> None:
        for side in SIDES:
            text = self._buffers[side].drain()
            if text:
                self.pane(side).append(text)

    @on(SideDone)
    def _side_done(self, message: SideDone) -> None:
        self._flush()
        self.pane(message.side).finish(message.done)
        sides = self.last_plan.sides if self.last_plan is not None else ()
        if message.side in sides and self._compare is not None and not self._cancel.is_set():
            after = sides[sides.index(message.side) + 1 :]
            if after and not self._compare.concurrent:
                self._stats(after[0], "running…")
        if message.done.error:
            self.notify(message.done.error, title=f"{message.side} side", severity="error")

    @on(RunFinished)
    def _finished(self, message: RunFinished) -> None:
        if self._timer is not None:
            self._timer.stop()
            self._timer = None
        self._flush()
        self.runs.update(message.runs)
        self._compare = None
        self.running = False
        if message.compare:
            self._save_run(message.runs)

    def _save_run(self, runs: dict[Side, SideRun]) -> None:
        """A comparison is saved as the prompt ("user") and each side's reply under its side's
        name ("base", "incontext", "instruct")."""
        log = self.lapp.sessions
        if self.session is None:
            meta: dict[str, object] = {
                side: {"ref": c.ref, "path": c.path, "name": c.display_name, "kind": c.kind}
                for side, c in self.choices.items()
                if c is not None
            }
            base = self.choices["base"]
            model = (base.path or base.ref) if base else self.names[0]
            self.session = log.start("compare", model, "compare", meta=meta)
        log.add_message(self.session, "user", self.prompt)
        for side, run in runs.items():
            done = run.done or DoneEvent(finish_reason="cancelled")
            log.add_reply(self.session, run.text, done, role=side)

    def _cancel_all(self) -> None:
        self._cancel.set()
        if self._compare is not None:
            self._compare.cancel()
        else:
            for engine in self._engines.values():
                if engine is not None:
                    engine.cancel()

    # -- actions ----------------------------------------------------------------------------

    @on(Input.Submitted, "#compare-prompt")
    def _submitted(self, event: Input.Submitted) -> None:
        if event.value.strip():
            self.run_prompt(event.value)

    def action_stop_or_close(self) -> None:
        """Escape stops every side (or a download of a side's model); pressed again (or when
        idle) it closes the view."""
        if self.running:
            self._cancel_all()
        elif self.downloads:
            for task in self.downloads.values():
                self.lapp.cancel_download(task)
        else:
            self.dismiss(None)

    def action_incontext(self) -> None:
        """Two columns → three (base in context between) → in context instead of raw base."""
        self.columns = LAYOUTS[(LAYOUTS.index(self.columns) + 1) % len(LAYOUTS)]
        self._show_layout()
        self.notify(LAYOUT_NOTES[self.columns])
        if self.prompt and not self.running and self.engines is not None:
            self._start_compare()

    def action_rerun(self) -> None:
        if self.running or not self.prompt or self.engines is None:
            return
        self.seed = random.randrange(1, 2**31)
        if self.sampling().temperature == 0:
            self.notify(
                "Temperature is 0, so a new seed changes nothing: raise it in settings",
                severity="warning",
            )
        self.query_one("#compare-lesson", Label).update(f"Re-run with seed {self.seed}")
        self._start_compare()

    def action_swap(self) -> None:
        """Template swap: the base model gets the instruct model's template, the instruct
        model runs raw; pressed again, back to the usual modes."""
        self.swapped = not self.swapped
        word = "swapped: base through a chat template, instruct raw" if self.swapped else "usual"
        self.notify(f"Modes {word}")
        if self.prompt and not self.running and self.engines is not None:
            self._start_compare()

    def action_experiments(self) -> None:
        from localbvi.tui.screens.experiments import ExperimentsScreen

        try:
            experiments = load_experiments()
        except LocalbviError as exc:
            self.notify(str(exc), title="Experiments", severity="error", timeout=12)
            return

        def chosen(experiment: Experiment | None) -> None:
            if experiment is not None:
                self.run_experiment(experiment)

        screen = ExperimentsScreen(experiments, engines=self.engines, names=self.names)
        self.app.push_screen(screen, chosen)

    def run_experiment(self, experiment: Experiment) -> None:
        self.experiment = experiment
        self.query_one("#compare-lesson", Label).update(
            f"{experiment.title}: {experiment.what_to_look_for}"
        )
        self.run_prompt(experiment.prompt)

    def action_xray(self, side: Side) -> None:
        if self.engines is None:
            return
        from localbvi.tui.screens.xray import XrayScreen

        the_plan = self.last_plan or self.current_plan()
        if side not in the_plan.sides:
            the_plan = self.current_plan()
        if side not in the_plan.sides:
            self.notify(f"The {SIDE_WORDS[side]} side is not shown: ctrl+g changes the columns")
            return
        request = the_plan.for_side(side)
        if not request.text and not any(m.content for m in request.messages):
            self.notify("Type a prompt first: the X-ray shows what it becomes")
            return

        def send(text: str | None) -> None:
            if text is not None:
                self.send_raw(side, text)

        self.app.push_screen(
            XrayScreen(self.engine(side), request, self._title(side, request)), send
        )

    def send_raw(self, side: Side, text: str) -> None:
        """Raw completion of exactly `text` on one side (an edited X-ray)."""
        if self.running or self.engines is None:
            return
        request = SideRequest(side, "raw", text=text)
        self.pane(side).start(f"{self._title(side, request)} (edited X-ray)")
        engine, sampling = self.engine(side), self.sampling()
        if side == "incontext":
            sampling = incontext_sampling(sampling)  # still stops at the next `# Query`
        self._begin()
        cancel = self._cancel
        self._run_one(
            side,
            lambda: run_side(engine, request, sampling, on_event=self._event, cancelled=cancel),
        )

    def action_probs(self, side: Side) -> None:
        from localbvi.tui.screens.token_probs import Branch, TokenProbsScreen

        run = self.runs.get(side)
        if self.running or run is None or not run.tokens:
            self.notify("Run a prompt first: probabilities belong to generated tokens")
            return
        if not any(t.alternatives for t in run.tokens):
            self.notify("This run has no probabilities (the engine did not report them)")
            return

        def picked(choice: Branch | None) -> None:
            if choice is not None:
                self.branch(side, *choice)

        title = self.pane(side).query_one(".pane-title", Label).render()
        self.app.push_screen(TokenProbsScreen(run, str(title)), picked)

    def branch(self, side: Side, index: int, alternative: object) -> None:
        """Continue `side` from its token `index` replaced by `alternative`."""
        from localbvi.engine.types import Alternative

        assert isinstance(alternative, Alternative)
        run = self.runs[side]
        if self.running or self.engines is None:
            return
        prefix = "".join(t.text for t in run.tokens[:index])
        title = self.pane(side).query_one(".pane-title", Label).render()
        self.pane(side).start(
            f"{str(title).split(' (branched')[0]} (branched at token {index + 1})",
            prefix=prefix,
            branch_token=alternative.text,
        )
        engine, sampling = self.engine(side), self.sampling()
        self._begin()
        cancel = self._cancel
        self._run_one(
            side,
            lambda: branch(
                engine, run, index, alternative, sampling, on_event=self._event, cancelled=cancel
            ),
        )

    def action_shift(self) -> None:
        """Token shift view on this prompt, with these two engines (issue 10)."""
        from localbvi.tui.screens.shift import open_shift_from_compare

        open_shift_from_compare(self)


def _engine_factory(app: LocalbviApp) -> Callable[[], Engine]:
    """New engines like the app's own (a FakeEngine app compares on FakeEngines)."""
    factory = getattr(app, "engine_factory", None)
    if callable(factory):
        return cast("Callable[[], Engine]", factory)
    kind = type(app.engine)

    def make() -> Engine:
        try:
            return kind()
        except TypeError:  # an engine that needs arguments (remote): compare locally
            from localbvi.engine.local import LocalEngine

            return LocalEngine()

    return make


def open_saved_compare(app: LocalbviApp, record: SessionRecord) -> None:
    """Reopen a saved comparison: its last run shown, its two models loaded again."""
    choices: list[ModelChoice | None] = []
    for side in PAIR:
        entry = record.meta.get(side)
        if not isinstance(entry, dict):
            choices.append(None)
            continue
        kind = entry.get("kind")
        choices.append(
            ModelChoice(
                ref=str(entry.get("ref") or ""),
                display_name=str(entry.get("name") or side),
                kind=kind if kind in PAIR else None,
                path=entry.get("path") or None,
            )
        )
    if isinstance(app.screen, CompareScreen):
        app.pop_screen()
    app.push_screen(CompareScreen(choices[0], choices[1], saved=record))


def open_compare(app: LocalbviApp) -> None:
    """Open the compare view on the loaded model's catalog pair (one action)."""
    if isinstance(app.screen, CompareScreen):
        return
    _find_pair(app)


def _find_pair(app: LocalbviApp) -> None:
    def find() -> None:
        try:
            pair = pair_for(app)
        except LocalbviError as exc:
            app.call_from_thread(app.notify, str(exc), title="Compare", severity="warning")
            return
        app.call_from_thread(app.push_screen, CompareScreen(*pair))

    app.run_worker(find, thread=True, group="compare-pair", exclusive=True, exit_on_error=False)


def pair_for(app: LocalbviApp) -> tuple[ModelChoice, ModelChoice]:
    """(base, instruct) for the loaded model: its catalog pair; else the model in both modes."""
    n_ctx = app.settings.engine.n_ctx
    pairs = app.services.catalog_pairs(n_ctx)
    local = {m.ref: m for m in app.services.local_models(n_ctx)}

    def on_disk(choice: ModelChoice) -> ModelChoice:
        found = local.get(choice.ref)
        return replace(choice, path=found.path) if found and found.path else choice

    model = app.model
    if model is not None:
        for base, instruct in pairs:
            refs = {base.ref, base.path, instruct.ref, instruct.path}
            if model.ref in refs or model.info.path in refs:
                return on_disk(base), on_disk(instruct)
        me = ModelChoice(
            ref=model.info.path,
            display_name=model.display_name,
            kind=model.kind,
            path=model.info.path,
        )
        return me, me
    for base, instruct in pairs:
        base, instruct = on_disk(base), on_disk(instruct)
        if base.path and instruct.path:
            return base, instruct
    raise LocalbviError(
        "no model to compare: load one with ctrl+o (a catalog model opens with its sibling)"
    )
