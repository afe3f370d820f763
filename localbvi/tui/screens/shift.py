"""The token shift view: where instruct tuning changed the model, token by token (issue 10).

The instruct model answers the question greedily; the base model scores every answer token
under a frame (`localbvi.lab.shift.instruct_answer` then `score_answer`, the calls behind
`localbvi shift`). A frame switch re-scores the answer already written. The screen only
presents it: the reply coloured by category, the figures, "scoring n/N" while the base model
works, the base model's alternatives at the selected token, and a branch where the base model
continues from that token.

Opened from the compare view (its two engines, borrowed) or from a chat reply of an instruct
model (the app's engine, borrowed under the app's engine lock, and the catalog's base sibling
loaded into an engine of this screen's own, closed when it closes).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, ClassVar, cast

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.message import Message as TextualMessage
from textual.reactive import reactive
from textual.screen import Screen
from textual.timer import Timer
from textual.widgets import Footer, Label, Select, Static

from localbvi.engine.base import Engine
from localbvi.engine.types import DoneEvent, Event, TokenEvent
from localbvi.errors import LocalbviError, printable, shorten
from localbvi.lab.compare import LabError, SideRequest, SideRun, run_side, side_stats
from localbvi.lab.shift import (
    FRAMES,
    Frame,
    InstructAnswer,
    ShiftResult,
    instruct_answer,
    score_answer,
)
from localbvi.tui.state import ModelChoice
from localbvi.tui.streaming import TokenBuffer
from localbvi.tui.widgets.shift_view import ShiftView, summary_text, token_detail

if TYPE_CHECKING:
    from localbvi.tui.app import LocalbviApp
    from localbvi.tui.screens.compare import CompareScreen

__all__ = [
    "ShiftScreen",
    "base_sibling",
    "chat_scope",
    "open_shift_from_chat",
    "open_shift_from_compare",
]

TOP_K = 10
"""Candidates per position: the KL divergence's support and the alternatives shown."""

SINGLE_TURN = "Scored as one turn, as in the paper: both models see this question alone."
"""The view's scope line when nothing more needs saying (the compare view's prompt)."""

TICK_S = 0.1
"""How often the progress line and the streamed text are redrawn while a run is on."""

FRAME_CHOICES: tuple[tuple[str, Frame], ...] = (
    ("plain # Query: frame (the paper's)", "plain"),
    ("the raw question", "raw"),
    ("the instruct chat template", "template"),
)


@dataclass
class BaseReady(TextualMessage):
    """The base model this screen loads itself is ready (or `error` says why not)."""

    engine: Engine | None
    error: str = ""


@dataclass
class ShiftFinished(TextualMessage):
    """A run ended: a result, or an error / cancellation in words. `answer` is the instruct
    answer when it was written (kept for re-scoring under another frame)."""

    result: ShiftResult | None
    error: str = ""
    cancelled: bool = False
    answer: InstructAnswer | None = None


@dataclass
class BranchFinished(TextualMessage):
    """The base model's continuation ended (done, cancelled or failed)."""

    run: SideRun


