"""The alignment lab on the real Gemma 3 270M files: token shift, in-context alignment, the
prefix cache. The instruct-shaped copy has the same weights and tokenizer as the base model,
so its answers are base-model answers, but every code path is the real one."""

from __future__ import annotations

import json
import shutil
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from localbvi.cli import main
from localbvi.engine import LoadConfig, LocalEngine, Message, Sampling, TokenEvent, prefix_cache
from localbvi.engine.fake import SCORE_CHUNK, FakeEngine
from localbvi.engine.types import Alternative, Event, ScoreRequest
from localbvi.errors import LocalbviError
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
from localbvi.lab.shift import (
    FRAMES,
    ShiftResult,
    category,
    check_vocab,
    instruct_answer,
    kl_topk,
    run_shift,
    score_answer,
    sparkline,
)

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


class AltFake(FakeEngine):
    """A fake instruct model whose tokens carry its top-k, as a real one's do."""

    def chat(self, messages: Sequence[Message], sampling: Sampling) -> Iterator[Event]:
        for event in super().chat(messages, sampling):
            if isinstance(event, TokenEvent):
                event = TokenEvent(event.text, event.id, (Alternative(event.text, event.id, 0.8),))
            yield event


def fake_pair(**kwargs: Any) -> tuple[FakeEngine, FakeEngine]:
    base, instruct = AltFake(**kwargs), AltFake(**kwargs)
    base.load("/models/demo-base.gguf", LoadConfig())
    instruct.load("/models/demo-it.gguf", LoadConfig())
    return base, instruct


def test_a_new_frame_re_scores_the_same_answer_without_asking_the_instruct_model() -> None:
    base, instruct = fake_pair()
    answer = instruct_answer(base, instruct, "Hi", Sampling(max_tokens=12))
    results = {frame: score_answer(base, answer, frame) for frame in FRAMES}
    assert [kind for kind, _ in instruct.requests] == ["chat"]  # answered once
    assert base.requests == []  # the base model only scored
    texts = {r.answer for r in results.values()}
    assert texts == {answer.text} and answer.text.startswith("Sure! Here is")
    ids = [t.id for t in answer.tokens]
    assert [list(req.answer) for req in base.score_requests] == [ids] * 3
    prompts = {frame: r.base_prompt for frame, r in results.items()}
    assert prompts["plain"].startswith("# Query:") and prompts["raw"] == "Hi\n"
    assert (
        prompts["template"]
        == answer.template[0]
        == "<bos><start_of_turn>user\nHi<end_of_turn>\n<start_of_turn>model\n"
    )
    assert base.score_requests[2].prompt == answer.template[1]  # the instruct model's ids


def test_scoring_progress_in_chunks_and_a_cancel_between_them() -> None:
    base, instruct = fake_pair()
    answer = instruct_answer(base, instruct, "Hi", Sampling(max_tokens=12))
    seen: list[tuple[int, int]] = []
    score_answer(base, answer, on_progress=lambda d, t: seen.append((d, t)))
    assert seen == [(4, 12), (8, 12), (12, 12)] and SCORE_CHUNK == 4
    cancel = threading.Event()
    seen.clear()

    def stop_after_first(done: int, total: int) -> None:
        seen.append((done, total))
        cancel.set()

    with pytest.raises(LocalbviError, match="cancelled"):
        score_answer(base, answer, on_progress=stop_after_first, cancelled=cancel)
    assert seen == [(4, 12)]  # the second chunk saw the cancel, no third one ran
    assert [kind for kind, _ in instruct.requests] == ["chat"]


def independent_categories(
    base_engine: LocalEngine, result: ShiftResult
) -> tuple[int, list[tuple[int, str, str]]]:
    """The base model's rank of each answer token, one ordinary request per position (no
    scoring code involved), compared with the batched score; returns (checked, mismatches)."""
    prompt = [t.id for t in base_engine.tokenize(result.base_prompt)]
    if result.frame == "template":  # the instruct model's own token ids (special tokens)
        prompt = list(result.source.template[1])
    ids = [t.id for t in result.tokens]
    checked, wrong = 0, []
    for i, token in enumerate(result.tokens):
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
        if token.category != category(rank):
            wrong.append((i, token.category, category(rank)))
        checked += 1
    return checked, wrong


@pytest.mark.slow
def test_shift_agrees_with_an_independent_per_position_computation(
    base_engine: LocalEngine, instruct_engine: LocalEngine
) -> None:
    result = run_shift(base_engine, instruct_engine, QUESTION, Sampling(max_tokens=10))
    assert 0 < len(result.tokens) <= 10
    assert sum(result.counts().values()) == len(result.tokens)
    assert sum(result.percentages().values()) == pytest.approx(100.0)
    checked, wrong = independent_categories(base_engine, result)
    assert wrong == []
    assert checked >= len(result.tokens) // 2
    # The same answer re-scored under the raw frame agrees with its own per-position ranks.
    raw = score_answer(base_engine, result.source, "raw")
    assert raw.answer == result.answer and raw.base_prompt == QUESTION + "\n"
    checked, wrong = independent_categories(base_engine, raw)
    assert wrong == []
    assert checked >= len(raw.tokens) // 2


