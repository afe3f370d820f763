"""The command line's manners: flag ranges, usage lines, warnings once, pipes, hostile text."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from localbvi.cli import main
from localbvi.sessions import SessionStore, default_db_path
from localbvi.settings import load_settings, setting_spec

FLAGS = {
    "sampling.temperature": "--temperature",
    "sampling.top_p": "--top-p",
    "sampling.top_k": "--top-k",
    "sampling.min_p": "--min-p",
    "sampling.repeat_penalty": "--repeat-penalty",
    "sampling.max_tokens": "--max-tokens",
    "sampling.seed": "--seed",
    "sampling.top_probs": "--top-k-probs",
    "engine.n_ctx": "--ctx",
    "engine.n_threads": "--threads",
}


def run_main(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    try:
        code = main(list(args))
    except SystemExit as exc:
        code = int(exc.code or 0)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.mark.parametrize(
    ("flag", "value"),
    [
        ("--temperature", "-1"),
        ("--top-p", "2"),
        ("--min-p", "7"),
        ("--top-k", "-3"),
        ("--repeat-penalty", "-5"),
        ("--top-k-probs", "-1"),
        ("--top-k-probs", "11"),
        ("--ctx", "10"),
        ("--max-tokens", "0"),
        ("--temperature", "nan"),
        ("--temperature", "inf"),
        ("--seed", "-1"),
        ("--threads", "0"),
        ("--top-k", "many"),
    ],
)
def test_a_bad_flag_value_is_one_usage_line(
    capsys: pytest.CaptureFixture[str], flag: str, value: str
) -> None:
    code, out, err = run_main(capsys, "complete", "-m", "x.gguf", flag, value, "Hi")
    assert code == 2 and out == ""
    assert err.count("\n") == 1, err
    assert err.startswith(f"localbvi complete: error: argument {flag}: expected ")
    assert f"got {value}" in err or f"got '{value}'" in err
    assert err.endswith("(see 'localbvi complete --help')\n")


def test_compare_checks_its_flags_the_same_way(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_main(capsys, "compare", "--base", "a", "--temperature", "9", "Hi")
    assert code == 2
    assert err.startswith("localbvi compare: error: argument --temperature: expected a number")


@pytest.mark.parametrize("key", sorted(FLAGS))
def test_flags_and_the_settings_file_accept_the_same_values(
    key: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """One range per setting: the flag and the file agree at both edges."""
    allowed = setting_spec(key)
    table, name = key.split(".")
    flag = FLAGS[key]
    edges = [v for v in (allowed.lo, allowed.hi) if v is not None]
    outside = [v - 1 for v in edges if v == allowed.lo] + [v + 1 for v in edges if v == allowed.hi]
    settings = tmp_path / "settings.toml"
    monkeypatch.setenv("LOCALBVI_SETTINGS", str(settings))
    for value, ok in [*((v, True) for v in edges), *((v, False) for v in outside)]:
        text = str(int(value)) if allowed.integer else str(float(value))
        settings.write_text(f"[{table}]\n{name} = {text}\n", encoding="utf-8")
        problem = load_settings().problem
        assert (problem is None) is ok, (key, text, problem)
        code, _, err = run_main(capsys, "complete", "-m", "/no/such/model.gguf", flag, text, "Hi")
        # Accepted flags get as far as opening the (missing) model: exit 1, not 2.
        assert code == (1 if ok else 2), (flag, text, err)
        if not ok:
            assert problem is not None and allowed.span() in problem and allowed.span() in err


def test_settings_warnings_print_once_naming_the_file_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = tmp_path / "settings.toml"
    settings.write_text("[sampling]\ntemperature = -1\ntop_k = 'many'\n", encoding="utf-8")
    monkeypatch.setenv("LOCALBVI_SETTINGS", str(settings))
    code, _, err = run_main(capsys, "complete", "-m", "/no/such/model.gguf", "--no-save", "Hi")
    assert code == 1
    warnings = [line for line in err.splitlines() if line.startswith("localbvi: warning: ")]
    assert len(warnings) == len(set(warnings)) == 3, err  # two problems and the summary
    assert sum("'sampling.temperature' is -1" in w for w in warnings) == 1
    assert all(w.count(str(settings)) == 1 for w in warnings)
    assert err.splitlines()[-1].startswith("localbvi: error: ")


# -- a closed pipe -------------------------------------------------------------------------


def _many_sessions(count: int) -> None:
    """`count` sessions written in one transaction (as many as a long-time user has)."""
    SessionStore().close()
    conn = sqlite3.connect(default_db_path())
    with conn:
        conn.executemany(
            "INSERT INTO sessions (kind, model, mode, title, created_at, updated_at)"
            " VALUES ('chat', 'gemma-3-270m-it', 'chat', ?, ?, ?)",
            [(f"conversation number {i} " + "x" * 40, 1.7e9 + i, 1.7e9 + i) for i in range(count)],
        )
    conn.close()


@pytest.mark.parametrize(
    "command", ["sessions --limit 5000", "sessions --json --limit 5000", "--help", "complete -h"]
)
def test_a_reader_that_stops_early_is_a_quiet_exit_0(command: str) -> None:
    _many_sessions(3000)  # far more than a pipe buffer holds, so the writer meets EPIPE
    script = f"set -o pipefail; {sys.executable} -m localbvi {command} | head -1"
    proc = subprocess.run(
        ["bash", "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    assert len(proc.stdout.splitlines()) == 1


# -- text from a server --------------------------------------------------------------------

HOSTILE_TOKENS = [
    "Hello",
    "\x1b]0;pwned\x07",
    " \x1b[31mred\x1b[0m",
    "\x1b[2J",
    "\tend\n",
    "\x9b1m!",
]


class _Server(BaseHTTPRequestHandler):
    """An OpenAI-compatible server whose tokens carry terminal control sequences."""

    def log_message(self, *args: object) -> None:
        pass

    def _json(self, status: int, body: object) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        if self.path == "/v1/models":
            self._json(200, {"object": "list", "data": [{"id": "m", "object": "model"}]})
        else:
            self._json(404, {"error": {"message": "not found"}})

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.end_headers()
        for text in HOSTILE_TOKENS:
            chunk = {"choices": [{"index": 0, "text": text, "finish_reason": None}]}
            self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
        last = {"choices": [{"index": 0, "text": "", "finish_reason": "stop"}]}
        self.wfile.write(f"data: {json.dumps(last)}\n\ndata: [DONE]\n\n".encode())


@pytest.fixture
def hostile_server() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Server)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    finally:
        server.shutdown()
        server.server_close()


def test_tokens_with_terminal_controls_are_printed_inert(hostile_server: str) -> None:
    args = [sys.executable, "-m", "localbvi", "complete", "-m", hostile_server, "Say hi"]
    proc = subprocess.run(args, capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "Hello red\tend\n1m!\n"  # text kept, tabs and newlines too
    assert "\x1b" not in proc.stderr

    # JSON keeps the exact text (escaped by JSON, so still inert on a terminal).
    proc = subprocess.run(
        [*args[:-1], "--json", "--no-save", "Say hi"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "\x1b" not in proc.stdout and "\x9b" not in proc.stdout
    texts = [json.loads(line).get("text") for line in proc.stdout.splitlines()]
    assert "".join(t for t in texts if t) == "".join(HOSTILE_TOKENS)

    # The saved session keeps the text exactly; listing it shows it inert.
    proc = subprocess.run(
        [sys.executable, "-m", "localbvi", "sessions"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0 and "Say hi" in proc.stdout
    with SessionStore() as store:
        (summary,) = store.list()
        assert store.get(summary.id).messages[0].content == "".join(HOSTILE_TOKENS)
