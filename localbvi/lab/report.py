"""The seed table as one report: every experiment on base raw, base in context and instruct.

The table people learn the difference from: one row per experiment (the arithmetic question, a
code request, a harmful request, summarising an article, the assistant persona, few-shot and
JSON format), one column per way of running a model — the base model continuing the text raw,
the base model answering through in-context examples (`lab/incontext.py`), the instruct model
answering through its chat template. Each cell holds the actual output, its tokens and tok/s;
the instruct cell also holds the token distribution shift (`lab/shift.py`): how many of its
tokens the base model would have picked itself.

The instruct cell is the greedy answer that `run_shift` produces and scores, so the shift
figures describe exactly the text shown. `run_report` runs everything on two loaded engines
(each model loaded once, by the caller); `render_markdown` and `render_json` write it out.
Nothing here imports Textual.
"""

from __future__ import annotations

import json
import math
import os
import re
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from localbvi.engine.base import Engine
from localbvi.engine.types import DoneEvent, Event, Sampling, TokenEvent
from localbvi.errors import LocalbviError, printable
from localbvi.lab import incontext
from localbvi.lab.compare import SideRequest, run_side
from localbvi.lab.experiments import Experiment
from localbvi.lab.shift import PAPER_FIGURES, Category, check_vocab, run_shift

__all__ = [
    "COLUMNS",
    "SEED_IDS",
    "Cell",
    "Column",
    "ModelLabel",
    "Progress",
    "Report",
    "Row",
    "one_line",
    "render_json",
    "render_markdown",
    "run_report",
    "sampling_line",
    "to_json",
]

Column = Literal["base", "incontext", "instruct"]

COLUMNS: dict[Column, str] = {
    "base": "base, raw",
    "incontext": "base, in context",
    "instruct": "instruct, chat template",
}
"""The three ways a model runs in the report, in table order, with their headings."""

SEED_IDS = ("arithmetic", "code", "refusal", "summarize", "persona", "few-shot", "json-format")
"""The bundled experiments that make the seed table (checked by the tests)."""

CELL_WIDTH = 160
"""Characters of output a Markdown cell shows (the JSON keeps the whole text)."""


@dataclass(frozen=True)
class Cell:
    """One model's output for one experiment, with its figures."""

    column: Column
    text: str
    done: DoneEvent
    shift: dict[Category, float] | None = None
    """Instruct column: unshifted / marginal / shifted, in % of the answer's tokens."""
    shift_note: str = ""
    """Why the instruct column has no shift figures, when it has none."""

    @property
    def error(self) -> str:
        return self.done.error if self.done.finish_reason == "error" else ""

    def figures(self) -> str:
        """Tokens and speed, and the shift for the instruct cell, in one short line."""
        if self.error:
            return "error"
        parts = [f"{self.done.tokens} tok", f"{self.done.tokens_per_s:.1f} tok/s"]
        if self.done.finish_reason == "cancelled":
            parts.append("cancelled")
        if self.shift is not None:
            s = self.shift
            parts.append(f"shift {s['unshifted']:.0f}/{s['marginal']:.0f}/{s['shifted']:.0f} %")
        return " · ".join(parts)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "output": self.text,
            "tokens": self.done.tokens,
            "tokens_per_s": _finite(self.done.tokens_per_s),
            "ttft_s": _finite(self.done.ttft_s),
            "finish_reason": self.done.finish_reason,
            "stop_detail": self.done.stop_detail,
        }
        if self.error:
            out["error"] = self.error
        if self.column == "instruct":
            out["shift"] = (
                None if self.shift is None else {k: _finite(v) for k, v in self.shift.items()}
            )
            if self.shift_note:
                out["shift_note"] = self.shift_note
        return out


@dataclass
class Row:
    """One experiment and its cells (a column is missing only when the run was cancelled)."""

    experiment: Experiment
    cells: dict[Column, Cell] = field(default_factory=dict)
    sampling: Sampling | None = None
    """What its cells sampled with (the shared settings and the experiment's overrides)."""


@dataclass(frozen=True)
class ModelLabel:
    """Which model ran a side: enough to tell two files with the same GGUF name apart."""

    name: str
    """The display name (catalog name, GGUF metadata name or file stem)."""
    ref: str = ""
    """What the user named: a path, a catalog id or a Hub ref."""
    path: str = ""
    """The loaded file ("" for a model a server runs)."""

    @property
    def file_name(self) -> str:
        return os.path.basename(self.path) if self.path else ""

    def to_json(self) -> dict[str, str]:
        return {"name": self.name, "ref": self.ref, "path": self.path, "file": self.file_name}


