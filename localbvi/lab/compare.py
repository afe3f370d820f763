"""Side by side: one prompt, the base model continuing it raw and the instruct model answering.

Each side runs one model in one mode: "raw" (the text goes to the model as is) or "chat"
(messages rendered with a chat template). Any model can run in either mode: a base model can
be given the instruct model's template (the "template swap"), an instruct model can run raw.
A third side, "incontext", runs the base model again through in-context examples
(`localbvi.lab.incontext`: a preamble and three `# Query:`/`# Answer:` exchanges, stop on
`# Query`), so a person sees raw base vs base in context vs instruct on one question.
`prepare` gives the exact text and tokens a side sends (the prompt X-ray); `run_compare` runs
the sides and `branch` restarts a side from an alternative token. Nothing here imports
Textual: the CLI and the TUI share these functions.

Sequential is the default: measured on a 2-core machine, two llama.cpp processes at once
were slower in total than one after the other (see ARCHITECTURE.md, "Compare: sequential or
concurrent").
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Literal

from localbvi.engine.base import Engine
from localbvi.engine.templates import render_chat
from localbvi.engine.types import (
    Alternative,
    DoneEvent,
    Event,
    Message,
    Sampling,
    Token,
    TokenEvent,
)
from localbvi.errors import LocalbviError
from localbvi.lab.incontext import (
    InContext,
    build_prompt,
    incontext_sampling,
    load_incontext,
    preamble_text,
)

__all__ = [
    "INCONTEXT_LABEL",
    "SIDES",
    "CompareResult",
    "CompareRun",
    "GenToken",
    "LabError",
    "Mode",
    "Plan",
    "Prepared",
    "Side",
    "SideRequest",
    "SideRun",
    "branch",
    "branch_ids",
    "pair_refs",
    "plan",
    "prepare",
    "run_compare",
    "run_side",
    "sibling_ref",
    "side_sampling",
    "side_stats",
    "stop_reason",
]

Side = Literal["base", "incontext", "instruct"]
"""Raw base, base through in-context examples (runs on the base engine), instruct."""
SIDES: tuple[Side, ...] = ("base", "incontext", "instruct")
"""Every side, in the order they run and show."""
Mode = Literal["raw", "chat", "incontext"]
OnEvent = Callable[[Side, Event], None]

INCONTEXT_LABEL = "base + in-context examples"

DEFAULT_CONCURRENT = False
"""Run the sides one after the other unless asked: see the module docstring."""


class LabError(LocalbviError):
    """A lab request that cannot be run as asked (e.g. branching past the generated tokens)."""


@dataclass(frozen=True)
class SideRequest:
    """What one side sends: raw text, or a conversation rendered with a template."""

    side: Side
    mode: Mode
    text: str = ""
    """Raw mode: the text the model continues."""
    messages: tuple[Message, ...] = ()
    """Chat mode: the conversation."""
    template: str | None = None
    """Chat mode with this template instead of the model's own (the template swap)."""
    examples: InContext | None = None
    """In-context mode: the preamble and examples (None: the user's file, else the bundled)."""

    @property
    def label(self) -> str:
        """The mode in words, as the panes and the CLI show it."""
        if self.mode == "raw":
            return "raw completion"
        if self.mode == "incontext":
            return INCONTEXT_LABEL
        return "chat, swapped template" if self.template else "chat template"


@dataclass(frozen=True)
class Plan:
    """The sides of one comparison: base and instruct, and maybe base in context."""

    base: SideRequest
    instruct: SideRequest
    incontext: SideRequest | None = None
    run_base: bool = True
    """False: the in-context side takes the raw base side's place (it does not run)."""

    @property
    def sides(self) -> tuple[Side, ...]:
        """The sides that run, in order."""
        return tuple(
            s
            for s in SIDES
            if (s != "base" or self.run_base) and (s != "incontext" or self.incontext)
        )

    def for_side(self, side: Side) -> SideRequest:
        if side == "incontext":
            if self.incontext is None:
                raise LabError("this comparison has no in-context side")
            return self.incontext
        return self.base if side == "base" else self.instruct


