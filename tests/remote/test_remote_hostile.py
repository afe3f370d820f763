"""A server that misbehaves cannot hang localbvi or eat its memory (issue 13, remote part).

Each case runs against a real misbehaving HTTP server on loopback, with the timeouts scaled
down through `NetworkSettings` (the settings file's `[network]` table), and checks what a user
gets: a readable error or a cut-off reply, in seconds, with memory bounded.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import pytest

from localbvi.engine.remote import RemoteEngine
from localbvi.engine.types import DoneEvent, Sampling, TokenEvent
from localbvi.errors import EngineError, ModelLoadError
from localbvi.settings import NetworkSettings, load_settings

sys.path.insert(0, str(Path(__file__).resolve().parent))
from hostile_servers import (
    Behaviour,
    drip_json,
    drip_stream,
    endless_stream,
    hostile_server,
    huge_declared_json,
    huge_json,
    huge_line,
    many_data_lines,
    slow_headers,
    tokens_then_drip,
)

FAST = NetworkSettings(connect_timeout=1.0, first_byte_timeout=2.0, read_timeout=1.0)
MIB = 1 << 20


def _engine(url: str) -> RemoteEngine:
    engine = RemoteEngine(url, network=FAST)
    engine.load(url)
    return engine


@pytest.fixture
def traced() -> Iterator[None]:
    tracemalloc.start()
    try:
        yield
    finally:
        tracemalloc.stop()


def _peak_mib() -> float:
    return tracemalloc.get_traced_memory()[1] / MIB


# --- streams -------------------------------------------------------------------------------


def test_an_endless_stream_is_cut_at_max_tokens_and_closed() -> None:
    with hostile_server(endless_stream) as server:
        engine = _engine(server.url)
        started = time.monotonic()
        events = list(engine.complete("Hi", Sampling(max_tokens=20)))
        elapsed = time.monotonic() - started
        assert server.hung_up.wait(5), "the stream was not closed"
        sent = server.tokens_sent
    *tokens, done = events
    assert len(tokens) == 20 and all(isinstance(t, TokenEvent) for t in tokens)
    assert isinstance(done, DoneEvent)
    assert (done.finish_reason, done.stop_detail, done.tokens) == ("length", "max tokens", 20)
    assert sent > 20  # the server did ignore max_tokens
    assert elapsed < 10
    assert any("past max_tokens" in line for line in engine.logs())


def test_a_stream_dripping_one_byte_at_a_time_times_out_before_its_first_token() -> None:
    with hostile_server(drip_stream) as server:
        engine = _engine(server.url)
        started = time.monotonic()
        with pytest.raises(EngineError) as exc:
            list(engine.complete("Hi", Sampling()))
        elapsed = time.monotonic() - started
    # Each byte came well within every per-read timeout: only the deadline ends it.
    assert str(exc.value) == (
        f"the server at {server.url} sent no token within 2 s: it may be busy or evaluating a "
        "very long prompt; try again, or raise network.first_byte_timeout in settings"
    )
    assert 1.5 < elapsed < 6


def test_a_reply_that_stalls_in_the_middle_keeps_its_tokens_and_says_why() -> None:
    with hostile_server(tokens_then_drip) as server:
        engine = _engine(server.url)
        started = time.monotonic()
        events = list(engine.complete("Hi", Sampling()))
        elapsed = time.monotonic() - started
    *tokens, done = events
    assert [t.text for t in tokens if isinstance(t, TokenEvent)] == ["ha", "ha", "ha"]
    assert isinstance(done, DoneEvent) and done.finish_reason == "error"
    assert "sent no token for 1 s in the middle of its reply" in done.error
    assert "network.read_timeout" in done.error
    assert elapsed < 6


def test_headers_that_never_finish_time_out() -> None:
    with hostile_server(slow_headers) as server:
        engine = _engine(server.url)
        started = time.monotonic()
        with pytest.raises(EngineError) as exc:
            list(engine.complete("Hi", Sampling()))
        elapsed = time.monotonic() - started
    assert str(exc.value).startswith(
        f"the server at {server.url} did not start answering /v1/completions within 2 s:"
    )
    assert 1.5 < elapsed < 6


def test_cancel_ends_a_request_whose_headers_never_come() -> None:
    with hostile_server(slow_headers) as server:
        engine = RemoteEngine(server.url, network=NetworkSettings())  # the long defaults
        threading.Timer(0.3, engine.cancel).start()
        started = time.monotonic()
        events = list(engine.complete("Hi", Sampling()))
        elapsed = time.monotonic() - started
    assert [e.finish_reason for e in events if isinstance(e, DoneEvent)] == ["cancelled"]
    assert len(events) == 1
    assert elapsed < 2


@pytest.mark.usefixtures("traced")
def test_a_line_that_never_ends_is_refused_with_memory_bounded() -> None:
    with hostile_server(huge_line) as server:
        engine = _engine(server.url)
        started = time.monotonic()
        with pytest.raises(EngineError) as exc:
            list(engine.complete("Hi", Sampling()))
        elapsed = time.monotonic() - started
    assert str(exc.value).startswith(
        f"the server at {server.url} sent a line longer than 1 MB in its answer to "
        "/v1/completions; localbvi stopped reading"
    )
    assert elapsed < 10
    assert _peak_mib() < 64


@pytest.mark.usefixtures("traced")
def test_an_event_of_endless_data_lines_is_refused_with_memory_bounded() -> None:
    with hostile_server(many_data_lines) as server:
        engine = _engine(server.url)
        with pytest.raises(EngineError, match="sent an event larger than 1 MB"):
            list(engine.complete("Hi", Sampling()))
    assert _peak_mib() < 64


# --- whole answers -------------------------------------------------------------------------


@pytest.mark.usefixtures("traced")
@pytest.mark.parametrize("behaviour", [huge_json, huge_declared_json])
def test_a_huge_json_body_is_refused_with_memory_bounded(behaviour: Behaviour) -> None:
    with hostile_server(endless_stream, models=behaviour) as server:
        started = time.monotonic()
        with pytest.raises(ModelLoadError) as exc:
            RemoteEngine(server.url, network=FAST).load(server.url)
        elapsed = time.monotonic() - started
    assert str(exc.value).startswith(
        f"the server at {server.url} sent more than 17 MB in its answer to /v1/models;"
    )
    assert elapsed < 10
    assert _peak_mib() < 64


def test_a_body_dripping_one_byte_at_a_time_times_out() -> None:
    with hostile_server(endless_stream, models=drip_json) as server:
        started = time.monotonic()
        with pytest.raises(ModelLoadError) as exc:
            RemoteEngine(server.url, network=FAST).load(server.url)
        elapsed = time.monotonic() - started
    assert str(exc.value).startswith(
        f"the server at {server.url} did not finish its answer to /v1/models within 1 s:"
    )
    assert elapsed < 6


def test_a_server_that_never_accepts_the_connection_times_out() -> None:
    """A listening socket whose queue is full: the kernel drops the next connection attempt."""
    import socket

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    fillers = []
    try:
        for _ in range(8):  # fill the accept queue; the last attempts hang
            s = socket.socket()
            s.setblocking(False)
            s.connect_ex(("127.0.0.1", port))
            fillers.append(s)
        time.sleep(0.1)
        url = f"http://127.0.0.1:{port}/v1"
        started = time.monotonic()
        with pytest.raises(ModelLoadError) as exc:
            RemoteEngine(url, network=FAST).load(url)
        elapsed = time.monotonic() - started
    finally:
        for s in fillers:
            s.close()
        listener.close()
    assert str(exc.value).startswith(
        f"the server at {url} did not accept a connection within 1 s: check that it is running"
    )
    assert elapsed < 5


# --- the settings file -----------------------------------------------------------------------


def test_network_timeouts_come_from_the_settings_file(tmp_path: Path) -> None:
    path = tmp_path / "settings.toml"
    path.write_text("[network]\nconnect_timeout = 3\nfirst_byte_timeout = 90.5\n")
    loaded = load_settings(path)
    assert loaded.problem is None
    assert loaded.settings.network == NetworkSettings(3.0, 90.5, 30.0)


def test_bad_network_timeouts_are_reported_and_the_defaults_kept(tmp_path: Path) -> None:
    path = tmp_path / "settings.toml"
    path.write_text('[network]\nconnect_timeout = 0\nread_timeout = "soon"\nidle = 5\n')
    loaded = load_settings(path)
    assert loaded.settings.network == NetworkSettings()
    problem = loaded.problem or ""
    assert "'network.connect_timeout' is 0 but must be between 0.1 and 3600" in problem
    assert "'network.read_timeout' must be a number" in problem
    assert "unknown setting 'network.idle'" in problem


# --- through the CLI: one readable line, in seconds, with bounded memory --------------------


def _cli(url: str, settings: Path, *args: str) -> tuple[int, str, str, float, float]:
    """Run `localbvi complete` as a real process; (exit code, stdout, stderr, s, max RSS MiB)."""
    out, err = settings.with_suffix(".out"), settings.with_suffix(".err")
    env = {**os.environ, "LOCALBVI_SETTINGS": str(settings)}
    command = [sys.executable, "-m", "localbvi", "complete", "-m", url, "--no-save", *args, "Hi"]
    started = time.monotonic()
    with out.open("wb") as stdout, err.open("wb") as stderr:
        proc = subprocess.Popen(command, stdout=stdout, stderr=stderr, env=env)
    try:
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.monotonic() - started > 20:
                pytest.fail("localbvi did not end within 20 s")
            time.sleep(0.05)
    finally:
        if not pid:
            proc.kill()
            proc.wait()
    proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here, by wait4
    elapsed = time.monotonic() - started
    return proc.returncode, out.read_text(), err.read_text(), elapsed, usage.ru_maxrss / 1024


@pytest.fixture
def fast_settings(tmp_path: Path) -> Path:
    path = tmp_path / "settings.toml"
    path.write_text(
        "[network]\nconnect_timeout = 1.0\nfirst_byte_timeout = 2.0\nread_timeout = 1.0\n"
    )
    return path


@pytest.mark.slow
@pytest.mark.parametrize(
    ("completions", "models", "says"),
    [
        (drip_stream, None, "sent no token within 2 s"),
        (slow_headers, None, "did not start answering /v1/completions within 2 s"),
        (huge_line, None, "sent a line longer than 1 MB"),
        (many_data_lines, None, "sent an event larger than 1 MB"),
        (endless_stream, huge_json, "sent more than 17 MB in its answer to /v1/models"),
    ],
    ids=["drip", "slow-headers", "huge-line", "huge-event", "huge-json"],
)
def test_the_cli_reports_a_hostile_server_in_one_line(
    fast_settings: Path, completions: Behaviour, models: Behaviour | None, says: str
) -> None:
    with hostile_server(completions, models=models) as server:
        code, stdout, stderr, elapsed, rss = _cli(server.url, fast_settings)
    lines = stderr.splitlines()
    assert code == 1
    assert len(lines) == 1, stderr
    assert lines[0].startswith(f"localbvi: error: the server at {server.url} ")
    assert says in lines[0]
    assert stdout == ""
    assert elapsed < 10
    assert rss < 512


@pytest.mark.slow
def test_the_cli_stops_an_endless_stream_at_max_tokens(fast_settings: Path) -> None:
    with hostile_server(endless_stream) as server:
        code, stdout, stderr, elapsed, rss = _cli(server.url, fast_settings, "--max-tokens", "8")
    assert code == 0, stderr
    assert stdout == "ha" * 8 + "\n"
    assert "error" not in stderr
    assert elapsed < 10
    assert rss < 512