@dataclass
class Report:
    """The whole table, and what it was run on."""

    base_name: str
    instruct_name: str
    rows: list[Row] = field(default_factory=list)
    cancelled: bool = False
    models: tuple[ModelLabel, ModelLabel] | None = None
    """The base and instruct models (name, reference, file)."""
    sampling: Sampling | None = None
    """The shared sampling settings (each experiment may override some: see `Row.sampling`)."""

    @property
    def failed(self) -> list[tuple[Row, Cell]]:
        """Cells whose model failed (the report still holds every other cell)."""
        return [(r, c) for r in self.rows for c in r.cells.values() if c.error]


@dataclass(frozen=True)
class Progress:
    """Which cell runs now: the `index`-th (1-based) of `total`."""

    index: int
    total: int
    experiment: Experiment
    column: Column

    def __str__(self) -> str:
        return f"[{self.index}/{self.total}] {self.experiment.id} · {COLUMNS[self.column]}"


def _finite(x: float) -> float | None:
    return round(x, 4) if math.isfinite(x) else None


# -- running ------------------------------------------------------------------------------------


def _error_cell(column: Column, exc: BaseException) -> Cell:
    message = str(exc) if isinstance(exc, LocalbviError) else f"internal error: {exc!r}"
    return Cell(column, "", DoneEvent(finish_reason="error", stop_detail="error", error=message))


def _collect(
    engine: Engine, column: Column, events: Iterator[Event], cancelled: threading.Event
) -> Cell:
    text: list[str] = []
    done: DoneEvent | None = None
    for event in events:
        if isinstance(event, TokenEvent):
            text.append(event.text)
            if cancelled.is_set():
                engine.cancel()
        else:
            done = event
    if done is None:
        done = DoneEvent(finish_reason="error", error="the engine ended without a result")
    return Cell(column, "".join(text), done)


def _base_cell(
    engine: Engine, experiment: Experiment, sampling: Sampling, cancelled: threading.Event
) -> Cell:
    run = run_side(
        engine,
        SideRequest("base", "raw", text=experiment.raw_prompt),
        sampling,
        cancelled=cancelled,
    )
    assert run.done is not None
    return Cell("base", run.text, run.done)


def _incontext_cell(
    engine: Engine,
    experiment: Experiment,
    sampling: Sampling,
    examples: incontext.InContext,
    cancelled: threading.Event,
) -> Cell:
    # The question is the instruct side's (a few-shot framing is the raw base's own lesson).
    events = incontext.stream(engine, experiment.messages(), sampling, examples)
    cell = _collect(engine, "incontext", events, cancelled)
    return Cell("incontext", incontext.clean_answer(cell.text), cell.done)


def _instruct_cell(
    base: Engine,
    instruct: Engine,
    experiment: Experiment,
    sampling: Sampling,
    shift_note: str,
    cancelled: threading.Event,
) -> Cell:
    if shift_note:  # no shift possible: a plain chat run with the user's sampling
        request = SideRequest("instruct", "chat", messages=tuple(experiment.messages()))
        run = run_side(instruct, request, sampling, cancelled=cancelled)
        assert run.done is not None
        return Cell("instruct", run.text, run.done, shift_note=shift_note)
    result = run_shift(
        base,
        instruct,
        experiment.prompt,
        sampling,
        system=experiment.system,
        cancelled=cancelled,
    )
    done = result.instruct_done
    shift = result.percentages() if done.finish_reason != "cancelled" else None
    return Cell("instruct", result.answer, done, shift=shift)


def _loaded_path(engine: Engine) -> str:
    """The file an engine loaded ("" for a server's model or an engine not loaded)."""
    info = engine.info
    return "" if info is None or info.remote else info.path


def _shift_unavailable(base: Engine, instruct: Engine) -> str:
    """Why the instruct column cannot be scored by the base model ("" when it can)."""
    try:
        check_vocab(base, instruct)
    except LocalbviError as exc:
        return str(exc)
    return ""