class ShiftScreen(Screen[None]):
    """The instruct answer scored by the base model, token by token."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "stop_or_close", "Stop / close", id="shift.stop"),
        Binding(
            "f",
            "cycle_frame",
            "Frame",
            id="shift.frame",
            tooltip="What the base model sees before the answer: plain # Query: frame, "
            "the raw question, or the instruct chat template",
        ),
        Binding("ctrl+r", "rerun", "Run again", id="shift.rerun"),
        Binding(
            "b",
            "branch",
            "Base from here",
            id="shift.branch",
            tooltip="Continue with the base model from the selected token: it writes its own "
            "token there and goes on",
        ),
    ]

    running: reactive[bool] = reactive(False, init=False)
    branching: reactive[bool] = reactive(False, init=False)

    def __init__(
        self,
        question: str,
        *,
        instruct: Engine,
        base: Engine | None = None,
        base_choice: ModelChoice | None = None,
        names: tuple[str, str] = ("base model", "instruct model"),
        system: str | None = None,
        frame: Frame = "plain",
        instruct_lock: threading.Lock | None = None,
        engine_factory: Callable[[], Engine] | None = None,
        scope: str = SINGLE_TURN,
    ) -> None:
        """`base`: a loaded engine to borrow; else `base_choice` is loaded here and closed
        with the screen. `instruct_lock` is held while the instruct engine answers (the
        app's engine lock when it is the app's engine). `scope` says which question is
        scored and what the models are given (shown under the question)."""
        super().__init__()
        self.question = question
        self.instruct = instruct
        self.base = base
        self.base_choice = base_choice
        self.owns_base = base is None
        self.names = names
        self.system = system
        self.frame: Frame = frame
        self.instruct_lock = instruct_lock
        self.engine_factory = engine_factory
        self.scope = scope
        self.answer: InstructAnswer | None = None
        """The instruct answer once written: a frame switch re-scores it."""
        self.result: ShiftResult | None = None
        self.error = ""
        self._cancel = threading.Event()
        self._rerun = False
        self._phase = ""
        self._scored = (0, 0)
        self._buffer = TokenBuffer()
        self._branch_buffer = TokenBuffer()
        self._branch_text = Text()
        self._timer: Timer | None = None

    @property
    def lapp(self) -> LocalbviApp:
        return cast("LocalbviApp", self.app)

    # -- layout -----------------------------------------------------------------------------

    def compose(self) -> ComposeResult:
        base, instruct = (printable(n) for n in self.names)
        yield Label(
            f"Token shift: {instruct} answers greedily; {base} scores every token of the "
            "answer. ←/→ or a click picks a token, n jumps to the next shifted one.",
            id="shift-lesson",
        )
        yield Label(f"Question: {shorten(printable(self.question), 200)}", id="shift-question")
        yield Label(Text(printable(self.scope), style="italic"), id="shift-scope")
        with Horizontal(id="shift-bar"):
            yield Label("Base model sees:", id="shift-frame-label")
            yield Select(
                [(label, value) for label, value in FRAME_CHOICES],
                value=self.frame,
                allow_blank=False,
                id="shift-frame",
            )
            yield Label("", id="shift-status")
        with Horizontal(id="shift-body"):
            with Vertical(id="shift-main"):
                with VerticalScroll(id="shift-answer-box"):
                    yield ShiftView(id="shift-answer")
                with VerticalScroll(id="shift-branch-box"):
                    yield Static("", id="shift-branch")
            with VerticalScroll(id="shift-side"):
                yield Static("", id="shift-token")
        yield Static("", id="shift-summary")
        yield Footer()

    @property
    def view(self) -> ShiftView:
        return self.query_one(ShiftView)

    @property
    def status(self) -> str:
        """The progress line as shown."""
        return str(self.query_one("#shift-status", Label).render())

    def _set_status(self, text: str, style: str = "") -> None:
        self.query_one("#shift-status", Label).update(Text(text, style=style))

    def on_mount(self) -> None:
        self.view.focus()
        self.query_one("#shift-branch-box").display = False
        if self.base is None:
            self._set_status("loading the base model…")
            self.view.show_text("Loading the base model…", style="dim")
            self._load_base()
        else:
            self._start()

    def on_unmount(self) -> None:
        self._cancel_all()
        if self.owns_base and self.base is not None:
            with contextlib.suppress(LocalbviError):
                self.base.close()

    # -- loading the base sibling -----------------------------------------------------------

    @work(thread=True, exclusive=True, group="shift-load", exit_on_error=False)
    def _load_base(self) -> None:
        app = self.lapp
        choice = self.base_choice
        engine: Engine | None = None
        try:
            if choice is None:
                raise LabError("no base model to score with: open the view from the compare screen")
            from localbvi.engine.host import ModelHost
            from localbvi.tui.screens.compare import _engine_factory

            engine = (self.engine_factory or _engine_factory(app))()
            host = ModelHost(engine, settings=app.settings, resolve=app.services.resolve)
            host.open(choice.path or choice.ref, download=False)
        except Exception as exc:
            if engine is not None:
                with contextlib.suppress(Exception):
                    engine.close()
            error = str(exc) if isinstance(exc, LocalbviError) else f"internal error: {exc}"
            self.post_message(BaseReady(None, error))
            return
        self.post_message(BaseReady(engine))

    @on(BaseReady)
    def _base_ready(self, message: BaseReady) -> None:
        if message.engine is None:
            self._fail(f"the base model could not be loaded: {message.error}")
            return
        if not self.is_attached:  # closed while it loaded
            message.engine.close()
            return
        self.base = message.engine
        self._start()

    # -- the run ----------------------------------------------------------------------------

    def _start(self) -> None:
        """Run what is missing: the instruct answer (unless kept), then its score."""
        if self.running or self.base is None:
            return
        self.result = None
        self.error = ""
        self._cancel = threading.Event()
        self._buffer = TokenBuffer()
        self._scored = (0, 0)
        self._phase = "scoring" if self.answer is not None else "answering"
        self.running = True
        self.view.show_text(self.answer.text if self.answer is not None else "")
        self.query_one("#shift-summary", Static).update("")
        self.query_one("#shift-token", Static).update("")
        self.query_one("#shift-branch-box").display = False
        self._start_timer()
        self._run(self.base, self.answer)

    def _start_timer(self) -> None:
        if self._timer is None:
            self._timer = self.set_interval(TICK_S, self._tick)

    def _stop_timer(self) -> None:
        if self._timer is not None and not self.running and not self.branching:
            self._timer.stop()
            self._timer = None

    @work(thread=True, exclusive=True, group="shift-run", exit_on_error=False)
    def _run(self, base: Engine, answer: InstructAnswer | None) -> None:
        cancel = self._cancel
        try:
            if answer is None:
                answer = self._answer(base, cancel)
                if answer is None:
                    return
            self._phase = "scoring"

            def progress(done: int, total: int) -> None:
                self._scored = (done, total)

            # The frame is read now, not when the run began: a switch while the instruct
            # model answered takes effect without answering again.
            result = score_answer(
                base, answer, self.frame, top_k=TOP_K, on_progress=progress, cancelled=cancel
            )
        except Exception as exc:
            if cancel.is_set():
                self.post_message(ShiftFinished(None, cancelled=True, answer=answer))
            else:
                error = str(exc) if isinstance(exc, LocalbviError) else f"internal error: {exc}"
                self.post_message(ShiftFinished(None, error, answer=answer))
            return
        if cancel.is_set():
            self.post_message(ShiftFinished(None, cancelled=True, answer=answer))
        else:
            self.post_message(ShiftFinished(result, answer=answer))

    def _answer(self, base: Engine, cancel: threading.Event) -> InstructAnswer | None:
        """The instruct model's answer (under its lock); None when it was cancelled or the
        model was busy (the screen has been told)."""
        buffer = self._buffer

        def on_token(event: TokenEvent) -> None:
            if event.text:
                buffer.push(event.text)

        lock = self.instruct_lock
        if lock is not None and not lock.acquire(timeout=2.0):
            self.post_message(
                ShiftFinished(None, "the instruct model is busy (loading or answering): try again")
            )
            return None
        try:
            answer = instruct_answer(
                base,
                self.instruct,
                self.question,
                self.lapp.settings.to_sampling(),
                system=self.system,
                top_k=TOP_K,
                on_token=on_token,
                cancelled=cancel,
            )
        finally:
            if lock is not None:
                lock.release()
        if cancel.is_set():  # a cut answer is not worth keeping for other frames
            self.post_message(ShiftFinished(None, cancelled=True))
            return None
        return answer

    def _tick(self) -> None:
        if self.running:
            text = self._buffer.drain()
            if text:
                self.view.stream(text)
            if self._phase == "answering":
                n = self._buffer.tokens
                self._set_status(f"answering… {n} token{'s' * (n != 1)} (escape stops)")
            else:
                done, total = self._scored
                count = f" {done}/{total}" if total else "…"
                self._set_status(
                    f"scoring{count} with the base model, {self.frame} frame (escape stops)"
                )
        if self.branching:
            text = self._branch_buffer.drain()
            if text:
                self._branch_text.append(printable(text), style="bold green")
                self._show_branch()

    @on(ShiftFinished)
    def _finished(self, message: ShiftFinished) -> None:
        self.running = False
        self.answer = message.answer
        self._stop_timer()
        if self._rerun:
            self._rerun = False
            self._start()
            return
        if message.cancelled:
            if message.answer is not None:
                self._set_status(
                    "scoring cancelled: f re-scores, ctrl+r runs it all again", "yellow"
                )
                self.view.show_text(message.answer.text, style="dim")
            else:
                self._set_status("cancelled: ctrl+r runs it again", "yellow")
                self.view.show_text("Cancelled before the answer was scored.", style="dim")
            return
        if message.result is None:
            self._fail(message.error)
            return
        result = self.result = message.result
        finish = result.instruct_done.finish_reason
        cut = " (the answer hit max tokens)" if finish == "length" else ""
        # The figures first, then "done": whoever reads "done" finds them drawn.
        self.view.show_result(result)
        self._show_token(0)
        self._set_status(f"done: {len(result.tokens)} tokens scored{cut}", "green")
        self.view.focus()

    def _fail(self, error: str) -> None:
        self.error = error
        self._set_status("failed", "bold red")
        self.view.show_text(error, style="bold red")

    @on(ShiftView.Moved)
    def _moved(self, message: ShiftView.Moved) -> None:
        self._show_token(message.index)

    def _show_token(self, index: int) -> None:
        """The token at `index` in detail, and the figures with their caret there."""
        result = self.result
        if result is None or not result.tokens:
            return
        self.query_one("#shift-token", Static).update(token_detail(result, index))
        self.query_one("#shift-summary", Static).update(summary_text(result, index))

    # -- frame ------------------------------------------------------------------------------

    @on(Select.Changed, "#shift-frame")
    def _frame_changed(self, event: Select.Changed) -> None:
        value = event.value
        if value not in FRAMES or value == self.frame:
            return
        self.frame = cast(Frame, value)
        if self.base is None:
            return
        if not self.running:
            self._start()  # re-scores the answer it has
        elif self._phase == "scoring":
            # Stop scoring under the old frame; the same answer is scored again under this
            # one. While the instruct model answers there is nothing to stop: the run reads
            # the frame when it starts scoring.
            self._rerun = True
            self._cancel.set()
            with contextlib.suppress(Exception):
                self.base.cancel()

    def action_cycle_frame(self) -> None:
        frames = [value for _, value in FRAME_CHOICES]
        following = frames[(frames.index(self.frame) + 1) % len(frames)]
        if following == self.frame:
            return
        select: Select[Frame] = self.query_one("#shift-frame", Select)
        select.value = following  # Select.Changed runs it again in that frame

    def action_rerun(self) -> None:
        """Everything again: a new instruct answer, then its score."""
        if self.running or self.branching:
            self.notify("Wait for the current run to finish, or press escape to stop it")
        elif self.base is not None:
            self.answer = None
            self._start()

    # -- branch -----------------------------------------------------------------------------

    def action_branch(self) -> None:
        """The base model continues the answer from before the selected token: it writes
        its own token in that place and goes on (sampled with the app's settings)."""
        result, base = self.result, self.base
        if self.running or self.branching:
            self.notify("Wait for the current run to finish, or press escape to stop it")
            return
        if result is None or base is None or not result.tokens:
            self.notify("Nothing to branch from yet: the answer is not scored")
            return
        index = self.view.index
        token = result.tokens[index]
        prefix = "".join(t.text for t in result.tokens[:index])
        prompt = result.base_prompt
        bos = base.info.bos_token if base.info is not None else None
        if bos and prompt.startswith(bos):
            prompt = prompt[len(bos) :]  # the engine adds its BOS itself
        request = SideRequest("base", "raw", text=prompt + prefix)
        self._branch_text = Text()
        self._branch_text.append(
            f"Base model from token {index + 1} (instead of {printable(repr(token.text))}):\n",
            style="underline",
        )
        self._branch_text.append("…" + printable(prefix[-160:]), style="dim")
        self._branch_buffer = TokenBuffer()
        self._cancel = threading.Event()
        self.branching = True
        self.query_one("#shift-branch-box").display = True
        self._show_branch()
        self._set_status("the base model continues… (escape stops)")
        self._start_timer()
        sampling = self.lapp.settings.to_sampling()
        self._run_branch(base, request, sampling, self._cancel)

    @work(thread=True, exclusive=True, group="shift-branch", exit_on_error=False)
    def _run_branch(
        self, base: Engine, request: SideRequest, sampling: Any, cancel: threading.Event
    ) -> None:
        buffer = self._branch_buffer

        def on_event(side: object, event: Event) -> None:
            if isinstance(event, TokenEvent) and event.text:
                buffer.push(event.text)

        run = run_side(base, request, sampling, on_event=on_event, cancelled=cancel)
        self.post_message(BranchFinished(run))

    @on(BranchFinished)
    def _branch_finished(self, message: BranchFinished) -> None:
        self.branching = False
        self._tick_branch_rest()
        self._stop_timer()
        done = message.run.done or DoneEvent(finish_reason="cancelled")
        if done.error:
            self._branch_text.append(f"\n{done.error}", style="bold red")
            self._set_status("the branch failed", "bold red")
        else:
            self._branch_text.append(f"\n{side_stats(done)}", style="dim")
            word = "cancelled" if done.finish_reason == "cancelled" else "done"
            self._set_status(f"branch {word}: b branches again, ←/→ picks another token")
        self._show_branch()

    def _tick_branch_rest(self) -> None:
        text = self._branch_buffer.drain()
        if text:
            self._branch_text.append(printable(text), style="bold green")

    def _show_branch(self) -> None:
        self.query_one("#shift-branch", Static).update(self._branch_text)
        self.query_one("#shift-branch-box", VerticalScroll).scroll_end(animate=False)

    @property
    def branch_text(self) -> str:
        """The branch pane as plain text."""
        return self._branch_text.plain

    # -- stopping ---------------------------------------------------------------------------

    def _cancel_all(self) -> None:
        self._cancel.set()
        for engine in (self.instruct, self.base):
            if engine is not None:
                with contextlib.suppress(Exception):
                    engine.cancel()

    def action_stop_or_close(self) -> None:
        """Escape stops the run or the branch; pressed again (or when idle) it closes."""
        if self.running or self.branching:
            self._rerun = False
            self._cancel_all()
        else:
            self.dismiss(None)


# -- entry points ---------------------------------------------------------------------------------


def open_shift_from_compare(screen: CompareScreen) -> None:
    """The shift view on the compare screen's prompt and its two engines (borrowed)."""
    if screen.engines is None:
        screen.notify("The models are still loading: try again when they are ready")
        return
    if screen.running:
        screen.notify("Both models are still writing: wait, or press escape to stop them")
        return
    if not screen.prompt.strip():
        screen.notify("Type a prompt first: the shift view scores the instruct model's answer")
        return
    experiment = screen.experiment
    system = experiment.system if experiment and experiment.prompt == screen.prompt else None
    base, instruct = screen.engines
    screen.app.push_screen(
        ShiftScreen(screen.prompt, base=base, instruct=instruct, names=screen.names, system=system)
    )


def chat_scope(turn: int, turns: int) -> str:
    """What the view scores when it starts from reply `turn` of a chat of `turns` questions.

    The method is single-turn (Lin et al. score one question and its answer), so earlier turns
    are left out for both models rather than folded into the base model's frame: the base
    model's view of a token would otherwise mix the shift with how it reads a transcript.
    """
    where = f"Question {turn} of {turns} in this chat, scored" if turns > 1 else "Scored"
    if turn <= 1:
        return (
            f"{where} as one turn, as in the paper: the instruct model answers this question "
            "again (greedily), and the base model scores that answer."
        )
    earlier = "the earlier turn is" if turn == 2 else f"the {turn - 1} earlier turns are"
    return (
        f"{where} as one turn, as in the paper: {earlier} left out for both models, so the "
        "answer here can differ from the chat's."
    )


def base_sibling(app: LocalbviApp) -> ModelChoice:
    """The loaded instruct model's base sibling from the catalog, on disk; else a readable
    LabError naming what to download or how to pair the model."""
    model = app.model
    if model is None:
        raise LabError("no model is loaded: load an instruct model with ctrl+o")
    n_ctx = app.settings.engine.n_ctx
    mine = {model.ref, model.info.path}
    for base, instruct in app.services.catalog_pairs(n_ctx):
        refs = {instruct.ref, instruct.ref.split(":")[0], instruct.path} - {None, ""}
        if not mine & refs:
            continue
        path = base.path
        if not path:
            local = {m.ref: m for m in app.services.local_models(n_ctx)}
            found = local.get(base.ref)
            path = found.path if found else None
        if not path:
            raise LabError(
                f"the base sibling of {model.display_name}, {base.display_name}, is not on "
                f"disk: download it first (ctrl+o, or `localbvi pull {base.ref}`)"
            )
        return replace(base, path=path)
    raise LabError(
        f"{model.display_name} has no known base sibling: `localbvi pair REPO --save` finds "
        "it through the Hub and adds the pair to your catalog (or compare two models: ctrl+b)"
    )


def open_shift_from_chat(app: LocalbviApp) -> None:
    """The shift view on a chat reply: the focused reply, else the last one."""
    from localbvi.tui.widgets.chat_message import ChatMessage

    main = app.main
    if app.mode != "chat":
        app.notify("The shift view starts from a chat reply: switch to chat mode (ctrl+t)")
        return
    chat = main.chat
    if chat.generating:
        app.notify("A reply is still streaming: wait, or press escape to stop it")
        return
    model = app.model
    if model is None:
        app.notify("Load an instruct model first (ctrl+o)")
        return
    if model.kind != "instruct":
        app.notify(
            f"{model.display_name} is a base model: the shift view starts from an instruct "
            "model's reply (load the instruct sibling, or use the compare view: ctrl+b)",
            severity="warning",
        )
        return
    turns = chat.turns
    focused = app.focused
    reply = focused if isinstance(focused, ChatMessage) and focused.role == "assistant" else None
    if reply is None:
        reply = next((t for t in reversed(turns) if t.role == "assistant"), None)
    if reply is None or reply not in turns:
        app.notify("Ask the model something first: the shift view scores its reply")
        return
    index = turns.index(reply)
    question = next((t.content for t in reversed(turns[:index]) if t.role == "user"), "")
    if not question.strip():
        app.notify("This reply has no question before it to score")
        return
    system = next((m.content for m in chat.history() if m.role == "system"), None)
    scope = chat_scope(
        sum(1 for t in turns[:index] if t.role == "user"),
        sum(1 for t in turns if t.role == "user"),
    )

    def find() -> None:
        try:
            base = base_sibling(app)
        except LocalbviError as exc:
            app.call_from_thread(app.notify, str(exc), title="Token shift", severity="warning")
            return
        screen = ShiftScreen(
            question,
            instruct=app.engine,
            base_choice=base,
            names=(base.display_name, model.display_name),
            system=system,
            instruct_lock=app.engine_lock,
            scope=scope,
        )
        app.call_from_thread(app.push_screen, screen)

    app.run_worker(find, thread=True, group="shift-pair", exclusive=True, exit_on_error=False)