def plan(
    prompt: str,
    *,
    system: str | None = None,
    base_prompt: str | None = None,
    base_mode: Mode = "raw",
    instruct_mode: Mode = "chat",
    base_template: str | None = None,
    instruct_template: str | None = None,
    incontext: bool = False,
    run_base: bool = True,
    examples: InContext | None = None,
) -> Plan:
    """The usual comparison: the base side continues `base_prompt` (default `prompt`) raw,
    the instruct side answers `prompt` (after `system`) through its chat template.

    A side in the other mode gets the same inputs: in chat mode the base side's user message
    is `base_prompt or prompt`; raw, the instruct side continues `prompt`. `incontext` adds
    the base model answering `prompt` through in-context `examples` (the system message joins
    the preamble); `run_base=False` leaves the raw base side out.
    """

    def messages(text: str) -> tuple[Message, ...]:
        return (*([Message("system", system)] if system else []), Message("user", text))

    def request(side: Side, mode: Mode, text: str, template: str | None) -> SideRequest:
        if mode == "raw":
            return SideRequest(side, "raw", text=text)
        return SideRequest(side, "chat", messages=messages(text), template=template)

    return Plan(
        base=request("base", base_mode, base_prompt or prompt, base_template),
        instruct=request("instruct", instruct_mode, prompt, instruct_template),
        incontext=SideRequest(
            "incontext", "incontext", messages=messages(prompt), examples=examples
        )
        if incontext
        else None,
        run_base=run_base or not incontext,
    )


@dataclass(frozen=True)
class Prepared:
    """The prompt X-ray: exactly what a side sends, as text and as tokens."""

    text: str
    tokens: tuple[Token, ...]
    n_ctx: int

    @property
    def ids(self) -> list[int]:
        return [t.id for t in self.tokens]


def prepare(engine: Engine, request: SideRequest) -> Prepared:
    """The exact prompt `request` sends to `engine` (raises TemplateError, EngineError)."""
    info = engine.info
    if info is None:
        raise LabError(f"the {request.side} side has no model loaded: load one first")
    if request.mode == "incontext":
        text = build_prompt(request.examples or load_incontext(), request.messages)
        tokens = tuple(engine.tokenize(text))
        if tokens and tokens[0].special and info.bos_token and tokens[0].text == info.bos_token:
            text = info.bos_token + text
        return Prepared(text, tokens, info.n_ctx)
    if request.mode == "chat" and request.template is None:
        rendered = engine.render(request.messages)
        return Prepared(rendered.text, rendered.tokens, info.n_ctx)
    if request.mode == "chat":
        assert request.template is not None
        text = render_chat(
            request.template,
            request.messages,
            bos_token=info.bos_token,
            eos_token=info.eos_token,
        )
    else:
        text = request.text
    tokens = tuple(engine.tokenize(text))
    bos = info.bos_token
    if tokens and tokens[0].special and bos and tokens[0].text == bos and not text.startswith(bos):
        text = bos + text  # the BOS the engine adds is part of what is sent
    return Prepared(text, tokens, info.n_ctx)


@dataclass(frozen=True)
class GenToken:
    """One generated token with the alternatives the model weighed at that step."""

    id: int
    text: str
    alternatives: tuple[Alternative, ...] = ()

    @property
    def prob(self) -> float | None:
        """The probability of the chosen token, when alternatives were asked for."""
        return next((a.prob for a in self.alternatives if a.id == self.id), None)


@dataclass
class SideRun:
    """One side's outcome, filled in as its events arrive."""

    request: SideRequest
    prepared: Prepared | None = None
    tokens: list[GenToken] = field(default_factory=list)
    done: DoneEvent | None = None
    branched_at: int | None = None
    """The index of the token replaced by an alternative, for a branched run."""

    @property
    def text(self) -> str:
        return "".join(t.text for t in self.tokens)

    @property
    def generated_ids(self) -> list[int]:
        return [t.id for t in self.tokens]

    def add(self, event: TokenEvent) -> None:
        # id -1 carries text held back for a stop string that never came: it belongs to the
        # token before it, not to a token of its own (branching counts real tokens only).
        if event.id < 0 and self.tokens:
            last = self.tokens[-1]
            self.tokens[-1] = replace(last, text=last.text + event.text)
        else:
            self.tokens.append(GenToken(event.id, event.text, event.alternatives))


@dataclass(frozen=True)
class CompareResult:
    runs: dict[Side, SideRun]
    """Every side that ran, in `SIDES` order."""
    wall_s: float
    concurrent: bool

    def for_side(self, side: Side) -> SideRun:
        run = self.runs.get(side)
        if run is None:
            raise LabError(f"the {side} side did not run in this comparison")
        return run

    @property
    def base(self) -> SideRun:
        return self.for_side("base")

    @property
    def instruct(self) -> SideRun:
        return self.for_side("instruct")

    @property
    def incontext(self) -> SideRun | None:
        return self.runs.get("incontext")


def _error_done(exc: BaseException) -> DoneEvent:
    if isinstance(exc, LocalbviError):
        return DoneEvent(finish_reason="error", stop_detail="error", error=str(exc))
    return DoneEvent(
        finish_reason="error",
        stop_detail="error",
        error=f"internal error: {type(exc).__name__}: {exc} (please report it)",
    )