def run_report(
    base: Engine,
    instruct: Engine,
    experiments: Sequence[Experiment],
    sampling_for: Callable[[Experiment], Sampling],
    *,
    names: tuple[str, str] = ("base model", "instruct model"),
    refs: tuple[str, str] = ("", ""),
    sampling: Sampling | None = None,
    examples: incontext.InContext | None = None,
    on_progress: Callable[[Progress], None] | None = None,
    on_cell: Callable[[Row, Cell], None] | None = None,
    cancelled: threading.Event | None = None,
) -> Report:
    """Run every experiment on the three columns, one cell after the other.

    `sampling_for` gives each experiment's sampling (its own overrides applied as the caller
    decides). A failing cell holds its error and the run goes on; setting `cancelled` stops
    the running cell and skips the rest (the report then says `cancelled`).

    `names` and `refs` (what the user typed) label the models in the report, with the file
    each engine loaded; `sampling` is the shared settings the report's header states.
    """
    cancelled = cancelled or threading.Event()
    examples = examples or incontext.load_incontext()
    shift_note = _shift_unavailable(base, instruct)
    labels = tuple(
        ModelLabel(name, ref, _loaded_path(engine))
        for name, ref, engine in zip(names, refs, (base, instruct), strict=True)
    )
    report = Report(*names, models=(labels[0], labels[1]), sampling=sampling)
    total = len(experiments) * len(COLUMNS)
    index = 0
    for experiment in experiments:
        row = Row(experiment, sampling=sampling_for(experiment))
        report.rows.append(row)
        assert row.sampling is not None
        row_sampling = row.sampling
        for column in COLUMNS:
            if cancelled.is_set():
                report.cancelled = True
                return report
            index += 1
            if on_progress is not None:
                on_progress(Progress(index, total, experiment, column))
            try:
                if column == "base":
                    cell = _base_cell(base, experiment, row_sampling, cancelled)
                elif column == "incontext":
                    cell = _incontext_cell(base, experiment, row_sampling, examples, cancelled)
                else:
                    cell = _instruct_cell(
                        base, instruct, experiment, row_sampling, shift_note, cancelled
                    )
            except Exception as exc:  # one cell's failure is shown in its cell
                cell = (
                    Cell(column, "", DoneEvent(finish_reason="cancelled", stop_detail="cancelled"))
                    if cancelled.is_set()
                    else _error_cell(column, exc)
                )
            row.cells[column] = cell
            if on_cell is not None:
                on_cell(row, cell)
    report.cancelled = cancelled.is_set()
    return report


# -- rendering ----------------------------------------------------------------------------------

_SPACE = re.compile(r"[ \t\r\f\v]+")


def one_line(text: str, width: int = CELL_WIDTH) -> str:
    """`text` on one line: controls dropped, line breaks shown as ⏎, runs of spaces
    squeezed, cut to `width` characters with "…"."""
    lines = [_SPACE.sub(" ", line).strip() for line in printable(text).strip().split("\n")]
    flat = _SPACE.sub(" ", " ⏎ ".join(lines))
    return flat if len(flat) <= width else flat[: width - 1].rstrip() + "…"


def _md(text: str) -> str:
    """Safe inside a Markdown table cell: pipes escaped, HTML inert, empty made visible."""
    if not text:
        return "*(nothing)*"
    text = text.replace("\\", "\\\\").replace("|", "\\|")
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _md_cell(cell: Cell | None) -> str:
    if cell is None:
        return "*(not run)*"
    if cell.error:
        return f"**error:** {_md(one_line(cell.error))}"
    return f"{_md(one_line(cell.text))}<br>*{_md(cell.figures())}*"


_SAMPLING_WORDS: tuple[tuple[str, str], ...] = (
    ("temperature", "temperature {}"),
    ("top_p", "top-p {}"),
    ("top_k", "top-k {}"),
    ("min_p", "min-p {}"),
    ("repeat_penalty", "repeat penalty {}"),
    ("max_tokens", "max {} tokens"),
    ("seed", "seed {}"),
)


def sampling_line(sampling: Sampling, shared: Sampling | None = None) -> str:
    """The sampling settings in words ("temperature 0 · top-p 0.95 · … · stop "\n\n"");
    with `shared`, only those that differ from it ("" when none does)."""
    parts: list[str] = []
    for key, words in _SAMPLING_WORDS:
        value = getattr(sampling, key)
        if shared is not None and value == getattr(shared, key):
            continue
        if key == "seed" and value is None:
            parts.append("random seed")
        else:
            parts.append(words.format(f"{value:g}" if isinstance(value, float) else value))
    if sampling.stop and (shared is None or sampling.stop != shared.stop):
        parts.append("stop " + ", ".join(json.dumps(s, ensure_ascii=False) for s in sampling.stop))
    elif shared is not None and shared.stop and not sampling.stop:
        parts.append("no stop strings")
    return " · ".join(parts)


