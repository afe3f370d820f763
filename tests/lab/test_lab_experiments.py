"""Experiments: the bundled file, the user's file merged over it, and readable errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from localbvi import paths
from localbvi.engine.types import Message, Sampling
from localbvi.lab.experiments import (
    ExperimentError,
    bundled_experiments_path,
    load_experiments,
    parse_experiments_file,
)

ENTRY = """
[[experiment]]
id = "{id}"
title = "A title"
what_to_look_for = "Something to see."
prompt = "Hello"
"""


def test_bundled_experiments_cover_the_lessons() -> None:
    experiments = load_experiments()
    ids = [e.id for e in experiments]
    assert ids == [
        "arithmetic",
        "code",
        "refusal",
        "summarize",
        "persona",
        "few-shot",
        "json-format",
    ]
    arithmetic = experiments.get("arithmetic")
    assert arithmetic.prompt == "What is 2+2?"
    assert arithmetic.raw_prompt == "What is 2+2?"
    assert "worksheet" in arithmetic.what_to_look_for
    summarize = experiments.get("summarize")
    assert summarize.prompt.startswith("Summarize this article:")
    assert "public domain" in summarize.prompt
    persona = experiments.get("persona")
    assert persona.raw_prompt == "You are a helpful assistant."
    assert persona.messages()[0] == Message("system", "You are a helpful assistant.")
    few_shot = experiments.get("few-shot")
    # The base side gets Q:/A: examples; the instruct side the bare question.
    assert few_shot.raw_prompt.count("Q:") == 3 and few_shot.raw_prompt.endswith("A:")
    assert few_shot.messages() == [Message("user", "What is the capital of France?")]
    sampling = few_shot.apply(Sampling(temperature=0.8, max_tokens=256))
    assert sampling.stop == ("\n\n", "\nQ:")
    assert sampling.temperature == 0.0 and sampling.max_tokens == 32
    assert "JSON" in experiments.get("json-format").prompt
    for experiment in experiments:
        assert experiment.title and len(experiment.what_to_look_for) > 40


def test_user_file_replaces_and_adds(tmp_path: Path) -> None:
    user = paths.config_dir() / "experiments.toml"
    user.parent.mkdir(parents=True, exist_ok=True)
    user.write_text(
        ENTRY.format(id="arithmetic") + ENTRY.format(id="mine"),
        encoding="utf-8",
    )
    experiments = load_experiments()
    ids = [e.id for e in experiments]
    assert ids[0] == "arithmetic" and ids[-1] == "mine" and len(ids) == 8
    assert experiments.get("arithmetic").prompt == "Hello"
    assert experiments.get("arithmetic").source == user
    assert experiments.get("code").source == bundled_experiments_path()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            ENTRY.format(id="broken").replace('prompt = "Hello"\n', ""),
            "experiment 'broken': missing 'prompt'",
        ),
        (
            ENTRY.format(id="typo") + 'promt = "x"\n',
            "experiment 'typo': unknown key 'promt' (did you mean 'prompt'?)",
        ),
        (
            ENTRY.format(id="temp") + "[experiment.sampling]\ntemperature = -1\n",
            "experiment 'temp': 'sampling.temperature' must be a number ≥ 0",
        ),
        (
            ENTRY.format(id="stops") + "[experiment.sampling]\nstop = '\\n'\n",
            "experiment 'stops': 'sampling.stop' must be a list",
        ),
        (
            ENTRY.format(id="seeded") + "[experiment.sampling]\nseed = 3\n",
            "experiment 'seeded': unknown sampling key 'seed'",
        ),
        (ENTRY.format(id="twice") + ENTRY.format(id="twice"), "'twice' appears twice"),
        ('[[experiment]]\ntitle = "no id"\n', "entry 1: missing 'id'"),
        ("[[experiment]\n", "not valid TOML"),
        ('[experiments]\nid = "x"\n', "unknown top-level key 'experiments'"),
    ],
)
def test_broken_entry_names_the_file_and_the_entry(
    tmp_path: Path, text: str, expected: str
) -> None:
    path = tmp_path / "experiments.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ExperimentError) as info:
        parse_experiments_file(path)
    message = str(info.value)
    assert message.startswith(f"{path}: ")
    assert expected in message


def test_broken_user_file_fails_the_load_with_its_path() -> None:
    user = paths.config_dir() / "experiments.toml"
    user.parent.mkdir(parents=True, exist_ok=True)
    user.write_text(ENTRY.format(id="bad id!"), encoding="utf-8")
    with pytest.raises(ExperimentError, match=r"experiments\.toml: experiment 'bad id!': the id"):
        load_experiments()


def test_unknown_experiment_suggests_close_ids() -> None:
    with pytest.raises(ExperimentError, match=r"did you mean 'few-shot'\?"):
        load_experiments().get("fewshot")


def test_an_experiments_own_sampling_applies_unless_a_flag_says_otherwise() -> None:
    from localbvi.cli import build_parser
    from localbvi.cli.lab import _experiment_sampling

    few_shot = load_experiments().get("few-shot")
    args = build_parser().parse_args(["experiments", "run", "few-shot", "--base", "x"])
    sampling = _experiment_sampling(args, few_shot)
    assert (sampling.max_tokens, sampling.temperature) == (32, 0.0)
    assert sampling.stop == ("\n\n", "\nQ:")
    args = build_parser().parse_args(
        ["experiments", "run", "few-shot", "--base", "x", "--max-tokens", "7", "--stop", "END"]
    )
    sampling = _experiment_sampling(args, few_shot)
    assert (sampling.max_tokens, sampling.temperature) == (7, 0.0)
    assert sampling.stop == ("END",)
