"""Small stand-in servers on 127.0.0.1 for the remote backend's tests.

- `LlamaServerFake` speaks llama.cpp's `llama-server` dialect (as its README documents it):
  SSE chunks with `logprobs.content[{id, token, logprob, top_logprobs}]`, a final chunk with
  `usage` and `timings`, `/props`, `/tokenize` with pieces, `/apply-template`. The real
  llama-server binary is not installable here; the real llama_cpp.server runs in other tests.
- `GarbageHTTPServer` answers every request with 200 and a page of nonsense.
- `NotHTTPServer` accepts a connection, writes junk bytes and hangs up.
- `keep_alive_tokenizer` answers llama_cpp.server's tokenizer endpoints over keep-alive
  connections and notes the client port of each request.
- `recording_proxy` is a forward HTTP proxy that notes each request passing through it.
"""

from __future__ import annotations

import http.client
import json
import socket
import ssl
import subprocess
import threading
import time
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

TEMPLATE = "{{ bos_token }}{% for m in messages %}<start_of_turn>{{ m.role }}\n{{ m.content }}"

PIECES = [(1000, "Hello", -0.1), (1001, " there", -0.5), (1002, "!", -1.0)]


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, *args: object) -> None:  # keep test output clean
        pass

    def _json(self, status: int, body: object) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _body(self) -> dict[str, Any]:
        length = int(self.headers.get("Content-Length") or 0)
        data = json.loads(self.rfile.read(length) or b"{}")
        self.server.requests.append((self.path, data, dict(self.headers)))
        return data  # type: ignore[no-any-return]


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, handler: type[BaseHTTPRequestHandler]) -> None:
        super().__init__(("127.0.0.1", 0), handler)
        self.requests: list[tuple[str, dict[str, Any], dict[str, str]]] = []
        self.overflow = False
        self.strict = False  # refuse fields the OpenAI API does not define, as OpenAI does
        self.stall = 0.0  # seconds of silence before the first token (a long prompt evaluation)
        self.api_key: str | None = None
        self.scheme = "http"

    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.server_address[1]}/v1"