def _model_lines(report: Report) -> list[str]:
    """Which base and instruct models ran: display name, file name and what the user named
    (two files with the same GGUF name differ in their reference or folder)."""
    models = report.models or (ModelLabel(report.base_name), ModelLabel(report.instruct_name))
    out: list[str] = []
    for role, label in zip(("base", "instruct"), models, strict=True):
        line = f"- {role} model: **{_md(one_line(label.name, 80))}**"
        if label.file_name:
            line += f" · file `{_md(one_line(label.file_name, 120))}`"
        if label.ref:
            line += f" · {_md(one_line(label.ref, 200))}"
        if label.path and label.path != label.ref:
            line += f" ({_md(one_line(label.path, 200))})"
        out.append(line)
    return out


def render_markdown(report: Report) -> str:
    """The report as a Markdown document: a heading, the models and sampling, the table, and
    how to read it."""
    out = [
        "# Base vs instruct: the seed table",
        "",
        *_model_lines(report),
    ]
    if report.sampling is not None:
        out.append(
            f"- sampling: {_md(sampling_line(report.sampling))}; an experiment's own settings, "
            "shown under its id, override these; the in-context column stops at "
            f"`{incontext.STOP[0]}`, keeps only the stops that cannot cut its answer block "
            f"(not a blank line) and uses repeat penalty {incontext.REPEAT_PENALTY:g} unless set"
        )
    out += [
        "- columns: the base model continuing the text raw; the base model answering through "
        "in-context examples (`# Query:` / `# Answer:`); the instruct model answering through "
        "its chat template (greedy)",
        "- instruct shift: the base model's rank of each answer token — unshifted (its own "
        "first choice) / marginal (2nd-3rd) / shifted (lower), in %. Lin et al. 2024 found "
        + "; ".join(f"{name} {u} / {m} / {s} %" for name, u, m, s in PAPER_FIGURES),
        "",
        "| experiment | " + " | ".join(COLUMNS.values()) + " |",
        "| --- | " + " | ".join("---" for _ in COLUMNS) + " |",
    ]
    for row in report.rows:
        cells = [_md_cell(row.cells.get(c)) for c in COLUMNS]
        title = f"**{_md(row.experiment.id)}**<br>{_md(one_line(row.experiment.title, 60))}"
        if row.sampling is not None and report.sampling is not None:
            own = sampling_line(row.sampling, report.sampling)
            if own:
                title += f"<br>*{_md(one_line(own, 120))}*"
        out.append(f"| {title} | " + " | ".join(cells) + " |")
    notes = {c.shift_note for r in report.rows for c in r.cells.values() if c.shift_note}
    out.append("")
    for note in sorted(notes):
        out.append(f"No shift figures: {_md(one_line(note, 400))}")
    if report.cancelled:
        out.append("*Cancelled: the rows after the last cell shown were not run.*")
    return "\n".join(out).rstrip() + "\n"


_C1 = re.compile("[\x7f-\x9f]")


def _sampling_json(sampling: Sampling) -> dict[str, Any]:
    out: dict[str, Any] = {key: getattr(sampling, key) for key, _ in _SAMPLING_WORDS}
    out["stop"] = list(sampling.stop)
    return out


def to_json(report: Report) -> dict[str, Any]:
    """The report as one JSON-ready object (whole outputs, not trimmed)."""
    return {
        "type": "report",
        "base": report.base_name,
        "instruct": report.instruct_name,
        "models": (
            {"base": report.models[0].to_json(), "instruct": report.models[1].to_json()}
            if report.models is not None
            else None
        ),
        "sampling": None if report.sampling is None else _sampling_json(report.sampling),
        "columns": [{"id": c, "title": t} for c, t in COLUMNS.items()],
        "rows": [
            {
                "id": row.experiment.id,
                "title": row.experiment.title,
                "sampling": None if row.sampling is None else _sampling_json(row.sampling),
                "cells": {c: cell.to_json() for c, cell in row.cells.items()},
            }
            for row in report.rows
        ],
        "cancelled": report.cancelled,
    }


def render_json(report: Report) -> str:
    """Strict JSON (no NaN) whose text is inert on a terminal (C1 controls escaped too)."""
    text = json.dumps(to_json(report), ensure_ascii=False, allow_nan=False, indent=2)
    return _C1.sub(lambda m: f"\\u{ord(m.group()):04x}", text) + "\n"
