"""`localbvi compare` and `localbvi experiments` as a user runs them (in-process `main`)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from localbvi import paths
from localbvi.cli import main
from localbvi.inspector import inspect_gguf
from tests.helpers import compare_argv


def records(out: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def test_compare_json_tags_every_event_with_its_side(
    gemma_base: Path, gemma_instruct: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(
        compare_argv(
            gemma_base,
            gemma_instruct,
            "--json",
            "--max-tokens",
            "3",
            "--temperature",
            "0",
            "--top-k-probs",
            "3",
            "--ctx",
            "512",
            "What is 2+2?",
        )
    )
    assert code == 0
    lines = records(capsys.readouterr().out)
    assert lines and all(r["side"] in ("base", "instruct") for r in lines)
    done = [r for r in lines if r["type"] == "done"]
    assert [(d["side"], d["mode"]) for d in done] == [("base", "raw"), ("instruct", "chat")]
    assert all(d["tokens"] == 3 or d["finish_reason"] == "stop" for d in done)
    base_tokens = [r for r in lines if r["type"] == "token" and r["side"] == "base"]
    assert "".join(str(r["text"]) for r in base_tokens).startswith("\n\nWhat")
    assert all(len(r["alternatives"]) == 3 for r in base_tokens)  # type: ignore[arg-type]
    # Sequential by default: the base side finishes before the instruct side starts.
    sides = [r["side"] for r in lines]
    assert sides == sorted(sides, key=lambda s: s != "base")


def test_experiment_run_prints_both_sides_with_stats(
    gemma_base: Path, gemma_instruct: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(
        [
            "experiments",
            "run",
            "few-shot",
            "--base",
            str(gemma_base),
            "--instruct",
            str(gemma_instruct),
            "--max-tokens",
            "4",
            "--ctx",
            "512",
        ]
    )
    out = capsys.readouterr().out
    assert code == 0
    assert out.startswith("# Few-shot prompting steers a base model\n")
    # A path is named as the app names it: the GGUF's own name (general.name).
    name = inspect_gguf(gemma_base).name
    assert name and name == inspect_gguf(gemma_instruct).name
    assert f"── base: {name} · raw completion ──" in out
    assert f"── instruct: {name} · chat template ──" in out
    assert out.count(" tok/s · ") == 2


def test_experiments_lists_ids_and_titles(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["experiments"]) == 0
    out = capsys.readouterr().out
    assert "few-shot" in out and "What is 2+2?" in out
    assert main(["experiments", "list", "--json"]) == 0
    listed = records(capsys.readouterr().out)
    assert len(listed) == 7 and listed[5]["base_prompt"]


def test_unknown_experiment_is_a_usage_error_with_a_hint(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["experiments", "run", "arithmatic", "--base", "x.gguf"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("localbvi experiments run: error: no experiment named 'arithmatic'")
    assert "did you mean 'arithmetic'" in err and err.count("\n") == 1


@pytest.mark.parametrize("json_flag", [[], ["--json"]])
def test_compare_without_models_is_a_usage_error(
    capsys: pytest.CaptureFixture[str], json_flag: list[str]
) -> None:
    assert main(["compare", *json_flag, "Hi"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == (
        "localbvi compare: error: name the models to compare: --base REF and/or --instruct "
        "REF (see 'localbvi compare --help')\n"
    )
    assert main(["experiments", "run", "arithmetic", *json_flag]) == 2
    assert "name the models to compare" in capsys.readouterr().err


def test_broken_user_experiments_file_exits_1_naming_it(
    capsys: pytest.CaptureFixture[str],
) -> None:
    user = paths.config_dir() / "experiments.toml"
    user.parent.mkdir(parents=True, exist_ok=True)
    user.write_text('[[experiment]]\nid = "x"\ntitle = "t"\n', encoding="utf-8")
    assert main(["experiments"]) == 1
    err = capsys.readouterr().err
    assert f"{user}: experiment 'x': missing 'what_to_look_for', 'prompt'" in err


def test_compare_without_a_pair_says_what_to_add(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["compare", "--base", "./mine.gguf", "Hi"]) == 1
    assert "give --instruct REF too" in capsys.readouterr().err
    assert main(["compare", "--base", "./mine.gguf", "--json", "Hi"]) == 1
    (record,) = records(capsys.readouterr().out)
    assert record["type"] == "error" and "--instruct" in str(record["message"])


def test_compare_needs_a_prompt(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["compare", "--base", "a.gguf"])
    assert info.value.code == 2


# -- model output never drives the terminal ---------------------------------------------------

HOSTILE = (
    "Hi",
    "\x1b]0;pwned\x07",  # OSC: retitle the window
    " there\x1b[2J",  # CSI: clear the screen
    "\x1b",  # an ESC split from its sequence…
    "[31mred",  # …whose rest arrives in the next token
    "\r\x08\x9b1m",  # carriage return, backspace, C1 CSI
    "\tok\n",
)


def fake_open_model(monkeypatch: pytest.MonkeyPatch) -> None:
    """`compare` opens FakeEngines whose output (and name) holds terminal control sequences."""
    from localbvi.cli import lab
    from localbvi.engine.fake import FakeEngine
    from localbvi.engine.host import OpenedModel
    from localbvi.engine.types import LoadConfig

    def open_model(ref: str, config: LoadConfig, **_: object) -> OpenedModel:
        engine = FakeEngine(chat_script=HOSTILE, completion_script=HOSTILE)
        info = engine.load(ref, config)
        kind = "base" if "base" in ref else "instruct"
        return OpenedModel(engine, info, ref, f"evil\x1b[8m{kind}", kind)  # type: ignore[arg-type]

    monkeypatch.setattr(lab, "open_model", open_model)


@pytest.mark.parametrize("extra", [[], ["--concurrent"], ["--in-context"]])
def test_compare_text_output_passes_no_control_sequences(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], extra: list[str]
) -> None:
    fake_open_model(monkeypatch)
    code = main(
        ["compare", "--base", "/m/demo-base.gguf", "--instruct", "/m/demo-it.gguf", *extra, "Hi"]
    )
    out = capsys.readouterr().out
    assert code == 0, out
    assert not [c for c in out if (ord(c) < 0x20 and c not in "\n\t") or 0x7F <= ord(c) <= 0x9F]
    # What is left is the text: the sequences are gone, one split across tokens as well.
    assert "Hi therered1m\tok\n" in out
    assert "pwned" not in out
    assert "── base: evilbase · " in out and "── instruct: evilinstruct · " in out
    sides = 3 if "--in-context" in extra else 2
    assert out.count("[") == sides  # one stats line per side
