"""RemoteEngine against a real llama_cpp.server running the Gemma 3 270M test model."""

from __future__ import annotations

import threading
import time

import pytest

from localbvi.engine.base import Engine
from localbvi.engine.remote import NO_TEMPLATE_MESSAGE, RemoteEngine
from localbvi.engine.types import DoneEvent, Event, LoadConfig, Message, Sampling, TokenEvent
from localbvi.errors import EngineError

GREEDY = Sampling(temperature=0.0, max_tokens=12, seed=1)


@pytest.fixture
def engine(llama_server: str) -> RemoteEngine:
    e = RemoteEngine(llama_server)
    e.load(llama_server, LoadConfig())
    return e


def _split(events: list[Event]) -> tuple[str, list[TokenEvent], DoneEvent]:
    *tokens, done = events
    assert isinstance(done, DoneEvent)
    assert all(isinstance(t, TokenEvent) for t in tokens)
    token_events = [t for t in tokens if isinstance(t, TokenEvent)]
    return "".join(t.text for t in token_events), token_events, done


def test_it_is_an_engine_and_load_checks_the_server(llama_server: str) -> None:
    e = RemoteEngine(llama_server)
    assert isinstance(e, Engine)
    assert e.info is None
    info = e.load(f"{llama_server}", LoadConfig())
    assert e.info == info
    assert info.model_name.endswith(".gguf")  # llama_cpp.server names models by path
    assert info.path == f"{llama_server}#{info.model_name}"
    assert info.load_s < 10
    assert any("GET /v1/models → 200" in line for line in e.logs())


def test_raw_completion_streams_the_base_model_continuation(engine: RemoteEngine) -> None:
    text, tokens, done = _split(list(engine.complete("What is 2+2?", GREEDY)))
    # The seed's lesson: a base model continues the text instead of answering it.
    assert text.startswith("\n\nWhat is 2+2?")
    assert len(tokens) == 12
    assert done.finish_reason == "length"
    assert done.stop_detail == "max tokens"
    assert done.tokens == 12
    assert 0 < done.ttft_s < 30
    assert done.tokens_per_s > 0
    again, _, _ = _split(list(engine.complete("What is 2+2?", GREEDY)))
    assert again == text  # temperature 0 is deterministic


def test_token_probabilities_come_back_as_alternatives(engine: RemoteEngine) -> None:
    sampling = Sampling(temperature=0.0, max_tokens=4, top_probs=3)
    _, tokens, done = _split(list(engine.complete("The capital of France is", sampling)))
    assert done.finish_reason == "length"
    for token in tokens:
        assert 1 <= len(token.alternatives) <= 3
        probs = [a.prob for a in token.alternatives]
        assert probs == sorted(probs, reverse=True)
        assert 0 < sum(probs) <= 1.0001
        assert token.alternatives[0].text == token.text  # greedy takes the most likely


def test_chat_goes_through_the_servers_chat_template(engine: RemoteEngine) -> None:
    messages = [Message("system", "Be helpful."), Message("user", "Hello")]
    text, tokens, done = _split(list(engine.chat(messages, Sampling(temperature=0, max_tokens=8))))
    assert tokens and text
    assert done.finish_reason in ("stop", "length")
    assert done.tokens == len(tokens)


def test_cancel_from_another_thread_ends_the_stream(engine: RemoteEngine) -> None:
    started = time.monotonic()
    events = []
    stream = engine.complete("Once upon a time", Sampling(temperature=0, max_tokens=1000))
    for seen, event in enumerate(stream, start=1):
        events.append(event)
        if seen == 3:
            threading.Thread(target=engine.cancel).start()
    _, tokens, done = _split(events)
    assert done.finish_reason == "cancelled"
    assert 3 <= len(tokens) < 50
    assert time.monotonic() - started < 30
    # The engine (and the server) work normally afterwards.
    text, _, after = _split(list(engine.complete("What is 2+2?", GREEDY)))
    assert after.finish_reason == "length" and text.startswith("\n\nWhat is 2+2?")


def test_cancel_when_idle_does_nothing(engine: RemoteEngine) -> None:
    engine.cancel()
    _, _, done = _split(list(engine.complete("Hi", Sampling(temperature=0, max_tokens=2))))
    assert done.finish_reason == "length"


def test_one_generation_at_a_time(engine: RemoteEngine) -> None:
    first = engine.complete("Once upon a time", Sampling(temperature=0, max_tokens=50))
    next(first)
    with pytest.raises(EngineError, match="already generating"):
        next(engine.complete("Hi", GREEDY))
    first.close()  # stopping early closes the stream and frees the engine
    _, _, done = _split(list(engine.complete("Hi", Sampling(temperature=0, max_tokens=2))))
    assert done.finish_reason == "length"


def test_tokenize_uses_the_servers_tokenizer(engine: RemoteEngine) -> None:
    tokens = engine.tokenize("<bos>Hello world")
    assert tokens[0].id == 2 and tokens[0].special  # one BOS, not two
    assert tokens[1].id != 2
    assert "".join(t.text for t in tokens[1:]) == "Hello world"


def test_render_says_the_prompt_is_rendered_on_the_server(engine: RemoteEngine) -> None:
    with pytest.raises(EngineError) as exc:
        engine.render([Message("user", "Hello")])
    assert str(exc.value) == NO_TEMPLATE_MESSAGE


def test_a_prompt_longer_than_the_context_is_an_error_with_advice(engine: RemoteEngine) -> None:
    with pytest.raises(EngineError, match="check the server's log"):
        list(engine.complete("hello " * 3000, GREEDY))
