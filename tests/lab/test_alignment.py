"""The alignment lab on the real Gemma 3 270M files: token shift, in-context alignment, the
prefix cache. The instruct-shaped copy has the same weights and tokenizer as the base model,
so its answers are base-model answers, but every code path is the real one."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from localbvi.cli import main
from localbvi.engine import LoadConfig, LocalEngine, Message, Sampling, TokenEvent, prefix_cache
from localbvi.lab.compare import LabError
from localbvi.lab.incontext import (
    InContextError,
    build_prompt,
    clean_answer,
    load_incontext,
    preamble_text,
    stream,
    user_incontext_path,
)
from localbvi.lab.shift import category, check_vocab, kl_topk, run_shift, sparkline

QUESTION = "What is the capital of France?"


# -- pure functions ------------------------------------------------------------------------------


def test_categories_follow_the_paper() -> None:
    assert [category(r) for r in (1, 2, 3, 4, 1000)] == [
        "unshifted",
        "marginal",
        "marginal",
        "shifted",
        "shifted",
    ]


def test_kl_over_renormalised_top_k() -> None:
    same = kl_topk([(1, 0.5), (2, 0.3)], {1: 0.05, 2: 0.03})  # same shape after renormalising
    assert same == pytest.approx(0.0, abs=1e-12)
    apart = kl_topk([(1, 0.9), (2, 0.1)], {1: 0.1, 2: 0.9})
    assert apart == pytest.approx(0.9 * 2.1972246 + 0.1 * -2.1972246, rel=1e-6)
    assert kl_topk([(1, 1.0)], {}) == 0.0  # nothing to compare


def test_sparkline_scales_and_buckets() -> None:
    assert sparkline([0, 1, 2, 4]) == "▁▂▄█"
    assert len(sparkline(list(range(100)), 20)) == 20
    assert sparkline([]) == ""


# -- token shift ----------------------------------------------------------------------------------


@pytest.mark.slow
def test_shift_agrees_with_an_independent_per_position_computation(
    base_engine: LocalEngine, instruct_engine: LocalEngine
) -> None:
    result = run_shift(base_engine, instruct_engine, QUESTION, Sampling(max_tokens=10))
    assert 0 < len(result.tokens) <= 10
    assert sum(result.counts().values()) == len(result.tokens)
    assert sum(result.percentages().values()) == pytest.approx(100.0)
    prompt = [t.id for t in base_engine.tokenize(result.base_prompt)]
    ids = [t.id for t in result.tokens]
    checked = 0
    for i, token in enumerate(result.tokens):
        # The base model's distribution at this position, one ordinary request per position.
        step = next(
            e
            for e in base_engine.complete(
                [*prompt, *ids[:i]], Sampling(temperature=0.0, max_tokens=1, top_probs=10)
            )
            if isinstance(e, TokenEvent) and e.id >= 0
        )
        ranked = sorted(step.alternatives, key=lambda a: -a.prob)
        probs = [a.prob for a in ranked]
        rank = next((n for n, a in enumerate(ranked, 1) if a.id == token.id), 11)
        # Batched and one-by-one evaluation differ in the last digits: skip near-ties.
        if rank <= 10:
            own = probs[rank - 1]
            if any(abs(own - p) < 0.1 * own for j, p in enumerate(probs) if j != rank - 1):
                continue
            assert token.base_prob == pytest.approx(own, abs=0.05, rel=0.25)
        assert token.category == category(rank), (i, token, rank)
        checked += 1
    assert checked >= len(result.tokens) // 2


@pytest.mark.slow
def test_the_same_weights_in_the_same_template_are_unshifted(
    base_engine: LocalEngine, instruct_engine: LocalEngine
) -> None:
    result = run_shift(
        base_engine, instruct_engine, QUESTION, Sampling(max_tokens=12), frame="template"
    )
    assert result.percentages()["unshifted"] >= 80.0
    assert result.base_prompt.startswith("<bos><start_of_turn>user\n")


@pytest.mark.slow
def test_models_with_different_vocabularies_are_refused(
    base_engine: LocalEngine, gemma_base: Path, tmp_path: Path
) -> None:
    changed = tmp_path / "changed-vocab.gguf"
    shutil.copyfile(gemma_base, changed)
    data = bytearray(changed.read_bytes()[:20_000_000])
    at = data.find(b"<unused99>")
    assert at > 0
    with changed.open("r+b") as f:  # same length: the file still loads
        f.seek(at)
        f.write(b"<unuzed99>")
    with LocalEngine() as other:
        other.load(changed, LoadConfig(n_ctx=256))
        with pytest.raises(LabError) as caught:
            check_vocab(base_engine, other)
    message = str(caught.value)
    assert "do not share a tokenizer" in message
    assert message.count("vocabulary of 262,144 tokens") == 2
    assert "\n" not in message and "Traceback" not in message


@pytest.mark.slow
def test_cli_shift_json(
    gemma_base: Path, gemma_instruct: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(
        ["shift", "--base", str(gemma_base), "--instruct", str(gemma_instruct),
         "--max-tokens", "6", "--ctx", "512", "--json", QUESTION]
    )  # fmt: skip
    assert code == 0
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    tokens, summary = records[:-1], records[-1]
    assert len(tokens) == summary["tokens"] == 6
    for r in tokens:
        assert r["type"] == "shift"
        assert set(r) == {"type", "text", "id", "rank", "base_prob", "instruct_prob", "kl"}
        assert r["rank"] >= 1 and 0 <= r["base_prob"] <= 1 and r["kl"] >= 0
    assert summary["type"] == "summary"
    assert summary["unshifted"] + summary["marginal"] + summary["shifted"] == pytest.approx(100)
    assert isinstance(summary["top_shifted"], list)


def test_cli_shift_errors_are_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["shift", "--base", "/nowhere/x.gguf", "--instruct", "/nowhere/y.gguf", "Hi"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("localbvi: error:") and "\n" not in err
    with pytest.raises(SystemExit) as exit_info:
        main(["shift", "--candidates", "0", "--base", "a", "Hi"])
    assert exit_info.value.code == 2


# -- a base model aligned in context ------------------------------------------------------------


def test_bundled_examples_and_the_prompt_shape() -> None:
    ic = load_incontext()
    assert ic.source == "bundled" and len(ic.examples) == 3
    prompt = build_prompt(
        ic,
        [
            Message("system", "Answer in French."),
            Message("user", "Hi"),
            Message("assistant", "Bonjour !"),
            Message("user", "What is 2+2?"),
        ],
    )
    assert prompt.startswith(preamble_text(ic, [Message("system", "Answer in French.")]))
    assert "Answer in French." in prompt
    assert prompt.count("# Query:") == 5  # three examples, one earlier turn, the open one
    assert "```\nHi\n```\n\n# Answer:\n```\nBonjour !\n```" in prompt
    assert prompt.endswith("# Query:\n```\nWhat is 2+2?\n```\n\n# Answer:\n```\n")
    assert clean_answer("2+2 = 4\n```\n\n# Query") == "2+2 = 4"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("preamble = 1\n", "'preamble', a non-empty string"),
        ('preamble = "x"\n', "0 examples"),
        ('preamble = "x"\n[[example]]\nquery = "q"\n', "example 1 needs 'answer'"),
        ('preamble = "x"\n[[example]]\nquery = "q"\nanswer = "a"\nwho = 1\n', "unknown key 'who'"),
        ('preamble = "x"\nextra = 2\n', "unknown key 'extra'"),
        ("preamble = " + "[" * 5000, "nested more than"),
        ("preamble = 'x", "not valid TOML"),
    ],
    ids=["type", "no-examples", "no-answer", "example-key", "top-key", "deep", "syntax"],
)
def test_a_broken_user_file_says_what_is_wrong(text: str, expected: str) -> None:
    path = user_incontext_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    with pytest.raises(InContextError) as caught:
        load_incontext()
    assert expected in str(caught.value) and str(path) in str(caught.value)


def test_a_user_file_replaces_the_bundled_examples() -> None:
    path = user_incontext_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text('preamble = "Be brief."\n[[example]]\nquery = "Hi?"\nanswer = "Hello."\n')
    ic = load_incontext()
    assert ic.source == str(path) and ic.examples == (("Hi?", "Hello."),)


@pytest.mark.slow
def test_the_base_model_answers_in_context_and_stops_at_the_next_query(
    base_engine: LocalEngine,
) -> None:
    text, done = "", None
    messages = [Message("user", "What is 2+2?")]
    for event in stream(base_engine, messages, Sampling(temperature=0.0, max_tokens=120)):
        if isinstance(event, TokenEvent):
            text += event.text
        else:
            done = event
    assert done is not None
    assert done.finish_reason == "stop" and done.stop_detail.startswith("stop string")
    assert "# Query" not in text and "# Q" not in text, text
    assert "4" in clean_answer(text)  # the seed's lesson: a base model can answer, in context


# -- the prefix cache -----------------------------------------------------------------------------


@pytest.mark.slow
def test_a_saved_prefix_is_restored_in_a_new_process_and_a_corrupt_one_rebuilt(
    gemma_base: Path,
) -> None:
    ic = load_incontext()
    messages = [Message("user", "What is 2+2?")]
    prefix = preamble_text(ic)
    config = LoadConfig(n_ctx=2048, n_threads=2)

    def answer(engine: LocalEngine) -> str:
        greedy = Sampling(temperature=0.0, max_tokens=8)
        events = engine.complete(build_prompt(ic, messages), greedy)
        return "".join(e.text for e in events if isinstance(e, TokenEvent))

    with LocalEngine() as engine:
        engine.load(gemma_base, config)
        n, how = engine.prime(prefix)
        assert how == "built" and n > 500
        assert engine.prime(prefix) == (n, "memory")
        first = answer(engine)
    files = list(prefix_cache.folder().glob("*.kv"))
    assert len(files) == 1

    with LocalEngine() as engine:  # a new llama.cpp process
        engine.load(gemma_base, config)
        assert engine.prime(prefix) == (n, "disk")
        assert answer(engine) == first

    raw = bytearray(files[0].read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    files[0].write_bytes(bytes(raw))
    with LocalEngine() as engine:
        engine.load(gemma_base, config)
        assert engine.prime(prefix) == (n, "built")  # ignored, rebuilt, no crash
        assert answer(engine) == first
    assert files[0].read_bytes() != bytes(raw)


def test_the_prefix_cache_folder_stays_bounded() -> None:
    folder = prefix_cache.folder()
    folder.mkdir(parents=True)
    for i in range(5):
        (folder / f"{i}.kv").write_bytes(b"x" * 1000)
    prefix_cache.evict(limit=2500)
    assert sum(p.stat().st_size for p in folder.glob("*.kv")) <= 2500


@pytest.mark.slow
def test_cli_chat_with_a_base_model_in_context(
    gemma_base: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(
        ["chat", "-m", str(gemma_base), "--in-context", "--no-save", "--temperature", "0",
         "--max-tokens", "60", "--ctx", "2048", "What is 2+2?"]
    )  # fmt: skip
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "4" in out and "# Q" not in out and "```" not in out
    assert "stop string" in err and "Traceback" not in err
