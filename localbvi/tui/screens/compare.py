"""The compare view: one prompt, the base model raw on the left, the instruct model on the right.

The screen is thin: plans, runs, cancelling and branching are `localbvi.lab.compare`'s. It
owns two engines (loaded here, closed when it closes) unless a caller hands it loaded ones.
Tokens stream from the worker into one buffer per side, drained once per frame.
"""

from __future__ import annotations

import contextlib
import random
import threading
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, ClassVar, cast

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal
from textual.message import Message as TextualMessage
from textual.reactive import reactive
from textual.screen import Screen
from textual.timer import Timer
from textual.widgets import Footer, Input, Label

from localbvi.engine.base import Engine
from localbvi.engine.types import DoneEvent, Event, Sampling, TokenEvent
from localbvi.errors import LocalbviError
from localbvi.lab.compare import (
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
from localbvi.sessions import SessionRecord
from localbvi.tui.session_log import SessionHandle
from localbvi.tui.state import ModelChoice, load_config
from localbvi.tui.streaming import FRAME_S, TokenBuffer
from localbvi.tui.widgets.compare_pane import ComparePane

if TYPE_CHECKING:
    from localbvi.tui.app import LocalbviApp

__all__ = ["CompareScreen", "open_compare", "open_saved_compare"]

TOP_PROBS = 5
"""Alternatives kept per token, for the probabilities view (measured cost: see ARCHITECTURE)."""

SIDES: tuple[Side, Side] = ("base", "instruct")


@dataclass
class SideDone(TextualMessage):
    """One side finished (done, cancelled or failed)."""

    side: Side
    done: DoneEvent


@dataclass
class RunFinished(TextualMessage):
    """A comparison or a single-side run (branch, edited X-ray) ended."""

    runs: dict[Side, SideRun]


@dataclass
class EnginesReady(TextualMessage):
    """Both models are loaded (or `error` says why not)."""

    engines: tuple[Engine, Engine] | None
    error: str = ""


class CompareScreen(Screen[None]):
    """Two panes, a prompt line, and the lab's keys."""

    DEFAULT_CSS = """
    #compare-lesson { width: 1fr; padding: 0 1; background: $boost; color: $text-muted; }
    #compare-panes { height: 1fr; }
    #compare-prompt { margin: 0 1; }
    """

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
    ) -> None:
        """`saved`: a compare session to show again (its last run) and add new runs to."""
        super().__init__()
        self.saved = saved
        self.session: SessionHandle | None = None
        self.choices = (base, instruct)
        self.engines = engines
        self.owned = engines is None
        self.engine_factory = engine_factory
        self.names = names or (
            base.display_name if base else "base model",
            instruct.display_name if instruct else "instruct model",
        )
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

    # -- layout -----------------------------------------------------------------------------

    def compose(self) -> ComposeResult:
        yield Label(
            "Compare: the base model continues your text, the instruct model answers it. "
            "Type a prompt and press enter, or ctrl+t for an experiment.",
            id="compare-lesson",
        )
        with Horizontal(id="compare-panes"):
            yield ComparePane("base", id="pane-base")
            yield ComparePane("instruct", id="pane-instruct")
        yield Input(placeholder="A prompt for both models (enter runs it)", id="compare-prompt")
        yield Footer()

    def pane(self, side: Side) -> ComparePane:
        return self.query_one(f"#pane-{side}", ComparePane)

    def on_mount(self) -> None:
        for side, name in zip(SIDES, self.names, strict=True):
            title = f"{side} · {name}"
            self.pane(side).start(title)
            self.pane(side).query_one(".pane-stats", Label).update(
                "loading…" if self.engines is None else "ready"
            )
        self.query_one(Input).focus()
        if self.saved is not None:
            self._show_saved(self.saved)
        if self.engines is None:
            self._load()

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
        for side in SIDES:
            self.pane(side).append(last.get(side, ""))
        self.session = SessionHandle(
            "compare", record.model, record.mode, record.system, dict(record.meta), record.id
        )

    def on_unmount(self) -> None:
        self._cancel_all()
        if self.owned and self.engines is not None:
            for engine in self.engines:
                with contextlib.suppress(LocalbviError):
                    engine.close()

    # -- loading ----------------------------------------------------------------------------

    @work(thread=True, exclusive=True, group="compare-load", exit_on_error=False)
    def _load(self) -> None:
        app = self.lapp
        factory = self.engine_factory or _engine_factory(app)
        loaded: list[Engine] = []
        try:
            for choice in self.choices:
                if choice is None:
                    raise LocalbviError("pick two models to compare (ctrl+o loads one)")
                resolved = app.services.resolve(
                    choice.path or choice.ref,
                    download=False,
                    on_progress=lambda p: None,
                    cancel=threading.Event(),
                )
                engine = factory()
                loaded.append(engine)
                config = load_config(app.settings, resolved.chat_template or choice.chat_template)
                engine.load(resolved.path, config)
        except Exception as exc:
            for engine in loaded:
                engine.close()
            error = str(exc) if isinstance(exc, LocalbviError) else f"internal error: {exc}"
            self.post_message(EnginesReady(None, error))
            return
        self.post_message(EnginesReady((loaded[0], loaded[1])))

    @on(EnginesReady)
    def _engines_ready(self, message: EnginesReady) -> None:
        if message.engines is None:
            # The reason stays in the panes: a notification alone is gone before it is read.
            for side in SIDES:
                self.pane(side).query_one(".pane-stats", Label).update(
                    f"not loaded: {message.error}"
                )
            self.notify(message.error, title="Could not open the comparison", severity="error")
            return
        self.engines = message.engines
        for side in SIDES:
            self.pane(side).query_one(".pane-stats", Label).update("ready")
        if self.prompt:
            self._start_compare()

    # -- running ----------------------------------------------------------------------------

    def engine(self, side: Side) -> Engine:
        assert self.engines is not None
        return self.engines[0] if side == "base" else self.engines[1]

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
        """Run `prompt` on both sides (used by the input line and by tests)."""
        self.prompt = prompt
        self.query_one(Input).value = prompt
        if self.engines is None:
            self.notify("The models are still loading: the prompt runs when they are ready")
            return
        self._start_compare()

    def _title(self, side: Side, request: SideRequest) -> str:
        name = self.names[0] if side == "base" else self.names[1]
        return f"{side} · {name} · {request.label}"

    def _start_compare(self) -> None:
        if self.running:
            self.notify("Both models are still writing: escape stops them", severity="warning")
            return
        if not self.prompt.strip():
            self.notify("Type a prompt first", severity="warning")
            return
        the_plan = self.current_plan()
        self.last_plan = the_plan
        self.pane("base").start(self._title("base", the_plan.base))
        self.pane("instruct").waiting(self._title("instruct", the_plan.instruct))
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
        """Called in the worker thread for every event of either side."""
        if isinstance(event, TokenEvent):
            self._buffers[side].push(event.text)
        else:
            self.post_message(SideDone(side, event))

    @work(thread=True, exclusive=True, group="compare-run", exit_on_error=False)
    def _run_compare(self, run: CompareRun) -> None:
        result: CompareResult = run.run()
        self.post_message(RunFinished({"base": result.base, "instruct": result.instruct}))

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
        other: Side = "instruct" if message.side == "base" else "base"
        if message.side == "base" and self._compare is not None and not self._cancel.is_set():
            self.pane(other).query_one(".pane-stats", Label).update("running…")
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
        if set(message.runs) == set(SIDES):
            self._save_run(message.runs)

    def _save_run(self, runs: dict[Side, SideRun]) -> None:
        """A comparison is saved as the prompt ("user") and both replies ("base", "instruct")."""
        log = self.lapp.sessions
        if self.session is None:
            base, instruct = self.choices
            meta: dict[str, object] = {
                side: {"ref": c.ref, "path": c.path, "name": c.display_name, "kind": c.kind}
                for side, c in zip(SIDES, (base, instruct), strict=True)
                if c is not None
            }
            model = (base.path or base.ref) if base else self.names[0]
            self.session = log.start("compare", model, "compare", meta=meta)
        log.add_message(self.session, "user", self.prompt)
        for side in SIDES:
            run = runs[side]
            done = run.done or DoneEvent(finish_reason="cancelled")
            log.add_reply(self.session, run.text, done, role=side)

    def _cancel_all(self) -> None:
        self._cancel.set()
        if self._compare is not None:
            self._compare.cancel()
        elif self.engines is not None:
            for engine in self.engines:
                engine.cancel()

    # -- actions ----------------------------------------------------------------------------

    @on(Input.Submitted, "#compare-prompt")
    def _submitted(self, event: Input.Submitted) -> None:
        if event.value.strip():
            self.run_prompt(event.value)

    def action_stop_or_close(self) -> None:
        """Escape stops both sides; pressed again (or when idle) it closes the view."""
        if self.running:
            self._cancel_all()
        else:
            self.dismiss(None)

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

        self.app.push_screen(ExperimentsScreen(experiments), chosen)

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
    for side in SIDES:
        entry = record.meta.get(side)
        if not isinstance(entry, dict):
            choices.append(None)
            continue
        kind = entry.get("kind")
        choices.append(
            ModelChoice(
                ref=str(entry.get("ref") or ""),
                display_name=str(entry.get("name") or side),
                kind=kind if kind in SIDES else None,
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