LONG_TEXT = (
    "The river ran through the old town, past the mill and the market square, where the "
    "bakers set out their bread before dawn and the first carts rattled over the stones. "
) * 3


@pytest.mark.slow
def test_score_reports_progress_per_chunk_in_order(base_engine: LocalEngine) -> None:
    prompt = [t.id for t in base_engine.tokenize("# Query:\nTell me a story.\n")]
    answer = [t.id for t in base_engine.tokenize(LONG_TEXT)][1:]  # without its BOS
    assert len(answer) > 3 * 32
    seen: list[tuple[int, int]] = []
    scores = base_engine.score(
        ScoreRequest(tuple(prompt), tuple(answer), 5), lambda d, t: seen.append((d, t))
    )
    assert len(scores) == len(answer) and [s.id for s in scores] == answer
    done = [d for d, _ in seen]
    assert {t for _, t in seen} == {len(answer)}
    assert done == sorted(done) and len(set(done)) == len(done)  # in order, never twice
    steps = [b - a for a, b in zip([0, *done], done, strict=False)]
    assert sum(steps) == len(answer) and max(steps) <= 32 and len(seen) >= 4


@pytest.mark.slow
def test_a_cancel_stops_scoring_between_chunks_and_the_engine_goes_on(
    base_engine: LocalEngine,
) -> None:
    prompt = [t.id for t in base_engine.tokenize("# Query:\nTell me a story.\n")]
    answer = tuple(t.id for t in base_engine.tokenize(LONG_TEXT * 2))[1:]
    request = ScoreRequest(tuple(prompt), answer, 5)
    seen: list[int] = []

    def cancel_after_first(done: int, total: int) -> None:
        seen.append(done)
        if len(seen) == 1:
            base_engine.cancel()

    with pytest.raises(LocalbviError, match="scoring was cancelled"):
        base_engine.score(request, cancel_after_first)
    assert 1 <= len(seen) < len(answer) // 32  # stopped well before the last chunk
    # A caller that leaves from inside its progress callback leaves the pipe in step too.

    def leave(done: int, total: int) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        base_engine.score(request, leave)
    short = ScoreRequest(tuple(prompt), answer[:8], 5)
    assert [s.id for s in base_engine.score(short)] == list(answer[:8])


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


def cli_shift(
    base: Path, instruct: Path, capsys: pytest.CaptureFixture[str], *flags: str
) -> tuple[list[dict[str, Any]], str]:
    """`localbvi shift --json` on the real pair: its records and its stderr."""
    args = ["shift", "--base", str(base), "--instruct", str(instruct), "--ctx", "512", "--json"]
    assert main([*args, *flags, QUESTION]) == 0
    captured = capsys.readouterr()
    return [json.loads(line) for line in captured.out.splitlines()], captured.err


@pytest.mark.slow
def test_cli_shift_json(
    gemma_base: Path, gemma_instruct: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    records, _ = cli_shift(gemma_base, gemma_instruct, capsys, "--max-tokens", "6")
    tokens, summary = records[:-1], records[-1]
    assert len(tokens) == summary["tokens"] == 6
    for r in tokens:
        assert r["type"] == "shift"
        assert set(r) == {"type", "text", "id", "rank", "base_prob", "instruct_prob", "kl"}
        assert r["rank"] >= 1 and 0 <= r["base_prob"] <= 1 and r["kl"] >= 0
    assert summary["type"] == "summary"
    assert summary["unshifted"] + summary["marginal"] + summary["shifted"] == pytest.approx(100)
    assert isinstance(summary["top_shifted"], list)


@pytest.mark.slow
def test_cli_shift_all_frames_scores_one_answer_with_progress(
    gemma_base: Path, gemma_instruct: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    records, err = cli_shift(
        gemma_base, gemma_instruct, capsys, "--max-tokens", "40", "--frame", "all", "--progress"
    )
    summaries = [r for r in records if r["type"] == "summary"]
    assert [s["frame"] for s in summaries] == ["plain", "raw", "template"]
    by_frame = {f: [r for r in records if r.get("frame") == f and r["type"] == "shift"]
                for f in FRAMES}  # fmt: skip
    ids = [r["id"] for r in by_frame["plain"]]
    assert len(ids) == 40 and all([r["id"] for r in by_frame[f]] == ids for f in FRAMES)
    for s in summaries:
        tokens = by_frame[s["frame"]]
        counts = {c: sum(category(r["rank"]) == c for r in tokens) for c in s["counts"]}
        assert counts == s["counts"] and s["tokens"] == 40
    # Progress on stderr (not a terminal here, so asked for): per frame, up to 40 of 40.
    lines = err.splitlines()
    for frame in FRAMES:
        mine = [ln for ln in lines if ln.endswith(f"({frame} frame)")]
        assert mine[-1] == f"scoring 40/40 ({frame} frame)" and mine[0] == (
            f"scoring 32/40 ({frame} frame)"
        )


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
