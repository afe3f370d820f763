"""`localbvi compare` and `localbvi experiments`: the base-vs-instruct lab, headless."""

from __future__ import annotations

import argparse
import os
import re
import sys
import threading
from dataclasses import replace
from typing import Any

from localbvi.cli.common import (
    add_load_flags,
    add_sampling_flags,
    emit_json,
    load_config_from,
    progress_printer,
    sampling_from,
)
from localbvi.engine.host import OpenedModel, open_model
from localbvi.engine.types import DoneEvent, Event, Sampling, TokenEvent
from localbvi.errors import LocalbviError, UsageError, printable
from localbvi.lab.compare import (
    SIDES,
    CompareRun,
    Plan,
    Side,
    SideRequest,
    pair_refs,
    plan,
    side_stats,
)
from localbvi.lab.experiments import Experiment, ExperimentError, load_experiments
from localbvi.lab.report import COLUMNS, render_json, render_markdown, run_report

__all__ = ["register"]

_DEFAULTS = Sampling()


def _add_pair_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("models")
    g.add_argument(
        "--base",
        metavar="REF",
        help="the base model (raw completion); a catalog id alone implies its sibling",
    )
    g.add_argument(
        "--instruct",
        metavar="REF",
        help="the instruct model (chat template); a catalog id alone implies its sibling",
    )
    g.add_argument(
        "--base-mode",
        choices=("raw", "chat"),
        default="raw",
        help="chat: give the base model a chat template, the instruct model's when it has "
        "none (template swap). Default raw",
    )
    g.add_argument(
        "--instruct-mode",
        choices=("chat", "raw"),
        default="chat",
        help="raw: run the instruct model without its template. Default chat",
    )
    p.add_argument("--json", action="store_true", help="JSON Lines events, each with a side")
    p.add_argument(
        "--concurrent",
        action="store_true",
        help="run both models at once (slower on 2-4 cores; see ARCHITECTURE.md)",
    )
    add_sampling_flags(p, top_probs=True)
    add_load_flags(p)


def register(sub: Any) -> None:
    p = sub.add_parser(
        "compare",
        help="one prompt, base model raw vs instruct model in chat mode",
        description="Run one prompt on a base model (raw completion) and an instruct model "
        "(through its chat template), and print both outputs with their stats.",
    )
    p.add_argument("prompt", metavar="PROMPT", help="the prompt ('-' reads stdin)")
    p.add_argument("--system", metavar="TEXT", help="a system message for the instruct side")
    p.add_argument(
        "--base-prompt",
        metavar="TEXT",
        help="a different text for the base side (e.g. a few-shot framing)",
    )
    p.add_argument(
        "--in-context",
        action="store_true",
        help="add a third side: the base model answering through in-context examples "
        "(incontext.toml; stops at '# Query', repetition penalty 1.1 unless set)",
    )
    _add_pair_flags(p)
    p.set_defaults(handler=_compare)

    p = sub.add_parser(
        "experiments",
        help="list the built-in experiments, or run one (`experiments run ID`)",
        description="Experiments are prompts that show how base and instruct models differ. "
        "They come from localbvi's bundled experiments.toml and your own experiments.toml "
        "in the config folder.",
    )
    p.set_defaults(handler=_list)
    esub = p.add_subparsers(dest="experiments_command", metavar="ACTION", parser_class=type(p))
    lp = esub.add_parser("list", help="list the experiments (the default)")
    lp.add_argument("--json", action="store_true", help="one JSON record per experiment")
    lp.set_defaults(handler=_list)
    rp = esub.add_parser(
        "run",
        help="run one experiment on a base/instruct pair, or all of them as one table",
        description="Run an experiment: the base side continues its prompt raw, the instruct "
        "side answers it through its chat template. With --all: every experiment on three "
        "columns (base raw, base through in-context examples, instruct) as one table, each "
        "cell the output with its tokens and tok/s, the instruct cell with its token shift.",
    )
    rp.add_argument(
        "name", metavar="ID", nargs="?", help="the experiment's id (see `localbvi experiments`)"
    )
    rp.add_argument(
        "--all", action="store_true", help="run every experiment and write one report table"
    )
    rp.add_argument(
        "--format",
        choices=("md", "json"),
        default=None,
        help="with --all: the report as a Markdown table (default) or one JSON object",
    )
    rp.add_argument("-o", "--output", metavar="FILE", help="with --all: write the report to FILE")
    _add_pair_flags(rp)
    rp.set_defaults(handler=_run_experiment)


