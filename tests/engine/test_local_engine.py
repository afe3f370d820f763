"""The real llama.cpp engine on the real Gemma 3 270M model, in its child process."""

from __future__ import annotations

import os
import random
import signal
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from localbvi.engine import DoneEvent, LoadConfig, LocalEngine, Message, Sampling, TokenEvent
from localbvi.engine.local import wait_for_exit
from localbvi.errors import (
    ContextOverflowError,
    EngineCrashedError,
    EngineError,
    ModelLoadError,
    TemplateError,
)

GREEDY = Sampling(temperature=0.0, max_tokens=16)
GEMMA_RENDERED = (
    "<bos><start_of_turn>user\nBe helpful.\n\nHello<end_of_turn>\n<start_of_turn>model\n"
)


def run(events: Any) -> tuple[list[TokenEvent], DoneEvent]:
    tokens: list[TokenEvent] = []
    done: DoneEvent | None = None
    for event in events:
        if isinstance(event, TokenEvent):
            assert done is None, "a token arrived after the done event"
            tokens.append(event)
        else:
            assert done is None, "two done events"
            done = event
    assert done is not None, "the stream ended without a done event"
    return tokens, done


def text_of(tokens: list[TokenEvent]) -> str:
    return "".join(t.text for t in tokens)


def test_load_reports_facts(base_engine: LocalEngine, gemma_base: Path) -> None:
    info = base_engine.info
    assert info is not None
    assert info.path == str(gemma_base)
    assert info.n_ctx == 2048
    assert info.n_layers == 18
    assert info.load_s > 0
    assert info.chat_template is None and info.template_source is None
    assert info.bos_token == "<bos>"
    assert info.device.startswith("CPU") or info.n_gpu_layers > 0


def test_raw_completion_streams_and_continues_the_text(base_engine: LocalEngine) -> None:
    tokens, done = run(base_engine.complete("What is 2+2?", GREEDY))
    assert len(tokens) >= 2
    assert done.finish_reason == "length"
    assert done.tokens == 16
    assert done.prompt_tokens > 3
    assert done.ttft_s > 0 and done.tokens_per_s > 0
    # The base model's lesson: it continues a worksheet instead of answering.
    assert "2+2" in text_of(tokens)


def test_temperature_zero_is_deterministic(base_engine: LocalEngine) -> None:
    first = text_of(run(base_engine.complete("The capital of France is", GREEDY))[0])
    second = text_of(run(base_engine.complete("The capital of France is", GREEDY))[0])
    assert first == second
    assert first.strip()


def test_seeded_sampling_repeats(base_engine: LocalEngine) -> None:
    # llama.cpp reuses the cached prefix of the previous prompt, and a batch evaluated from a
    # different cached prefix can differ in the last bits; from the same state, a seed repeats.
    s = Sampling(temperature=1.0, max_tokens=12, seed=1234)
    run(base_engine.complete("Hi", GREEDY))
    a = text_of(run(base_engine.complete("Once upon a time", s))[0])
    run(base_engine.complete("Hi", GREEDY))
    b = text_of(run(base_engine.complete("Once upon a time", s))[0])
    assert a == b
    other = Sampling(temperature=1.0, max_tokens=12, seed=99)
    run(base_engine.complete("Hi", GREEDY))
    c = text_of(run(base_engine.complete("Once upon a time", other))[0])
    assert c != a


def test_stop_string_ends_the_stream_without_printing_it(base_engine: LocalEngine) -> None:
    s = Sampling(temperature=0.0, max_tokens=64, stop=("\n",))
    tokens, done = run(base_engine.complete("What is 2+2?", s))
    assert "\n" not in text_of(tokens)
    assert done.finish_reason == "stop"
    assert done.stop_detail == "stop string '\\n'"


def test_tokenize_shows_pieces_and_one_bos(base_engine: LocalEngine) -> None:
    tokens = base_engine.tokenize("Hello world")
    assert tokens[0].text == "<bos>" and tokens[0].special
    assert "".join(t.text for t in tokens[1:]) == "Hello world"
    # A prompt that already starts with <bos> does not get a second one.
    again = base_engine.tokenize("<bos>Hello world")
    assert [t.id for t in again] == [t.id for t in tokens]


def test_chat_on_a_base_model_is_refused(base_engine: LocalEngine) -> None:
    with pytest.raises(TemplateError, match="no chat template"):
        run(base_engine.chat([Message("user", "Hello")], GREEDY))
    with pytest.raises(TemplateError, match="base model"):
        base_engine.render([Message("user", "Hello")])
    # The engine is still usable afterwards.
    assert run(base_engine.complete("Hi", GREEDY))[1].finish_reason == "length"