def _consume(
    engine: Engine,
    run: SideRun,
    events: Callable[[], Iterator[Event]],
    on_event: OnEvent | None,
    cancelled: threading.Event,
) -> SideRun:
    """Stream `events()` into `run`; errors become a done event, never an exception."""
    side = run.request.side
    try:
        for event in events():
            if isinstance(event, TokenEvent):
                run.add(event)
                if cancelled.is_set():
                    engine.cancel()  # a cancel sent before the stream started was lost
            else:
                run.done = event
            if on_event is not None:
                on_event(side, event)
    except Exception as exc:
        run.done = _error_done(exc)
        if on_event is not None:
            on_event(side, run.done)
    if run.done is None:
        run.done = DoneEvent(finish_reason="error", error="the engine ended without a result")
        if on_event is not None:
            on_event(side, run.done)
    return run


def _cancelled_before_start(run: SideRun, on_event: OnEvent | None) -> SideRun:
    run.done = DoneEvent(finish_reason="cancelled", stop_detail="cancelled before it started")
    if on_event is not None:
        on_event(run.request.side, run.done)
    return run


def side_sampling(
    request: SideRequest, sampling: Sampling, examples: InContext | None = None
) -> Sampling:
    """What a side samples with: the in-context side adds its stops and repetition penalty,
    and keeps only the stops of `sampling` that cannot cut an answer in its frame (checked
    against `examples`, else the request's own, else the frame alone)."""
    if request.mode != "incontext":
        return sampling
    return incontext_sampling(sampling, examples or request.examples)


def run_side(
    engine: Engine,
    request: SideRequest,
    sampling: Sampling,
    *,
    on_event: OnEvent | None = None,
    cancelled: threading.Event | None = None,
) -> SideRun:
    """Prepare and run one side; the outcome (even an error) is in the returned run."""
    cancelled = cancelled or threading.Event()
    run = SideRun(request)
    if cancelled.is_set():
        return _cancelled_before_start(run, on_event)
    try:
        run.prepared = prepare(engine, request)
    except Exception as exc:
        run.done = _error_done(exc)
        if on_event is not None:
            on_event(request.side, run.done)
        return run

    def events() -> Iterator[Event]:
        if request.mode == "chat" and request.template is None:
            return engine.chat(request.messages, sampling)
        assert run.prepared is not None
        if request.mode == "incontext":
            examples = request.examples or load_incontext()
            prime = getattr(engine, "prime", None)
            if prime is not None:  # the preamble's state comes from the prefix cache on disk
                prime(preamble_text(examples, request.messages))
            return engine.complete(
                build_prompt(examples, request.messages), side_sampling(request, sampling, examples)
            )
        # Swapped template or raw: send the prepared text exactly as the X-ray shows it.
        return engine.complete(
            run.prepared.text if request.mode == "chat" else request.text, sampling
        )

    return _consume(engine, run, events, on_event, cancelled)


class CompareRun:
    """One comparison that can be cancelled from another thread (Escape cancels every side).

    The in-context side runs on the base engine, after the raw base side.
    """

    def __init__(
        self,
        base_engine: Engine,
        instruct_engine: Engine,
        the_plan: Plan,
        sampling: Sampling,
        *,
        on_event: OnEvent | None = None,
        concurrent: bool = DEFAULT_CONCURRENT,
    ) -> None:
        self.engines: dict[Side, Engine] = {
            "base": base_engine,
            "incontext": base_engine,
            "instruct": instruct_engine,
        }
        self.plan = the_plan
        self.sampling = sampling
        self.on_event = on_event
        # One engine runs one generation at a time: the same engine on both sides is serial.
        self.concurrent = concurrent and base_engine is not instruct_engine
        self._cancelled = threading.Event()

    @property
    def cancelled(self) -> bool:
        return self._cancelled.is_set()

    def cancel(self) -> None:
        """Stop both sides (thread-safe); a side not yet started never starts."""
        self._cancelled.set()
        for engine in {id(e): e for e in self.engines.values()}.values():
            engine.cancel()

    def _side(self, side: Side) -> SideRun:
        return run_side(
            self.engines[side],
            self.plan.for_side(side),
            self.sampling,
            on_event=self.on_event,
            cancelled=self._cancelled,
        )

    def run(self) -> CompareResult:
        """Run every side and return their outcomes (never raises for a side's failure)."""
        started = time.perf_counter()
        sides = self.plan.sides
        results: dict[Side, SideRun] = {}
        if not self.concurrent:
            for side in sides:
                results[side] = self._side(side)
        else:

            def work(group: tuple[Side, ...]) -> None:
                for side in group:
                    results[side] = self._side(side)

            on_base = tuple(s for s in sides if s != "instruct")  # one engine: one at a time
            thread = threading.Thread(target=work, args=(on_base,), name="compare-base")
            thread.start()
            work(("instruct",))
            thread.join()
        runs = {side: results[side] for side in sides}
        return CompareResult(runs, time.perf_counter() - started, self.concurrent)