# -- experiments ---------------------------------------------------------------------------


def _list(args: argparse.Namespace) -> int:
    experiments = load_experiments()
    if getattr(args, "json", False):
        for e in experiments:
            emit_json(
                {
                    "id": e.id,
                    "title": e.title,
                    "what_to_look_for": e.what_to_look_for,
                    "prompt": e.prompt,
                    "base_prompt": e.base_prompt,
                    "system": e.system,
                    "sampling": dict(e.sampling),
                }
            )
        return 0
    width = max((len(e.id) for e in experiments), default=0)
    for e in experiments:
        print(printable(f"{e.id:<{width}}  {e.title}"))  # the user's file: no controls
    print("\nRun one: localbvi experiments run ID --base REF [--instruct REF]", file=sys.stderr)
    return 0


def _experiment_sampling(args: argparse.Namespace, experiment: Experiment) -> Sampling:
    """The experiment's overrides win over flag defaults; a flag the user set wins over both."""
    sampling = _sampling(args)
    values: dict[str, Any] = {}
    for key, value in experiment.sampling.items():
        if key == "stop":
            if not args.stop:
                values["stop"] = tuple(value)
        elif getattr(args, key, None) in (None, getattr(_DEFAULTS, key)):
            values[key] = value  # the flag was left out
    return replace(sampling, **values)


def _run_experiment(args: argparse.Namespace) -> int:
    if args.all:
        return _run_all(args)
    if args.name is None:
        raise UsageError("name an experiment to run (see `localbvi experiments`), or give --all")
    if args.format or args.output:
        raise UsageError("--format and --output belong to --all (the report of every experiment)")
    experiments = load_experiments()  # a broken experiments file: exit 1, naming it
    try:
        experiment = experiments.get(args.name)
    except ExperimentError as exc:
        raise UsageError(str(exc)) from None  # an unknown id is a mistyped command line
    _require_models(args)
    if not args.json:
        print(printable(f"# {experiment.title}\n{experiment.what_to_look_for}\n"))
    the_plan = plan(
        experiment.prompt,
        system=experiment.system,
        base_prompt=experiment.base_prompt,
        base_mode=args.base_mode,
        instruct_mode=args.instruct_mode,
    )
    return _run(args, the_plan, _experiment_sampling(args, experiment))


def _run_all(args: argparse.Namespace) -> int:
    """Every experiment on base raw, base in context and instruct: one table."""
    if args.name is not None:
        raise UsageError(f"give an experiment ID or --all, not both (got {args.name!r})")
    for flag, value, default in (
        ("--base-mode", args.base_mode, "raw"),
        ("--instruct-mode", args.instruct_mode, "chat"),
        ("--concurrent", args.concurrent, False),
        ("--top-k-probs", getattr(args, "top_probs", None) or 0, 0),
    ):
        if value != default:
            raise UsageError(f"{flag} does not apply to --all (its three columns are fixed)")
    _require_models(args)
    folder = os.path.dirname(os.path.abspath(args.output)) if args.output else ""
    if folder and not os.path.isdir(folder):  # say so before minutes of generation
        raise LocalbviError(
            f"cannot write the report to {args.output}: {folder} is not a folder; "
            "choose a path in an existing folder with -o"
        )
    fmt = "json" if args.json else (args.format or "md")
    experiments = list(load_experiments())
    base_ref, instruct_ref = pair_refs(args.base, args.instruct)
    config = load_config_from(args)
    opened: list[OpenedModel] = []
    try:
        base = open_model(base_ref, config, on_progress=progress_printer())
        opened.append(base)
        if instruct_ref == base_ref:
            instruct = base
        else:
            instruct = open_model(instruct_ref, config, on_progress=progress_printer())
            opened.append(instruct)
        cancelled = threading.Event()
        try:
            result = run_report(
                base.engine,
                instruct.engine,
                experiments,
                lambda e: _experiment_sampling(args, e),
                names=(base.display_name, instruct.display_name),
                refs=(base_ref, instruct_ref),
                sampling=_sampling(args),
                on_progress=lambda p: print(f"{p} …", file=sys.stderr, flush=True),
                cancelled=cancelled,
            )
        except KeyboardInterrupt:
            cancelled.set()
            for model in opened:
                model.engine.cancel()
            raise
    finally:
        for model in opened:
            model.engine.close()
    text = render_json(result) if fmt == "json" else render_markdown(result)
    if args.output:
        try:
            with open(args.output, "w", encoding="utf-8") as f:
                f.write(text)
        except OSError as exc:
            raise LocalbviError(
                f"cannot write the report to {args.output}: {exc.strerror or exc}; "
                "choose a writable path with -o"
            ) from None
        print(f"report written to {args.output}", file=sys.stderr)
    else:
        sys.stdout.write(text)
        sys.stdout.flush()
    failed = result.failed
    if failed:
        row, cell = failed[0]
        more = f" (and {len(failed) - 1} more)" if len(failed) > 1 else ""
        raise LocalbviError(
            f"{row.experiment.id} · {COLUMNS[cell.column]} failed: {cell.error}{more}; "
            "the report shows every other cell"
        )
    return 0