def test_render_is_exactly_the_gemma_template(instruct_engine: LocalEngine) -> None:
    rendered = instruct_engine.render([Message("system", "Be helpful."), Message("user", "Hello")])
    assert rendered.text == GEMMA_RENDERED
    ids = [t.id for t in rendered.tokens]
    assert rendered.tokens[0].text == "<bos>"
    assert ids.count(rendered.tokens[0].id) == 1, "BOS doubled"
    specials = [t.text for t in rendered.tokens if t.special]
    assert specials == ["<bos>", "<start_of_turn>", "<end_of_turn>", "<start_of_turn>"]
    assert "".join(t.text for t in rendered.tokens) == GEMMA_RENDERED


def test_chat_streams_and_never_prints_end_of_turn(instruct_engine: LocalEngine) -> None:
    info = instruct_engine.info
    assert info is not None and info.template_source == "gguf"
    s = Sampling(temperature=0.0, max_tokens=48)
    tokens, done = run(instruct_engine.chat([Message("user", "Say hello.")], s))
    assert tokens, "no tokens streamed"
    text = text_of(tokens)
    assert "<end_of_turn>" not in text and "<start_of_turn>" not in text
    assert done.finish_reason in ("stop", "length")
    if done.finish_reason == "stop":
        assert done.stop_detail == "end of turn (<end_of_turn>)"


def test_chat_stops_at_end_of_turn(instruct_engine: LocalEngine) -> None:
    """Force the model to the end of a turn: the reply stops there, the marker unprinted."""
    prompt = "<start_of_turn>user\nHi<end_of_turn>\n<start_of_turn>model\nHello!"
    eot = instruct_engine.tokenize("<end_of_turn>")[-1].id
    ids = [t.id for t in instruct_engine.tokenize(prompt)] + [eot]
    # Feed the turn end ourselves and let the model go on: the next <end_of_turn> it
    # produces (or any EOG) must stop it. A prompt ending in a finished model turn makes the
    # model open a new turn; we check that no marker text ever leaks into the stream.
    tokens, done = run(instruct_engine.complete(ids, Sampling(temperature=0.0, max_tokens=40)))
    text = text_of(tokens)
    assert "<end_of_turn>" not in text
    assert done.finish_reason in ("stop", "length")


def test_cancel_mid_stream_then_generate_again(base_engine: LocalEngine) -> None:
    expected = text_of(run(base_engine.complete("One, two, three,", GREEDY))[0])
    events = base_engine.complete(
        "Count to one hundred: 1, 2, 3,", Sampling(temperature=0, max_tokens=400)
    )
    seen = 0
    done: DoneEvent | None = None
    for event in events:
        if isinstance(event, TokenEvent):
            seen += 1
            if seen == 3:
                base_engine.cancel()
        else:
            done = event
    assert done is not None and done.finish_reason == "cancelled"
    assert done.tokens <= 5, "cancel took more than a token or two"
    # The model stays loaded and gives the same answer as before.
    assert text_of(run(base_engine.complete("One, two, three,", GREEDY))[0]) == expected


def test_abandoned_stream_leaves_engine_usable(base_engine: LocalEngine) -> None:
    events = base_engine.complete("Tell me a story:", Sampling(temperature=0, max_tokens=200))
    for i, _ in enumerate(events):
        if i == 2:
            break
    events.close()  # type: ignore[attr-defined]
    assert run(base_engine.complete("Hi", GREEDY))[1].finish_reason == "length"


def test_cancel_interrupts_a_long_prompt_evaluation(gemma_base: Path) -> None:
    rng = random.Random(7)
    words = ["apple", "river", "stone", "cloud", "music", "paper", "light", "green"]

    def long_prompt() -> str:
        return " ".join(rng.choice(words) for _ in range(1500))

    with LocalEngine() as engine:
        engine.load(gemma_base, LoadConfig(n_ctx=2048))
        started = time.perf_counter()
        _, full = run(engine.complete(long_prompt(), Sampling(temperature=0, max_tokens=1)))
        full_s = time.perf_counter() - started
        assert full.finish_reason == "length"

        timer = threading.Timer(0.1, engine.cancel)
        started = time.perf_counter()
        timer.start()
        tokens, done = run(engine.complete(long_prompt(), Sampling(temperature=0, max_tokens=1)))
        cancelled_s = time.perf_counter() - started
        assert done.finish_reason == "cancelled"
        assert not [t for t in tokens if t.id >= 0]
        assert cancelled_s < full_s * 0.6, (cancelled_s, full_s)
        # And the engine still works after an aborted evaluation.
        assert run(engine.complete("Hi", GREEDY))[1].finish_reason == "length"


def test_prompt_longer_than_context_is_refused(gemma_base: Path) -> None:
    with LocalEngine() as engine:
        info = engine.load(gemma_base, LoadConfig(n_ctx=256))
        assert info.n_ctx == 256
        with pytest.raises(ContextOverflowError) as err:
            run(engine.complete("word " * 400, GREEDY))
        assert err.value.n_ctx == 256
        assert err.value.prompt_tokens > 256
        assert "--ctx" in str(err.value)
        # A reply that would run past the context stops there, and says why.
        _tokens, done = run(engine.complete("word " * 200, Sampling(temperature=0, max_tokens=500)))
        assert done.finish_reason == "length"
        assert done.stop_detail == "context full"
        assert done.prompt_tokens + done.tokens <= 256


