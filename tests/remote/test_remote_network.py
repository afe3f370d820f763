"""The remote backend on any network (issue 11): proxies from the environment, pooling."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from localbvi.engine.remote import RemoteEngine
from localbvi.engine.types import DoneEvent, Sampling, TokenEvent
from localbvi.errors import ModelLoadError

sys.path.insert(0, str(Path(__file__).resolve().parent))
from remote_fakes import (
    free_port,
    keep_alive_tokenizer,
    llama_server_fake,
    recording_proxy,
    self_signed,
)


def _reply(engine: RemoteEngine) -> tuple[str, DoneEvent]:
    *tokens, done = list(engine.complete("Hi", Sampling()))
    assert isinstance(done, DoneEvent)
    return "".join(t.text for t in tokens if isinstance(t, TokenEvent)), done


def test_requests_go_through_the_proxy_in_http_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    with llama_server_fake() as server, recording_proxy() as proxy:
        monkeypatch.setenv("HTTP_PROXY", proxy.url)
        engine = RemoteEngine(server.url)
        info = engine.load(server.url)
        text, done = _reply(engine)
    assert info.model_name == "gemma-big"
    assert (text, done.finish_reason) == ("Hello there!", "stop")
    assert ("GET", f"{server.url}/models") in proxy.seen
    assert ("POST", f"{server.url}/completions") in proxy.seen


def test_no_proxy_sends_requests_straight_to_the_server(monkeypatch: pytest.MonkeyPatch) -> None:
    with llama_server_fake() as server, recording_proxy() as proxy:
        monkeypatch.setenv("HTTP_PROXY", proxy.url)
        monkeypatch.setenv("NO_PROXY", "localhost,127.0.0.1")
        engine = RemoteEngine(server.url)
        engine.load(server.url)
        text, _ = _reply(engine)
    assert text == "Hello there!"
    assert proxy.seen == []
    assert any(path == "/v1/completions" for path, _, _ in server.requests)


def test_a_proxy_that_is_down_is_named_with_the_way_around_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    monkeypatch.setenv("HTTP_PROXY", dead)
    with llama_server_fake() as server, pytest.raises(ModelLoadError) as exc:
        RemoteEngine(server.url).load(server.url)
    message = str(exc.value)
    assert message.startswith(f"the proxy {dead} did not get through to {server.url} (")
    assert message.endswith("or list the host in NO_PROXY to go direct")


def test_tokenizing_on_llama_cpp_server_reuses_one_connection() -> None:
    """llama_cpp.server needs one detokenize request per token: all on one connection."""
    with keep_alive_tokenizer() as server:
        engine = RemoteEngine(server.url)
        engine.load(server.url)
        tokens = engine.tokenize("one two three four five six seven eight nine ten")
        requests = [path for path, _, _ in server.requests]
        ports = set(server.ports)  # type: ignore[attr-defined]
    assert [t.id for t in tokens] == list(range(100, 110))
    assert "".join(t.text for t in tokens) == "".join(f" w{i}" for i in range(100, 110))
    assert requests.count("/extras/detokenize") == 10
    assert len(ports) == 1, f"{len(ports)} connections for {len(requests)} requests"


def test_close_drops_the_connections_and_the_engine_still_works_after() -> None:
    with keep_alive_tokenizer() as server:
        engine = RemoteEngine(server.url)
        engine.load(server.url)
        engine.close()
        engine.load(server.url)
        assert len(engine.tokenize("a b")) == 2
        ports = server.ports  # type: ignore[attr-defined]
    assert len(set(ports)) == 2  # one connection before close(), a new one after


def test_https_checks_the_certificate_against_the_trust_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An unknown certificate is refused with the fix; SSL_CERT_FILE adds a trusted one."""
    cert, context = self_signed(tmp_path)
    with llama_server_fake(tls=context) as server:
        assert server.url.startswith("https://")
        with pytest.raises(ModelLoadError) as exc:
            RemoteEngine(server.url).load(server.url)
        monkeypatch.setenv("SSL_CERT_FILE", str(cert))
        info = RemoteEngine(server.url).load(server.url)
    assert str(exc.value).startswith(
        f"the server at {server.url} has a certificate this computer does not trust ("
    )
    assert "set SSL_CERT_FILE to a file that holds it" in str(exc.value)
    assert info.model_name == "gemma-big"