# -- compare -------------------------------------------------------------------------------


def _sampling(args: argparse.Namespace) -> Sampling:
    return sampling_from(args)


def _compare(args: argparse.Namespace) -> int:
    _require_models(args)
    prompt = sys.stdin.read() if args.prompt == "-" else args.prompt
    the_plan = plan(
        prompt,
        system=args.system,
        base_prompt=args.base_prompt,
        base_mode=args.base_mode,
        instruct_mode=args.instruct_mode,
        incontext=args.in_context,
    )
    return _run(args, the_plan, _sampling(args))


def _json_errors(args: argparse.Namespace, exc: LocalbviError) -> int:
    if args.json:
        emit_json({"type": "error", "message": str(exc)})
        return 1
    raise exc


def _require_models(args: argparse.Namespace) -> None:
    if not args.base and not args.instruct:
        raise UsageError("name the models to compare: --base REF and/or --instruct REF")


def _run(args: argparse.Namespace, the_plan: Plan, sampling: Sampling) -> int:
    try:
        base_ref, instruct_ref = pair_refs(args.base, args.instruct)
    except LocalbviError as exc:
        return _json_errors(args, exc)
    opened: list[OpenedModel] = []
    try:
        try:
            config = load_config_from(args)
            base = open_model(base_ref, config, on_progress=progress_printer())
            opened.append(base)
            if instruct_ref == base_ref:
                instruct = base  # one model in both modes: one engine, sides run in turn
            else:
                instruct = open_model(instruct_ref, config, on_progress=progress_printer())
                opened.append(instruct)
            the_plan = _swap_templates(the_plan, base, instruct, quiet=args.json)
        except LocalbviError as exc:
            return _json_errors(args, exc)
        models: dict[Side, OpenedModel] = {"base": base, "incontext": base, "instruct": instruct}
        printer = _Printer(models, the_plan, json_mode=args.json, buffered=args.concurrent)
        run = CompareRun(
            base.engine,
            instruct.engine,
            the_plan,
            sampling,
            on_event=printer.event,
            concurrent=args.concurrent,
        )
        try:
            result = run.run()
        except KeyboardInterrupt:
            run.cancel()
            raise
        printer.flush()
        failed = [r.done for r in result.runs.values() if r.done and r.done.error]
        return 1 if failed else 0
    finally:
        for model in opened:
            model.engine.close()