def test_killed_child_is_a_clean_error_then_load_again(gemma_base: Path) -> None:
    with LocalEngine() as engine:
        engine.load(gemma_base, LoadConfig(n_ctx=512))
        pid = engine.pid
        assert pid is not None and pid != os.getpid()
        events = engine.complete("Count: 1, 2, 3,", Sampling(temperature=0, max_tokens=400))
        with pytest.raises(EngineCrashedError, match="SIGKILL") as err:
            for i, _ in enumerate(events):
                if i == 2:
                    os.kill(pid, signal.SIGKILL)
        assert "Load the model again" in str(err.value)
        assert wait_for_exit(pid)
        assert engine.info is None
        assert engine.logs(), "the dead child's log lines are kept"
        with pytest.raises(EngineError, match="no model is loaded"):
            run(engine.complete("Hi", GREEDY))
        engine.load(gemma_base, LoadConfig(n_ctx=512))
        assert run(engine.complete("Hi", GREEDY))[1].finish_reason == "length"


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"not a gguf file at all, just text\n" * 10,
        b"GGUF" + b"\x03\x00\x00\x00" + b"\xff" * 64,
        bytes(random.Random(1).getrandbits(8) for _ in range(4096)),
    ],
    ids=["empty", "text", "huge-counts", "random"],
)
def test_corrupt_file_is_a_readable_load_error(tmp_path: Path, content: bytes) -> None:
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(content)
    with LocalEngine() as engine:
        with pytest.raises(ModelLoadError) as err:
            engine.load(bad, LoadConfig(n_ctx=256))
        assert str(bad) in str(err.value)
        assert engine.info is None


def test_corrupt_file_reaching_llama_cpp_fails_in_the_child(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, gemma_base: Path
) -> None:
    """Even without the inspector's check, llama.cpp's failure stays in the child process."""
    bad = tmp_path / "truncated.gguf"
    with open(gemma_base, "rb") as src:
        bad.write_bytes(src.read(5_000_000))
    monkeypatch.setattr(LocalEngine, "_validate", staticmethod(lambda path: None))
    with LocalEngine() as engine:
        with pytest.raises(ModelLoadError):
            engine.load(bad, LoadConfig(n_ctx=256))
        # The same engine then loads a good model.
        engine.load(gemma_base, LoadConfig(n_ctx=256))
        assert run(engine.complete("Hi", GREEDY))[1].finish_reason == "length"


def test_failed_load_keeps_the_previous_model(tmp_path: Path, gemma_base: Path) -> None:
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"junk" * 100)
    with LocalEngine() as engine:
        engine.load(gemma_base, LoadConfig(n_ctx=256))
        with pytest.raises(ModelLoadError):
            engine.load(bad, LoadConfig(n_ctx=256))
        assert engine.info is not None and engine.info.path == str(gemma_base)
        assert run(engine.complete("Hi", GREEDY))[1].finish_reason == "length"


def test_llama_cpp_never_writes_to_our_terminal(
    gemma_base: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    with LocalEngine() as engine:
        engine.load(gemma_base, LoadConfig(n_ctx=256))
        run(engine.complete("Hi", GREEDY))
        logs = engine.logs()
    out, err = capfd.readouterr()
    assert out == "" and err == ""
    assert any("llama" in line for line in logs), "llama.cpp's log lines are captured"


def test_top_probabilities(base_engine: LocalEngine) -> None:
    tokens, _ = run(
        base_engine.complete(
            "The capital of France is", Sampling(temperature=0, max_tokens=6, top_probs=5)
        )
    )
    real = [t for t in tokens if t.id >= 0]
    assert real
    for t in real:
        assert 5 <= len(t.alternatives) <= 6
        probs = [a.prob for a in t.alternatives]
        assert all(0 < p <= 1 for p in probs)
        assert sum(probs) <= 1.0 + 1e-6
        # Greedy: the chosen token is the most probable one.
        assert t.alternatives[0].id == t.id
        assert probs == sorted(probs, reverse=True)


def test_branching_from_an_alternative(base_engine: LocalEngine) -> None:
    prompt_ids = [t.id for t in base_engine.tokenize("The capital of France is")]
    tokens, _ = run(
        base_engine.complete(prompt_ids, Sampling(temperature=0, max_tokens=4, top_probs=3))
    )
    second_choice = tokens[0].alternatives[1]
    branch, _ = run(
        base_engine.complete([*prompt_ids, second_choice.id], Sampling(temperature=0, max_tokens=4))
    )
    assert text_of(branch) != text_of(tokens[1:])
    assert branch, "the branch continues after the chosen alternative"


def test_one_generation_at_a_time(base_engine: LocalEngine) -> None:
    first = base_engine.complete("Hello", Sampling(temperature=0, max_tokens=50))
    next(first)
    with pytest.raises(EngineError, match="already generating"):
        next(base_engine.complete("Hi", GREEDY))
    first.close()  # type: ignore[attr-defined]
