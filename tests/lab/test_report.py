"""The seed table (`experiments run --all`, lab/report.py, the experiments screen's run-all).

The report's shape is checked on the real Gemma base model and its instruct-shaped copy
(small max tokens); rendering, errors, cancelling and the app's table on FakeEngines.
"""

from __future__ import annotations

import json
import re
import threading
from pathlib import Path
from typing import Any

import pytest
from textual.widgets import DataTable, Label

from localbvi.cli import main
from localbvi.engine.fake import FakeEngine
from localbvi.engine.types import DoneEvent, LoadConfig, Sampling
from localbvi.lab import incontext
from localbvi.lab.experiments import Experiment, load_experiments
from localbvi.lab.report import (
    COLUMNS,
    SEED_IDS,
    Cell,
    Report,
    Row,
    one_line,
    render_json,
    render_markdown,
    run_report,
)
from localbvi.tui import make_app
from localbvi.tui.screens.compare import CompareScreen
from localbvi.tui.screens.experiments import ExperimentsScreen
from localbvi.tui.services import StaticServices
from localbvi.tui.state import ModelChoice
from tests.helpers import wait_until

_CELL_SPLIT = re.compile(r"(?<!\\)\|")


def table_rows(markdown: str) -> list[list[str]]:
    """The cells of every table line after the header and its rule."""
    lines = [line for line in markdown.splitlines() if line.startswith("|")]
    return [[c.strip() for c in _CELL_SPLIT.split(line)[1:-1]] for line in lines[2:]]


def small(experiment: Experiment) -> Sampling:
    return experiment.apply(Sampling(max_tokens=256))


# -- on the real model ---------------------------------------------------------------------------


@pytest.mark.slow
def test_report_on_real_models_has_every_scenario_and_column(
    base_engine: Any, instruct_engine: Any
) -> None:
    experiments = list(load_experiments())
    seen: list[str] = []
    report = run_report(
        base_engine,
        instruct_engine,
        experiments,
        lambda e: Sampling(temperature=0.0, max_tokens=5, stop=tuple(e.sampling.get("stop", ()))),
        names=("Gemma base", "Gemma instruct-shaped"),
        on_progress=lambda p: seen.append(str(p)),
    )
    total = len(experiments) * 3
    assert seen[0].startswith(f"[1/{total}] arithmetic") and seen[-1].startswith(f"[{total}/")
    assert [r.experiment.id for r in report.rows] == [e.id for e in experiments]
    assert not report.cancelled and not report.failed
    for row in report.rows:
        assert list(row.cells) == list(COLUMNS)
        for cell in row.cells.values():
            assert cell.done.finish_reason in ("stop", "length"), (row.experiment.id, cell)
            assert 0 < cell.done.tokens <= 5
        shift = row.cells["instruct"].shift
        assert shift is not None and sum(shift.values()) == pytest.approx(100.0)
    # Same weights on both sides: the greedy answer is mostly the base model's own choice.
    arithmetic = report.rows[0].cells["instruct"]
    assert arithmetic.shift is not None and arithmetic.shift["unshifted"] >= 50
    # The raw base model continues the worksheet with the next question (FIELD-NOTES).
    assert "What is" in report.rows[0].cells["base"].text

    md = render_markdown(report)
    rows = table_rows(md)
    assert len(rows) == len(experiments)
    header = next(line for line in md.splitlines() if line.startswith("| experiment"))
    assert all(title in header for title in COLUMNS.values())
    for cells, row in zip(rows, report.rows, strict=True):
        assert len(cells) == 4 and row.experiment.id in cells[0]
        for text, column in zip(cells[1:], COLUMNS, strict=True):
            cell = row.cells[column]
            assert f"{cell.done.tokens} tok · {cell.done.tokens_per_s:.1f} tok/s" in text
        assert "shift " in cells[3] and "shift" not in cells[1]

    data = json.loads(render_json(report))
    assert data["type"] == "report" and [c["id"] for c in data["columns"]] == list(COLUMNS)
    assert [r["id"] for r in data["rows"]] == [e.id for e in experiments]
    for r, row in zip(data["rows"], report.rows, strict=True):
        assert set(r["cells"]) == set(COLUMNS)
        assert r["cells"]["base"]["output"] == row.cells["base"].text  # whole, not trimmed
        assert set(r["cells"]["instruct"]["shift"]) == {"unshifted", "marginal", "shifted"}


