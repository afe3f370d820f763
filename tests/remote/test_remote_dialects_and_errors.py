"""RemoteEngine's parsing of llama-server's dialect, and its errors for bad servers."""

from __future__ import annotations

import math
import sys
import threading
import time
from pathlib import Path

import pytest

from localbvi.engine.remote import RemoteEngine, is_remote_ref, parse_remote_ref
from localbvi.engine.types import DoneEvent, LoadConfig, Message, Sampling, TokenEvent
from localbvi.errors import ContextOverflowError, EngineError, ModelLoadError, RefError

sys.path.insert(0, str(Path(__file__).resolve().parent))
from remote_fakes import (
    TEMPLATE,
    free_port,
    garbage_http_server,
    llama_server_fake,
    not_http_server,
)

# --- references ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ref", "expected"),
    [
        ("http://127.0.0.1:8080/v1", ("http://127.0.0.1:8080/v1", None)),
        ("http://127.0.0.1:8080/v1#gemma-27b", ("http://127.0.0.1:8080/v1", "gemma-27b")),
        ("http://gpu-box:8080", ("http://gpu-box:8080/v1", None)),
        ("https://example.test/api/v1/#m", ("https://example.test/api/v1", "m")),
    ],
)
def test_parse_remote_ref(ref: str, expected: tuple[str, str | None]) -> None:
    assert is_remote_ref(ref)
    assert parse_remote_ref(ref) == expected


@pytest.mark.parametrize("ref", ["http://", "http://host:port/v1", "ftp://host/v1"])
def test_bad_remote_refs_say_how_to_write_them(ref: str) -> None:
    with pytest.raises(RefError, match="http://HOST:8080/v1"):
        parse_remote_ref(ref)


def test_paths_and_hub_refs_are_not_remote() -> None:
    assert not is_remote_ref("/models/gemma.gguf")
    assert not is_remote_ref("google/gemma-3-270m:Q4_K_M")


# --- llama-server's dialect (a stand-in that answers as its README documents) ------------


def test_load_reads_models_and_props() -> None:
    with llama_server_fake() as server:
        info = RemoteEngine(server.url).load(server.url, LoadConfig())
    assert info.model_name == "gemma-big"
    assert (info.n_ctx, info.n_ctx_train) == (8192, 32768)
    assert info.chat_template == TEMPLATE and info.template_source == "gguf"
    assert (info.bos_token, info.eos_token) == ("<bos>", "<eos>")


def test_completion_uses_ids_probabilities_usage_and_timings() -> None:
    with llama_server_fake() as server:
        engine = RemoteEngine(server.url)
        engine.load(server.url)
        events = list(engine.complete("Hi", Sampling(temperature=0.2, top_probs=2, stop=("\n",))))
        request = server.requests[-1][1]
    *tokens, done = events
    assert [(t.text, t.id) for t in tokens if isinstance(t, TokenEvent)] == [
        ("Hello", 1000),
        (" there", 1001),
        ("!", 1002),
    ]
    first = tokens[0]
    assert isinstance(first, TokenEvent)
    assert [a.text for a in first.alternatives] == ["Hello", " other"]
    assert math.isclose(first.alternatives[0].prob, math.exp(-0.1))
    assert isinstance(done, DoneEvent)
    assert (done.finish_reason, done.prompt_tokens, done.tokens) == ("stop", 7, 3)
    assert done.tokens_per_s == 123.5
    # What was asked of the server: llama.cpp's sampling fields and token probabilities.
    assert request["model"] == "gemma-big"
    assert request["stream"] is True
    assert request["stop"] == ["\n"]
    assert (request["logprobs"], request["n_probs"], request["top_k"]) == (2, 2, 40)


def test_chat_reads_deltas_and_asks_for_top_logprobs() -> None:
    with llama_server_fake() as server:
        engine = RemoteEngine(server.url, model="gemma-big")
        events = list(engine.chat([Message("user", "Hi")], Sampling(top_probs=1)))
        request = server.requests[-1][1]
    assert "".join(e.text for e in events if isinstance(e, TokenEvent)) == "Hello there!"
    assert isinstance(events[-1], DoneEvent)
    assert events[-1].stop_detail == "end of turn"
    assert request["messages"] == [{"role": "user", "content": "Hi"}]
    assert (request["logprobs"], request["top_logprobs"]) == (True, 1)