def run_compare(
    base_engine: Engine,
    instruct_engine: Engine,
    prompt: str | Plan,
    sampling: Sampling,
    *,
    on_event: OnEvent | None = None,
    concurrent: bool = DEFAULT_CONCURRENT,
) -> CompareResult:
    """Run the sides of `prompt` (a plain prompt uses `plan`: base and instruct)."""
    the_plan = plan(prompt) if isinstance(prompt, str) else prompt
    return CompareRun(
        base_engine,
        instruct_engine,
        the_plan,
        sampling,
        on_event=on_event,
        concurrent=concurrent,
    ).run()


def branch_ids(
    prompt_ids: Sequence[int], generated_ids: Sequence[int], index: int, alt_id: int
) -> list[int]:
    """The token ids to continue from when generated token `index` is replaced by `alt_id`."""
    if not 0 <= index < len(generated_ids):
        raise LabError(
            f"cannot branch at token {index}: the run generated {len(generated_ids)} tokens; "
            "pick one of them"
        )
    return [*prompt_ids, *generated_ids[:index], alt_id]


def branch(
    engine: Engine,
    run: SideRun,
    index: int,
    alternative: Alternative,
    sampling: Sampling,
    *,
    on_event: OnEvent | None = None,
    cancelled: threading.Event | None = None,
) -> SideRun:
    """A new run of `run`'s side: its tokens up to `index`, then `alternative`, then what the
    model writes from there. `on_event` sees only the continuation's events."""
    if run.prepared is None:
        raise LabError("this side never started, so there is nothing to branch from")
    ids = branch_ids(run.prepared.ids, run.generated_ids, index, alternative.id)
    kept = run.tokens[index].alternatives if index < len(run.tokens) else ()
    new = SideRun(
        run.request,
        run.prepared,
        tokens=[*run.tokens[:index], GenToken(alternative.id, alternative.text, kept)],
        branched_at=index,
    )
    cancelled = cancelled or threading.Event()
    if cancelled.is_set():
        return _cancelled_before_start(new, on_event)
    sampling = side_sampling(run.request, sampling)
    return _consume(engine, new, lambda: engine.complete(ids, sampling), on_event, cancelled)


def stop_reason(done: DoneEvent) -> str:
    """Why a side stopped, in the words the panes show: EOS, length, stop string, cancelled."""
    detail = done.stop_detail
    if done.finish_reason == "stop":
        if detail.startswith("stop string"):
            return detail
        return f"EOS ({detail})" if detail else "EOS"
    if done.finish_reason == "length":
        return f"length ({detail})" if detail else "length"
    if done.finish_reason == "cancelled":
        return "cancelled"
    return f"error: {done.error}" if done.error else "error"


def side_stats(done: DoneEvent) -> str:
    """One line of stats for a side: tokens, speed, and why it stopped."""
    return f"{done.tokens} tokens · {done.tokens_per_s:.1f} tok/s · {stop_reason(done)}"


def sibling_ref(ref: str) -> str | None:
    """The catalog sibling of a catalog reference (`gemma-3-270m:Q8_0` → `gemma-3-270m-it`,
    keeping the quant when the sibling has it), or None when `ref` is no catalog id."""
    from localbvi.catalog import load_catalog
    from localbvi.store.refs import parse_ref

    parsed = parse_ref(ref)
    if parsed.kind != "catalog" or parsed.catalog_id is None:
        return None
    catalog = load_catalog()
    entry = catalog.find(parsed.catalog_id)
    if entry is None:
        return None
    sibling = catalog.sibling(entry)
    if parsed.quant and any(q.lower() == parsed.quant.lower() for q in sibling.files):
        return f"{sibling.id}:{parsed.quant}"
    return sibling.id


def pair_refs(base: str | None, instruct: str | None) -> tuple[str, str]:
    """Both references of a comparison; a missing one is the other's catalog sibling."""
    if base and instruct:
        return base, instruct
    given = base or instruct
    if not given:
        raise LabError("name the models to compare: --base REF and --instruct REF")
    other = sibling_ref(given)
    if other is None:
        missing = "--instruct" if base else "--base"
        raise LabError(
            f"{given!r} is not a catalog model, so its sibling is unknown: give {missing} REF "
            "too (`localbvi models` lists the catalog pairs)"
        )
    return (given, other) if base else (other, given)