@pytest.mark.slow
def test_cli_run_all_writes_the_table_with_progress(
    gemma_base: Path, gemma_instruct: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "seed.json"
    code = main(
        [
            "experiments", "run", "--all",
            "--base", str(gemma_base), "--instruct", str(gemma_instruct),
            "--max-tokens", "3", "--ctx", "2048", "--format", "json", "-o", str(out),
        ]
    )  # fmt: skip
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert captured.out == ""  # the report went to the file
    ids = [e.id for e in load_experiments()]
    total = len(ids) * 3
    assert f"[1/{total}] arithmetic · base, raw" in captured.err
    assert f"[{total}/{total}] json-format · instruct, chat template" in captured.err
    data = json.loads(out.read_text("utf-8"))
    assert [r["id"] for r in data["rows"]] == ids
    for r in data["rows"]:
        assert list(r["cells"]) == list(COLUMNS)
        assert all(0 < c["tokens"] <= 3 for c in r["cells"].values())


# -- fast: rendering, errors, cancelling -----------------------------------------------------------


def test_the_seven_seed_experiments_are_bundled() -> None:
    ids = [e.id for e in load_experiments()]
    assert all(i in ids for i in SEED_IDS)


def test_one_line_flattens_trims_and_drops_controls() -> None:
    assert one_line("  a\n\n  b\tc  ") == "a ⏎ ⏎ b c"
    assert one_line("x\x1b[31mred\x07") == "xred"
    long = one_line("word " * 100, 20)
    assert len(long) == 20 and long.endswith("…")


def _cell(column: str, text: str, **done: Any) -> Cell:
    return Cell(column, text, DoneEvent(finish_reason="stop", tokens=3, **done))  # type: ignore[arg-type]


def test_markdown_cells_stay_cells_whatever_the_model_writes() -> None:
    experiment = next(iter(load_experiments()))
    hostile = "a | b\n<script>x</script> \\| c"
    row = Row(
        experiment,
        {
            "base": _cell("base", hostile),
            "incontext": _cell("incontext", ""),
            "instruct": Cell(
                "instruct",
                "ok",
                DoneEvent(finish_reason="error", error="the model crashed | badly"),
            ),
        },
    )
    md = render_markdown(Report("base | x", "instr", [row]))
    (cells,) = table_rows(md)
    assert len(cells) == 4
    assert cells[1].startswith("a \\| b ⏎ &lt;script&gt;x&lt;/script&gt; \\\\\\| c<br>")
    assert "*(nothing)*" in cells[2]
    assert cells[3] == "**error:** the model crashed \\| badly"
    assert "base \\| x" in md


def test_without_a_shared_vocabulary_the_instruct_column_has_no_shift() -> None:
    base = FakeEngine(vocab_name="one")
    instruct = FakeEngine(vocab_name="other")
    base.load("/m/demo-base.gguf", LoadConfig())
    instruct.load("/m/demo-it.gguf", LoadConfig())
    experiments = list(load_experiments())[:2]
    report = run_report(base, instruct, experiments, small)
    cell = report.rows[0].cells["instruct"]
    assert cell.shift is None and "do not share a tokenizer" in cell.shift_note
    assert cell.text and cell.done.finish_reason == "stop"
    md = render_markdown(report)
    assert "No shift figures: these models do not share a tokenizer" in md
    data = json.loads(render_json(report))
    assert data["rows"][0]["cells"]["instruct"]["shift"] is None


def test_a_failing_cell_is_shown_and_the_rest_still_runs() -> None:
    base = FakeEngine()
    no_template = FakeEngine(has_template=lambda path: False)
    base.load("/m/demo-base.gguf", LoadConfig())
    no_template.load("/m/demo-it.gguf", LoadConfig())
    report = run_report(base, no_template, list(load_experiments())[:2], small)
    assert len(report.failed) == 2
    for row in report.rows:
        assert "has no chat template" in row.cells["instruct"].error
        assert row.cells["base"].text and not row.cells["base"].error


def test_cancel_stops_the_running_cell_and_skips_the_rest() -> None:
    base, instruct = FakeEngine(tokens_per_s=50), FakeEngine(tokens_per_s=50)
    base.load("/m/demo-base.gguf", LoadConfig())
    instruct.load("/m/demo-it.gguf", LoadConfig())
    cancel = threading.Event()
    cells: list[Cell] = []

    def on_cell(row: Row, cell: Cell) -> None:
        cells.append(cell)
        cancel.set()  # after the first cell

    report = run_report(
        base, instruct, list(load_experiments()), small, on_cell=on_cell, cancelled=cancel
    )
    assert report.cancelled and len(cells) == 1 and len(report.rows) == 1
    assert "Cancelled" in render_markdown(report)


def test_cli_errors_are_one_line(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    cases = [
        (["experiments", "run", "--all"], 2, "name the models"),
        (["experiments", "run", "arithmetic", "--all", "--base", "x"], 2, "not both"),
        (["experiments", "run", "--format", "json", "arithmetic", "--base", "x"], 2, "--all"),
        (["experiments", "run", "--all", "--base", "x", "--base-mode", "chat"], 2, "--base-mode"),
        (["experiments", "run"], 2, "--all"),
        (["experiments", "run", "--all", "--base", "x", "-o", "/dev/null/t.md"], 1, "not a folder"),
        (
            [
                "experiments",
                "run",
                "--all",
                "--base",
                str(tmp_path / "none.gguf"),
                "--instruct",
                str(tmp_path / "none.gguf"),
            ],
            1,
            "none.gguf",
        ),
    ]
    for argv, expected, words in cases:
        assert main(argv) == expected, argv
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and words in err, (argv, err)
        assert "Traceback" not in err


# -- the app ---------------------------------------------------------------------------------------

BASE = ModelChoice(ref="demo-base", display_name="Demo", kind="base", path="/m/demo-base.gguf")
INSTRUCT = ModelChoice(
    ref="demo-it", display_name="Demo IT", kind="instruct", path="/m/demo-it.gguf"
)


def _app_and_engines(**kwargs: Any) -> tuple[Any, tuple[FakeEngine, FakeEngine]]:
    engine = FakeEngine()
    services = StaticServices(pairs=[(BASE, INSTRUCT)], local=[BASE, INSTRUCT])
    app = make_app(lambda: engine, model_ref=INSTRUCT.path, services=services, check_online=False)
    pair = FakeEngine(**kwargs), FakeEngine(**kwargs)
    pair[0].load(str(BASE.path), LoadConfig())
    pair[1].load(str(INSTRUCT.path), LoadConfig())
    return app, pair


async def _open_experiments(pilot: Any, app: Any, engines: Any) -> ExperimentsScreen:
    await wait_until(pilot, lambda: app.model is not None, what="the app's model")
    compare = CompareScreen(engines=engines, names=("Demo", "Demo IT"))
    app.push_screen(compare)
    await wait_until(pilot, lambda: app.screen is compare and compare.is_mounted)
    await pilot.press("ctrl+t")
    await wait_until(pilot, lambda: isinstance(app.screen, ExperimentsScreen))
    screen: ExperimentsScreen = app.screen
    return screen


async def test_app_runs_all_experiments_into_a_table() -> None:
    app, engines = _app_and_engines()
    ids = [e.id for e in load_experiments()]
    async with app.run_test(size=(140, 40)) as pilot:
        screen = await _open_experiments(pilot, app, engines)
        await pilot.press("ctrl+a")
        await wait_until(pilot, lambda: screen.report is not None, timeout=60, what="the table")
        table = screen.query_one(DataTable)
        assert [str(k.value) for k in table.rows] == ids
        assert [str(c.label) for c in table.columns.values()] == [
            "experiment",
            *COLUMNS.values(),
        ]
        for id_ in ids:
            cells = [str(c) for c in table.get_row(id_)]
            assert "…" not in cells
            assert "tok/s" in cells[1] and "shift " in cells[3]
        progress = str(screen.query_one("#experiments-progress", Label).render())
        assert progress.startswith(f"done: {len(ids)} experiments")
        await pilot.press("escape")
        await wait_until(pilot, lambda: not isinstance(app.screen, ExperimentsScreen))


async def test_app_run_all_shows_progress_and_escape_cancels() -> None:
    app, engines = _app_and_engines(tokens_per_s=15, stop_after_script=False)
    async with app.run_test(size=(140, 40)) as pilot:
        screen = await _open_experiments(pilot, app, engines)
        await pilot.press("ctrl+a")
        label = screen.query_one("#experiments-progress", Label)
        total = len(list(load_experiments())) * 3
        await wait_until(
            pilot, lambda: str(label.render()).startswith(f"2/{total} · What is 2+2?"), timeout=30
        )
        assert "base, in context" in str(label.render())
        await pilot.press("escape")  # stops the run, the screen stays
        await wait_until(pilot, lambda: screen.report is not None, timeout=30)
        assert screen.report is not None and screen.report.cancelled
        assert str(label.render()).startswith("cancelled")
        assert isinstance(app.screen, ExperimentsScreen)
        assert len(screen.query_one(DataTable).rows) == 1
        await pilot.press("escape")
        await wait_until(pilot, lambda: not isinstance(app.screen, ExperimentsScreen))


# -- which models and sampling; the in-context column's stops ------------------------------------


class RecordingEngine(FakeEngine):
    """A FakeEngine that keeps the sampling of every raw completion it is asked for."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.samplings: list[Sampling] = []

    def complete(self, prompt: Any, sampling: Sampling) -> Any:
        self.samplings.append(sampling)
        return super().complete(prompt, sampling)


def test_the_report_names_both_models_by_file_and_reference_and_the_sampling() -> None:
    # Two different files with the same GGUF name, from two folders.
    base, instruct = FakeEngine(), FakeEngine()
    base.load("/models/a/model-Q8_0.gguf", LoadConfig())
    instruct.load("/models/b/model-Q8_0.gguf", LoadConfig())
    shared = Sampling(temperature=0.7, max_tokens=40, seed=7)
    experiments = [e for e in load_experiments() if e.id in ("arithmetic", "few-shot")]
    report = run_report(
        base,
        instruct,
        experiments,
        lambda e: e.apply(shared),
        names=("Model Q8", "Model Q8"),
        refs=("/models/a/model-Q8_0.gguf", "someone/model-GGUF:Q8_0"),
        sampling=shared,
    )
    md = render_markdown(report)
    lines = md.splitlines()
    base_line = next(line for line in lines if line.startswith("- base model:"))
    instruct_line = next(line for line in lines if line.startswith("- instruct model:"))
    assert (
        base_line
        == "- base model: **Model Q8** · file `model-Q8_0.gguf` · /models/a/model-Q8_0.gguf"
    )
    assert instruct_line == (
        "- instruct model: **Model Q8** · file `model-Q8_0.gguf` · someone/model-GGUF:Q8_0"
        " (/models/b/model-Q8_0.gguf)"
    )
    sampling = next(line for line in lines if line.startswith("- sampling:"))
    assert sampling.startswith(
        "- sampling: temperature 0.7 · top-p 0.95 · top-k 40 · min-p 0.05 · repeat penalty 1"
        " · max 40 tokens · seed 7;"
    )
    # Each row says what its experiment changed; the table is still one row per experiment.
    rows = table_rows(md)
    assert [r[0].split("<br>")[0] for r in rows] == ["**arithmetic**", "**few-shot**"]
    few_shot = rows[1][0]
    assert "temperature 0 · max 32 tokens · stop" in few_shot
    assert "\\\\n\\\\n" in few_shot  # the stop "\n\n", escaped for Markdown
    data = json.loads(render_json(report))
    assert data["models"]["base"] == {
        "name": "Model Q8",
        "ref": "/models/a/model-Q8_0.gguf",
        "path": "/models/a/model-Q8_0.gguf",
        "file": "model-Q8_0.gguf",
    }
    assert data["models"]["instruct"]["path"] == "/models/b/model-Q8_0.gguf"
    assert data["sampling"]["temperature"] == 0.7 and data["sampling"]["seed"] == 7
    assert data["rows"][1]["sampling"]["stop"] == ["\n\n", "\nQ:"]


def test_the_in_context_column_keeps_only_stops_that_cannot_cut_its_answer() -> None:
    base, instruct = RecordingEngine(), FakeEngine()
    base.load("/m/demo-base.gguf", LoadConfig())
    instruct.load("/m/demo-it.gguf", LoadConfig())
    few_shot = load_experiments().get("few-shot")
    assert few_shot.apply(Sampling()).stop == ("\n\n", "\nQ:")
    run_report(base, instruct, [few_shot], small)
    raw, in_context = base.samplings[:2]
    assert raw.stop == ("\n\n", "\nQ:")  # the raw base side: the experiment's own frame
    # In context a blank line is part of an answer (and of the frame): it does not stop it.
    assert "\n\n" not in in_context.stop
    assert "\nQ:" in in_context.stop and "# Query" in in_context.stop
    assert in_context.repeat_penalty == 1.1


def test_answer_stops_drop_what_the_frame_or_the_examples_contain() -> None:
    examples = incontext.InContext("Answer well.", (("Hi?", "Hello!\n\n- one\n- two"),), "test")
    stops = ("\n\n", "   ", "\n- ", "```", "\nQ:", "}", "\nQ:")
    assert incontext.answer_stops(stops) == ("\n- ", "\nQ:", "}")
    assert incontext.answer_stops(stops, examples) == ("\nQ:", "}")


@pytest.mark.slow
def test_few_shot_in_context_answer_on_the_real_model_is_not_cut_at_a_blank_line(
    base_engine: Any, instruct_engine: Any
) -> None:
    few_shot = load_experiments().get("few-shot")
    report = run_report(
        base_engine,
        instruct_engine,
        [few_shot],
        lambda e: e.apply(Sampling(temperature=0.0, max_tokens=48)),
    )
    cell = report.rows[0].cells["incontext"]
    assert cell.done.finish_reason in ("stop", "length"), cell
    assert "\\n\\n" not in cell.done.stop_detail, cell.done
    assert cell.text.strip(), cell  # an answer, not an empty cell cut at its first blank line
    assert "Paris" in cell.text, cell.text