def test_render_and_tokenize_through_apply_template_and_tokenize() -> None:
    with llama_server_fake() as server:
        engine = RemoteEngine(server.url)
        engine.load(server.url)
        rendered = engine.render([Message("user", "Hello")])
        tokens = engine.tokenize("<bos>Hello")
    assert rendered.text == "<bos><start_of_turn>user\nHello"  # the BOS the server adds
    assert [t.id for t in tokens] == [2, 9259, 236743]  # the doubled BOS is dropped
    assert tokens[0].special and not tokens[1].special
    assert tokens[2].text == "\ufffd"  # bytes of an incomplete UTF-8 character


def test_cancel_ends_a_silent_stream_at_once() -> None:
    """No token is coming (the server evaluates a long prompt): cancel still ends it now."""
    with llama_server_fake() as server:
        server.stall = 5.0
        engine = RemoteEngine(server.url)
        threading.Timer(0.3, engine.cancel).start()
        started = time.monotonic()
        events = list(engine.complete("a very long prompt", Sampling()))
        elapsed = time.monotonic() - started
    assert len(events) == 1
    assert isinstance(events[0], DoneEvent)
    assert events[0].finish_reason == "cancelled"
    assert elapsed < 2.0


def test_a_strict_openai_server_gets_plain_fields_after_one_refusal() -> None:
    with llama_server_fake() as server:
        server.strict = True
        engine = RemoteEngine(server.url)
        first = list(engine.complete("Hi", Sampling(top_probs=2)))
        second = list(engine.complete("Hi", Sampling()))
        sent = [body for path, body, _ in server.requests if path == "/v1/completions"]
    assert isinstance(first[-1], DoneEvent) and first[-1].finish_reason == "stop"
    assert isinstance(second[-1], DoneEvent) and second[-1].finish_reason == "stop"
    assert "top_k" in sent[0]  # refused once...
    assert all("top_k" not in body and "logprobs" not in body for body in sent[1:])  # ...then
    assert len(sent) == 3
    assert any("plain OpenAI fields" in line for line in engine.logs())


def test_context_overflow_is_reported_with_the_numbers() -> None:
    with llama_server_fake() as server:
        server.overflow = True
        engine = RemoteEngine(server.url)
        with pytest.raises(ContextOverflowError) as exc:
            list(engine.complete("long", Sampling()))
    assert (exc.value.prompt_tokens, exc.value.n_ctx) == (9000, 8192)


def test_api_key_is_sent_and_a_refusal_says_what_to_do() -> None:
    with llama_server_fake() as server:
        server.api_key = "s3cret"
        with pytest.raises(ModelLoadError, match="API key"):
            RemoteEngine(server.url).load(server.url)
        info = RemoteEngine(server.url, api_key="s3cret").load(server.url)
    assert info.model_name == "gemma-big"


def test_unknown_model_lists_what_the_server_offers() -> None:
    with llama_server_fake() as server, pytest.raises(ModelLoadError) as exc:
        RemoteEngine(server.url).load(f"{server.url}#llama-405b")
    assert "has no model 'llama-405b'; it offers: gemma-big" in str(exc.value)


# --- servers that are down or answer nonsense ------------------------------------------------


def test_no_server_at_the_address() -> None:
    url = f"http://127.0.0.1:{free_port()}/v1"
    engine = RemoteEngine(url)
    with pytest.raises(ModelLoadError) as exc:
        engine.load(url)
    assert str(exc.value) == (
        f"no server answers at {url}: start llama-server there or check the address"
    )
    assert engine.info is None
    with pytest.raises(EngineError, match="no server answers at"):
        list(engine.complete("Hi", Sampling()))


def test_a_web_page_instead_of_an_api() -> None:
    with garbage_http_server() as server:
        engine = RemoteEngine(server.url)
        with pytest.raises(ModelLoadError, match=r"not JSON .*OpenAI-compatible"):
            engine.load(server.url)
        with pytest.raises(EngineError, match="not an OpenAI answer"):
            list(engine.complete("Hi", Sampling()))
        with pytest.raises(EngineError, match="not an OpenAI answer"):
            list(engine.chat([Message("user", "Hi")], Sampling()))


def test_something_that_does_not_speak_http() -> None:
    with not_http_server() as url:
        with pytest.raises(ModelLoadError, match="like an HTTP server"):
            RemoteEngine(url).load(url)
        with pytest.raises(EngineError, match="like an HTTP server"):
            list(RemoteEngine(url).complete("Hi", Sampling()))
