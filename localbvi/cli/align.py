"""`localbvi shift`: where instruct tuning changed the model, token by token (the alignment lab).

The instruct model answers greedily; the base model scores each answer token. Text output
colours each token by category on a terminal (plain brackets elsewhere), then the percentages,
the most often shifted tokens and a KL sparkline; `--json` prints one record per token and a
summary. `--frame all` scores the one answer under every frame (the instruct model answers
once) and sets their figures side by side. "scoring n/N" goes to stderr on a terminal (or
with `--progress`); Ctrl-C stops the scoring between chunks.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any, TextIO

from localbvi.cli.common import (
    add_load_flags,
    add_sampling_flags,
    emit_json,
    load_config_from,
    progress_printer,
    sampling_from,
)
from localbvi.engine.host import OpenedModel, open_model
from localbvi.engine.types import ScoreProgress
from localbvi.errors import LocalbviError, printable
from localbvi.lab.compare import pair_refs
from localbvi.lab.shift import (
    FRAMES,
    PAPER_FIGURES,
    Frame,
    ShiftResult,
    instruct_answer,
    score_answer,
    sparkline,
)

__all__ = ["frames_table", "register", "shift_report"]

_COLOURS = {"unshifted": "", "marginal": "\x1b[33m", "shifted": "\x1b[1;31m"}
_MARKS = {"unshifted": ("", ""), "marginal": ("[", "]"), "shifted": ("[[", "]]")}


def register(sub: Any) -> None:
    paper = "; ".join(f"{name}: {u} / {m} / {s} %" for name, u, m, s in PAPER_FIGURES)
    p = sub.add_parser(
        "shift",
        help="where instruct tuning changed the model: each answer token scored by the base",
        description="The instruct model answers PROMPT greedily in its chat template; the base "
        "model then scores every answer token at its position, given the question in a frame "
        "of its own. Rank 1 in the base model is unshifted, 2-3 marginal, lower shifted "
        f"(Lin et al., ICLR 2024, unshifted / marginal / shifted: {paper}).",
    )
    p.add_argument("prompt", metavar="PROMPT", help="the question ('-' reads stdin)")
    p.add_argument("--base", metavar="REF", help="the base model (a catalog id implies its pair)")
    p.add_argument("--instruct", metavar="REF", help="the instruct model")
    p.add_argument("--system", metavar="TEXT", help="a system message for the instruct model")
    p.add_argument(
        "--frame",
        choices=(*FRAMES, "all"),
        default="plain",
        help="what the base model sees before the answer: "
        + "; ".join(f"{k}: {v}" for k, v in FRAMES.items())
        + "; all: the one answer scored under each frame, figures side by side",
    )
    p.add_argument(
        "--progress",
        action="store_true",
        help="print 'scoring n/N' to stderr even when it is not a terminal",
    )
    p.add_argument(
        "--candidates",
        dest="score_top_k",
        type=_top_k,
        default=10,
        metavar="K",
        help="candidates per position for the KL divergence and alternatives (1-20, default 10)",
    )
    p.add_argument("--json", action="store_true", help="one record per token, then a summary")
    add_sampling_flags(p)
    add_load_flags(p)
    p.set_defaults(handler=_shift)


def _top_k(value: str) -> int:
    try:
        n = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {value!r}") from None
    if not 1 <= n <= 20:
        raise argparse.ArgumentTypeError(f"expected 1 to 20, got {n}")
    return n


def _shift(args: argparse.Namespace) -> int:
    question = sys.stdin.read() if args.prompt == "-" else args.prompt
    try:
        base_ref, instruct_ref = pair_refs(args.base, args.instruct)
    except LocalbviError as exc:
        return _fail(args, exc)
    frames: list[Frame] = list(FRAMES) if args.frame == "all" else [args.frame]
    opened: list[OpenedModel] = []
    results: list[ShiftResult] = []
    try:
        config = load_config_from(args)
        base = open_model(base_ref, config, on_progress=progress_printer())
        opened.append(base)
        instruct = open_model(instruct_ref, config, on_progress=progress_printer())
        opened.append(instruct)
        answer = instruct_answer(
            base.engine,
            instruct.engine,
            question,
            sampling_from(args),
            system=args.system,
            top_k=args.score_top_k,
        )
        for frame in frames:
            with _ScoringProgress(frame, args.progress) as show:
                results.append(
                    score_answer(
                        base.engine, answer, frame, top_k=args.score_top_k, on_progress=show
                    )
                )
    except LocalbviError as exc:
        return _fail(args, exc)
    finally:
        for model in opened:
            model.engine.close()
    if args.json:
        for result in results:
            for token in result.tokens:
                record = token.to_json()
                if len(results) > 1:  # which frame each record belongs to
                    record["frame"] = result.frame
                emit_json(record)
            emit_json(result.summary_json())
    else:
        report = shift_report(results[0], colour=sys.stdout.isatty())
        if len(results) > 1:
            report += "\n" + frames_table(results)
        sys.stdout.write(report)
        sys.stdout.flush()
    return 0


class _ScoringProgress:
    """'scoring n/N' on stderr while the base model scores: one updating line on a terminal,
    a line per report with `--progress` elsewhere, nothing otherwise; the line is cleared
    (terminal) when scoring ends."""

    def __init__(self, frame: str, forced: bool, stream: TextIO | None = None) -> None:
        self.err = stream or sys.stderr
        self.tty = self.err.isatty()
        self.on = self.tty or forced
        self.frame = frame
        self.drawn = False

    def __enter__(self) -> ScoreProgress | None:
        return self.show if self.on else None

    def show(self, done: int, total: int) -> None:
        text = f"scoring {done}/{total} ({self.frame} frame)"
        if self.tty:
            self.err.write(f"\r{text}   ")
            self.drawn = True
        else:
            self.err.write(text + "\n")
        self.err.flush()

    def __exit__(self, *exc: object) -> None:
        if self.drawn:
            self.err.write("\r\x1b[K")
            self.err.flush()


def _fail(args: argparse.Namespace, exc: LocalbviError) -> int:
    if args.json:
        emit_json({"type": "error", "message": str(exc)})
        return 1
    raise exc


def shift_report(result: ShiftResult, *, colour: bool) -> str:
    """The answer with each token marked by category, then the figures (plain text)."""
    out: list[str] = []
    for token in result.tokens:
        text = printable(token.text)
        cat = token.category
        if colour:
            out.append(f"{_COLOURS[cat]}{text}\x1b[0m" if _COLOURS[cat] else text)
        else:
            left, right = _MARKS[cat]
            out.append(f"{left}{text}{right}")
    pct = result.percentages()
    counts = result.counts()
    lines = [
        "".join(out).rstrip(),
        "",
        f"frame: {result.frame} ({FRAMES[result.frame]})",
        f"{len(result.tokens)} tokens: unshifted {pct['unshifted']:.1f} % "
        f"({counts['unshifted']}), marginal {pct['marginal']:.1f} % ({counts['marginal']}), "
        f"shifted {pct['shifted']:.1f} % ({counts['shifted']})",
    ]
    top = result.top_shifted(8)
    if top:
        lines.append("most shifted: " + ", ".join(f"{printable(t)!r} ×{n}" for t, n in top))
    lines.append(f"KL by position: {sparkline(result.kl_series(), 72)}")
    legend = "marginal in [ ], shifted in [[ ]]" if not colour else "marginal yellow, shifted red"
    lines.append(f"({legend}; the paper: " + "; ".join(
        f"{name} {u}/{m}/{s} %" for name, u, m, s in PAPER_FIGURES
    ) + ")")  # fmt: skip
    return "\n".join(lines) + "\n"


def frames_table(results: list[ShiftResult]) -> str:
    """The figures of one answer scored under several frames, a row per frame."""
    lines = [
        f"{len(results[0].tokens)} tokens of one answer, scored under each frame:",
        f"  {'frame':<10}{'unshifted':>11}{'marginal':>10}{'shifted':>9}{'mean KL':>9}",
    ]
    for result in results:
        pct = result.percentages()
        kl = result.kl_series()
        mean = sum(kl) / len(kl) if kl else 0.0
        lines.append(
            f"  {result.frame:<10}{pct['unshifted']:>9.1f} %{pct['marginal']:>8.1f} %"
            f"{pct['shifted']:>7.1f} %{mean:>9.3f}"
        )
    return "\n".join(lines) + "\n"