class _LlamaServerHandler(_Handler):
    def _authorized(self) -> bool:
        key = self.server.api_key
        if key and self.headers.get("Authorization") != f"Bearer {key}":
            self._json(401, {"error": {"code": 401, "message": "Invalid API Key"}})
            return False
        return True

    def do_GET(self) -> None:
        if not self._authorized():
            return
        if self.path == "/v1/models":
            self._json(
                200,
                {
                    "object": "list",
                    "data": [
                        {"id": "gemma-big", "object": "model", "meta": {"n_ctx_train": 32768}},
                    ],
                },
            )
        elif self.path == "/props":
            self._json(
                200,
                {
                    "default_generation_settings": {"n_ctx": 8192},
                    "chat_template": TEMPLATE,
                    "bos_token": "<bos>",
                    "eos_token": "<eos>",
                },
            )
        else:
            self._json(404, {"error": {"code": 404, "message": "File Not Found"}})

    def do_POST(self) -> None:
        if not self._authorized():
            return
        body = self._body()
        if self.path == "/tokenize":
            pieces = [{"id": 2, "piece": "<bos>"}]
            if body.get("content", "").startswith("<bos>"):
                pieces.append({"id": 2, "piece": "<bos>"})  # llama-server doubles it
            pieces += [{"id": 9259, "piece": "Hello"}, {"id": 236743, "piece": [240, 159]}]
            self._json(200, {"tokens": pieces})
        elif self.path == "/apply-template":
            text = "".join(f"<start_of_turn>{m['role']}\n{m['content']}" for m in body["messages"])
            self._json(200, {"prompt": text})
        elif self.path in ("/v1/completions", "/v1/chat/completions"):
            extra = {"top_k", "min_p", "repeat_penalty", "n_probs"} & set(body)
            if self.server.strict and extra:
                message = f"Unrecognized request argument supplied: {sorted(extra)[0]}"
                self._json(400, {"error": {"message": message, "type": "invalid_request_error"}})
                return
            if self.server.overflow:
                self._json(
                    400,
                    {
                        "error": {
                            "code": 400,
                            "type": "exceed_context_size_error",
                            "message": "request exceeds the available context size",
                            "n_prompt_tokens": 9000,
                            "n_ctx": 8192,
                        }
                    },
                )
                return
            self._stream(chat=self.path.endswith("chat/completions"), body=body)
        else:
            self._json(404, {"error": {"code": 404, "message": "File Not Found"}})

    def _stream(self, chat: bool, body: dict[str, Any]) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.end_headers()
        probs = bool(body.get("logprobs"))
        if self.server.stall:
            self.wfile.flush()
            time.sleep(self.server.stall)

        def send(obj: object) -> None:
            self.wfile.write(f"data: {json.dumps(obj)}\n\n".encode())
            self.wfile.flush()

        if chat:
            send(
                {
                    "choices": [
                        {
                            "index": 0,
                            "delta": {"role": "assistant", "content": None},
                            "finish_reason": None,
                        }
                    ]
                }
            )
        for token_id, text, logprob in PIECES:
            logprobs = None
            if probs:
                logprobs = {
                    "content": [
                        {
                            "id": token_id,
                            "token": text,
                            "logprob": logprob,
                            "bytes": [],
                            "top_logprobs": [
                                {"id": 5, "token": " other", "logprob": -3.0, "bytes": []},
                                {"id": token_id, "token": text, "logprob": logprob, "bytes": []},
                            ],
                        }
                    ]
                }
            piece = {"delta": {"content": text}} if chat else {"text": text}
            send({"choices": [{"index": 0, **piece, "logprobs": logprobs, "finish_reason": None}]})
        final = {"delta": {}} if chat else {"text": ""}
        send(
            {
                "choices": [{"index": 0, **final, "logprobs": None, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10},
                "timings": {"prompt_n": 7, "predicted_n": 3, "predicted_per_second": 123.5},
            }
        )
        self.wfile.write(b"data: [DONE]\n\n")


class _GarbageHandler(_Handler):
    def _nonsense(self) -> None:
        data = b"<html><body>Welcome to my router! Nothing to see here.</body></html>"
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        self._nonsense()

    def do_POST(self) -> None:
        self._body()
        self._nonsense()


@contextmanager
def _serve(
    handler: type[BaseHTTPRequestHandler], tls: ssl.SSLContext | None = None
) -> Iterator[_Server]:
    server = _Server(handler)
    if tls is not None:
        server.socket = tls.wrap_socket(server.socket, server_side=True)
        server.scheme = "https"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def llama_server_fake(tls: ssl.SSLContext | None = None) -> Any:
    """The llama-server stand-in; with `tls` (a server context) it answers over https."""
    return _serve(_LlamaServerHandler, tls)


def self_signed(folder: Path) -> tuple[Path, ssl.SSLContext]:
    """A certificate for 127.0.0.1 that no trust store knows, and a server context using it."""
    cert, key = folder / "cert.pem", folder / "key.pem"
    command = "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes "
    command += "-days 1 -subj /CN=127.0.0.1 -addext subjectAltName=IP:127.0.0.1"
    subprocess.run(
        [*command.split(), "-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    return cert, context


def garbage_http_server() -> Any:
    return _serve(_GarbageHandler)


@contextmanager
def not_http_server() -> Iterator[str]:
    """A TCP port that answers any connection with junk bytes, then hangs up."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    stop = threading.Event()

    def run() -> None:
        sock.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = sock.accept()
            except OSError:
                continue
            with conn:
                conn.sendall(b"\x00\x01garbage\xff\xfe\r\n\r\n")

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}/v1"
    finally:
        stop.set()
        thread.join()
        sock.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class _KeepAliveTokenizerHandler(_Handler):
    """llama_cpp.server's tokenizer endpoints over HTTP/1.1 keep-alive, noting client ports."""

    protocol_version = "HTTP/1.1"

    def _note(self) -> None:
        self.server.ports.append(self.client_address[1])  # type: ignore[attr-defined]

    def do_GET(self) -> None:
        self._note()
        if self.path == "/v1/models":
            self._json(200, {"object": "list", "data": [{"id": "small", "object": "model"}]})
        else:
            self._json(404, {"detail": "Not Found"})

    def do_POST(self) -> None:
        self._note()
        body = self._body()
        if self.path == "/extras/tokenize":
            self._json(200, {"tokens": list(range(100, 100 + len(body["input"].split())))})
        elif self.path == "/extras/detokenize":
            self._json(200, {"text": f" w{body['tokens'][0]}"})
        else:
            self._json(404, {"detail": "Not Found"})


@contextmanager
def keep_alive_tokenizer() -> Iterator[_Server]:
    """A llama_cpp.server stand-in that keeps connections open; `.ports` lists who asked."""
    with _serve(_KeepAliveTokenizerHandler) as server:
        server.ports = []  # type: ignore[attr-defined]
        yield server


class _ProxyHandler(BaseHTTPRequestHandler):
    """A forward HTTP proxy: notes each request line, fetches the URL, relays the answer."""

    server: _Proxy

    def log_message(self, *args: object) -> None:
        pass

    def _relay(self) -> None:
        self.server.seen.append((self.command, self.path))
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        target = urllib.parse.urlsplit(self.path)  # a proxy gets the absolute URL
        headers = {k: v for k, v in self.headers.items() if k.lower() != "proxy-connection"}
        try:
            upstream = http.client.HTTPConnection(target.hostname or "", target.port, timeout=10)
            upstream.request(self.command, target.path, body=body or None, headers=headers)
            answer = upstream.getresponse()
            data = answer.read()
            upstream.close()
        except OSError as exc:
            self.send_error(502, f"cannot reach {self.path}: {exc}")
            return
        self.send_response(answer.status)
        self.send_header("Content-Type", answer.getheader("Content-Type", "text/plain"))
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = _relay
    do_POST = _relay


class _Proxy(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _ProxyHandler)
        self.seen: list[tuple[str, str]] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


@contextmanager
def recording_proxy() -> Iterator[_Proxy]:
    """An HTTP proxy on loopback; `.seen` holds (method, absolute URL) of what went through."""
    proxy = _Proxy()
    thread = threading.Thread(target=proxy.serve_forever, daemon=True)
    thread.start()
    try:
        yield proxy
    finally:
        proxy.shutdown()
        proxy.server_close()