def _swap_templates(
    the_plan: Plan, base: OpenedModel, instruct: OpenedModel, *, quiet: bool
) -> Plan:
    """A side in chat mode whose model has no template borrows the other model's."""

    def swapped(request: SideRequest, model: OpenedModel, other: OpenedModel) -> SideRequest:
        if request.mode != "chat" or model.info.chat_template or request.template:
            return request
        if not other.info.chat_template:
            return request  # the engine's own TemplateError says what to do
        if not quiet:
            print(
                f"({model.display_name} has no chat template: using "
                f"{other.display_name}'s, a template swap)",
                file=sys.stderr,
            )
        return replace(request, template=other.info.chat_template)

    return replace(
        the_plan,
        base=swapped(the_plan.base, base, instruct),
        instruct=swapped(the_plan.instruct, instruct, base),
    )


_UNFINISHED = re.compile(
    r"\x1b(?:\[[0-?]*[ -/]*|[\]PX^_][^\x07\x1b]*(?:\x1b)?)?\Z"  # ESC, CSI, OSC/DCS… no end yet
)
_MAX_HELD = 256


def _split_unfinished(text: str) -> tuple[str, str]:
    """`text` split before an escape sequence it leaves unfinished (held for the next token;
    a long one is let through, `printable` drops what it can of it)."""
    match = _UNFINISHED.search(text, max(0, len(text) - _MAX_HELD))
    if match is None:
        return text, ""
    return text[: match.start()], text[match.start() :]


class _Printer:
    """Prints both sides: JSON Lines as they come, or text with a header and stats per side.

    Concurrent text output is buffered per side (two streams cannot share one terminal line).
    Text output never passes a control sequence from a model (its output, its name, a stop
    string) to the terminal: ESC and C0/C1 controls other than newline and tab are dropped.
    Streamed, an escape sequence a token leaves unfinished is held until the next token, so
    one split across tokens is dropped whole.
    """

    def __init__(
        self,
        models: dict[Side, OpenedModel],
        the_plan: Plan,
        *,
        json_mode: bool,
        buffered: bool,
    ) -> None:
        self.models = models
        self.plan = the_plan
        self.json_mode = json_mode
        self.buffered = buffered
        self.lock = threading.Lock()
        self.started: set[Side] = set()
        self.buffers: dict[Side, list[str]] = {side: [] for side in SIDES}
        self.ended_with_newline: dict[Side, bool] = dict.fromkeys(SIDES, True)
        self.held: dict[Side, str] = dict.fromkeys(SIDES, "")
        """A streamed side's unfinished escape sequence, waiting for its next token."""

    def event(self, side: Side, event: Event) -> None:
        with self.lock:
            if self.json_mode:
                self._json(side, event)
            else:
                self._text(side, event)

    def _json(self, side: Side, event: Event) -> None:
        if isinstance(event, TokenEvent):
            emit_json({**event.to_json(), "side": side})
            return
        model = self.models[side]
        done = replace(event, load_s=model.info.load_s)
        record = done.to_json()
        record.update(
            side=side,
            mode=self.plan.for_side(side).mode,
            model=model.display_name,
        )
        emit_json(record)

    def _text(self, side: Side, event: Event) -> None:
        out = self.buffers[side]
        if not self.buffered and side not in self.started:
            self.started.add(side)
            sys.stdout.write(self._header(side))
        if isinstance(event, TokenEvent):
            if self.buffered:
                out.append(event.text)
            else:
                raw, self.held[side] = _split_unfinished(self.held[side] + event.text)
                if text := printable(raw):
                    sys.stdout.write(text)
                    sys.stdout.flush()
                    self.ended_with_newline[side] = text.endswith("\n")
            return
        self.held[side] = ""  # a sequence the reply never finished: dropped
        if self.buffered:
            text = printable("".join(out))
            sys.stdout.write(self._header(side) + text)
            self.ended_with_newline[side] = not text or text.endswith("\n")
        sys.stdout.write(self._footer(side, event))
        sys.stdout.flush()

    def _header(self, side: Side) -> str:
        request = self.plan.for_side(side)
        name = printable(self.models[side].display_name)
        return f"── {side}: {name} · {printable(request.label)} ──\n"

    def _footer(self, side: Side, done: DoneEvent) -> str:
        newline = "" if self.ended_with_newline[side] else "\n"
        line = f"{newline}[{printable(side_stats(done))}]\n\n"
        return line

    def flush(self) -> None:
        sys.stdout.flush()
