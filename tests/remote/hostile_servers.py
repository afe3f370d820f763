"""Misbehaving OpenAI-compatible servers on 127.0.0.1, one behaviour each, for the remote tests.

`/v1/models` answers normally (so a model loads) unless `models=` names a behaviour; every
`POST` runs `completions`. Each behaviour is a bounded loop: it ends when the client hangs up
(`server.hung_up` is then set), when the server stops, or after `LIMIT_S` seconds.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

LIMIT_S = 30.0
DRIP_S = 0.5
"""Seconds between two bytes of a dripping server (the issue saw 5 s; the tests' timeouts are
scaled down the same way)."""

Behaviour = Callable[["HostileHandler"], None]

MODELS = json.dumps({"object": "list", "data": [{"id": "hostile", "object": "model"}]}).encode()


class HostileServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, completions: Behaviour, models: Behaviour | None) -> None:
        super().__init__(("127.0.0.1", 0), HostileHandler)
        self.completions = completions
        self.models = models
        self.stop = threading.Event()
        self.hung_up = threading.Event()
        self.requests: list[str] = []
        self.tokens_sent = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v1"

    def running(self, started: float) -> bool:
        return not self.stop.is_set() and time.monotonic() - started < LIMIT_S


class HostileHandler(BaseHTTPRequestHandler):
    server: HostileServer

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        self.server.requests.append(f"GET {self.path}")
        if self.path == "/v1/models":
            if self.server.models is not None:
                self._run(self.server.models)
                return
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(MODELS)))
            self.end_headers()
            self.wfile.write(MODELS)
            return
        self.send_error(404)

    def do_POST(self) -> None:
        self.server.requests.append(f"POST {self.path}")
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self._run(self.server.completions)

    def _run(self, behaviour: Behaviour) -> None:
        try:
            behaviour(self)
        except OSError:  # the client hung up: what a well-behaved client does here
            self.server.hung_up.set()

    # Pieces the behaviours are made of.

    def raw(self, data: bytes) -> None:
        self.wfile.write(data)
        self.wfile.flush()

    def sse_headers(self) -> None:
        self.raw(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n\r\n")

    def token(self, text: str = "ha") -> None:
        chunk = {"choices": [{"index": 0, "text": text, "finish_reason": None}]}
        self.raw(f"data: {json.dumps(chunk)}\n\n".encode())
        self.server.tokens_sent += 1

    def drip(self, data: bytes) -> None:
        """Send `data` one byte every DRIP_S seconds, again and again."""
        started = time.monotonic()
        while self.server.running(started):
            for byte in data:
                self.raw(bytes([byte]))
                if self.server.stop.wait(DRIP_S):
                    return


# --- behaviours ----------------------------------------------------------------------------


def endless_stream(h: HostileHandler) -> None:
    """Tokens as fast as the socket takes them, whatever max_tokens said."""
    h.sse_headers()
    started = time.monotonic()
    while h.server.running(started):
        h.token()


def drip_stream(h: HostileHandler) -> None:
    """Headers at once, then a `data:` line one byte at a time (each byte before any timeout)."""
    h.sse_headers()
    h.drip(b'data: {"choices": [{"index": 0, "text": "slow", "finish_reason": null}]}\n\n')


def tokens_then_drip(h: HostileHandler) -> None:
    """Three tokens, then pings one byte at a time: the reply stalls in the middle."""
    h.sse_headers()
    for _ in range(3):
        h.token()
    h.drip(b": ping\n")


def slow_headers(h: HostileHandler) -> None:
    """The status line, then header bytes one at a time: the answer never starts."""
    h.raw(b"HTTP/1.1 200 OK\r\n")
    h.drip(b"X-Padding: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n")


def silent(h: HostileHandler) -> None:
    """Reads the request and says nothing at all."""
    h.server.stop.wait(LIMIT_S)


BIG = b"x" * (1 << 20)


def huge_line(h: HostileHandler) -> None:
    """One `data:` line that never ends (up to 256 MiB)."""
    h.sse_headers()
    h.raw(b'data: {"choices": [{"text": "')
    started = time.monotonic()
    for _ in range(256):
        if not h.server.running(started):
            return
        h.raw(BIG)


def many_data_lines(h: HostileHandler) -> None:
    """`data:` lines of 512 KiB, never a blank line to end the event (up to 256 MiB)."""
    h.sse_headers()
    line = b"data: " + BIG[: 512 << 10] + b"\n"
    started = time.monotonic()
    for _ in range(512):
        if not h.server.running(started):
            return
        h.raw(line)


def huge_json(h: HostileHandler) -> None:
    """A 'JSON' body without a length that goes on for 256 MiB."""
    h.raw(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n")
    h.raw(b'{"object": "list", "data": [{"id": "')
    started = time.monotonic()
    for _ in range(256):
        if not h.server.running(started):
            return
        h.raw(BIG)


def huge_declared_json(h: HostileHandler) -> None:
    """A JSON body announced as 2 GiB."""
    h.raw(
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
        b"Content-Length: 2147483648\r\nConnection: close\r\n\r\n"
    )
    huge_json_tail(h)


def huge_json_tail(h: HostileHandler) -> None:
    started = time.monotonic()
    for _ in range(256):
        if not h.server.running(started):
            return
        h.raw(BIG)


def drip_json(h: HostileHandler) -> None:
    """Headers at once, then a model list one byte at a time."""
    h.raw(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n")
    h.drip(MODELS)


@contextmanager
def hostile_server(
    completions: Behaviour, models: Behaviour | None = None
) -> Iterator[HostileServer]:
    server = HostileServer(completions, models)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.stop.set()
        server.shutdown()
        server.server_close()
        thread.join(5)
