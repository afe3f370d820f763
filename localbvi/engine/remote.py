"""RemoteEngine: the `Engine` over an OpenAI-compatible HTTP server on a bigger machine.

Made for llama.cpp's `llama-server`, and works with llama-cpp-python's `llama_cpp.server` and
other OpenAI-compatible servers. Raw completion goes through `/v1/completions`, chat through
`/v1/chat/completions` (the server applies the chat template), both streamed as server-sent
events and turned into the same `TokenEvent`/`DoneEvent` values as the local engine.

HTTP goes through httpx2 (the maintained httpx that huggingface_hub uses), with one pooled
client per engine: `HTTPS_PROXY`/`HTTP_PROXY`/`NO_PROXY` and the system trust store are
honoured, and the many small requests of tokenizing reuse one connection. Its network backend
is wrapped (`_Watch`) for what httpx cannot do by itself: a deadline over a whole phase of a
request (headers, the first token, the next token), which a server sending one byte every few
seconds cannot stretch, and `cancel()` from any thread, which shuts the stream's socket down
and so ends a blocked read at once (even during a long prompt evaluation, when no token is
coming).

A server is untrusted input: lines, events and whole bodies are bounded in size, and
`max_tokens` is enforced on this side too (a stream that goes on past it is closed, finish
reason "length").

Errors: anything that stops a request before its first token raises `EngineError` (with what
to do); a failure after tokens arrived ends the stream with a `DoneEvent` whose finish reason
is "error", so the partial reply is kept.
"""

from __future__ import annotations

import collections
import contextlib
import json
import math
import re
import socket
import ssl
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Generator, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import httpcore2
import httpx2

from localbvi.engine.host import is_remote_ref
from localbvi.engine.types import (
    Alternative,
    DoneEvent,
    Event,
    FinishReason,
    LoadConfig,
    LoadInfo,
    Message,
    Rendered,
    Sampling,
    Token,
    TokenEvent,
)
from localbvi.errors import (
    ContextOverflowError,
    EngineError,
    ModelLoadError,
    RefError,
    printable,
    shorten,
)
from localbvi.inspector import format_size
from localbvi.settings import NetworkSettings

__all__ = [
    "MAX_BODY_BYTES",
    "MAX_EVENT_BYTES",
    "MAX_LINE_BYTES",
    "RemoteEngine",
    "is_remote_ref",
    "parse_remote_ref",
]

NO_TEMPLATE_MESSAGE = (
    "this server does not expose its chat template; the prompt is rendered on the server"
)
NO_TOKENIZE_MESSAGE = "this server does not expose its tokenizer: it offers no /tokenize endpoint"

MAX_LINE_BYTES = 1 << 20
"""Longest line of a stream; a token chunk with ten alternatives is a few hundred bytes."""
MAX_EVENT_BYTES = 1 << 20
"""Most data in one server-sent event (its `data:` lines together)."""
MAX_BODY_BYTES = 16 << 20
"""Largest whole answer (model list, props with a chat template, a long prompt's tokens)."""

_SPECIAL_PIECE = re.compile(r"^<(\|[^|<>\s]+\||[A-Za-z]+_[A-Za-z_]+|bos|eos|s|/s|unk|pad)>$")

Waiting = Literal["headers", "first token", "next token", "body"]
"""What a request was waiting for when it failed (chooses the timeout and the message)."""


def parse_remote_ref(ref: str) -> tuple[str, str | None]:
    """`http(s)://host:port[/v1][#MODEL]` → (base URL, model or None).

    A bare `http://host:port` gets `/v1`, where OpenAI-compatible servers answer.
    """
    shown = shorten(printable(ref), 120)
    url, _, model = ref.partition("#")
    not_a_server = RefError(
        f"'{shown}' is not a server address: write it like http://HOST:8080/v1 "
        "(optionally followed by #MODEL)"
    )
    if len(ref) > 4096:
        raise not_a_server
    try:
        parts = urllib.parse.urlsplit(url.strip())
        host = parts.hostname
        if host:
            host.encode("idna")
    except (ValueError, UnicodeError):  # "http://[::1", a label IDNA cannot encode
        raise not_a_server from None
    if parts.scheme not in ("http", "https") or not host:
        raise not_a_server
    try:
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number
    except ValueError:
        raise RefError(
            f"'{shown}' has a bad port number: write it like http://HOST:8080/v1"
        ) from None
    path = parts.path.rstrip("/") or "/v1"
    base = urllib.parse.urlunsplit((parts.scheme, parts.netloc, path, "", ""))
    return base, (model.strip() or None)


@dataclass(frozen=True)
class _Target:
    """Where requests go: the OpenAI base path (`/v1`) and the server root (llama.cpp extras)."""

    url: str
    scheme: str
    netloc: str
    host: str
    base_path: str
    root_path: str

    @classmethod
    def from_url(cls, url: str) -> _Target:
        base, _ = parse_remote_ref(url)
        parts = urllib.parse.urlsplit(base)
        assert parts.hostname is not None
        root = parts.path[: -len("/v1")] if parts.path.endswith("/v1") else parts.path
        return cls(base, parts.scheme, parts.netloc, parts.hostname, parts.path, root)

    def api(self, name: str) -> str:
        return f"{self.base_path}/{name}"

    def root(self, name: str) -> str:
        return f"{self.root_path}/{name}"

    def full(self, path: str) -> str:
        return f"{self.scheme}://{self.netloc}{path}"

    def proxy(self) -> str | None:
        """The proxy the environment names for this server (None: direct or bypassed)."""
        proxies = urllib.request.getproxies()  # what httpx reads too
        chosen = proxies.get(self.scheme) or proxies.get("all")
        if not chosen or urllib.request.proxy_bypass(self.host):
            return None
        return chosen


# --- deadlines and cancel, below httpx -------------------------------------------------------


@dataclass
class _Phase:
    deadline: float
    stream: bool


class _Watch:
    """Deadlines per thread, and the socket a generation is blocked on (for `cancel()`).

    httpx applies its read timeout to each read, so a server that drips a byte at a time never
    trips it. Every read and write of a connection goes through `_WatchedStream`, which caps its
    timeout by the deadline of the calling thread's current phase. A phase marked `stream`
    (a generation) also registers its socket so that another thread can shut it down.
    """

    def __init__(self, cancelled: threading.Event) -> None:
        self._cancelled = cancelled
        self._local = threading.local()
        self._lock = threading.Lock()
        self._active: socket.socket | None = None

    @contextlib.contextmanager
    def phase(self, deadline: float, *, stream: bool = False) -> Iterator[None]:
        """Within this block, this thread's network I/O ends by `deadline` (monotonic time)."""
        previous = getattr(self._local, "phase", None)
        self._local.phase = _Phase(deadline, stream)
        try:
            yield
        finally:
            self._local.phase = previous

    def io(
        self,
        call: Any,
        arg: Any,
        timeout: float | None,
        sock: socket.socket | None,
        timeout_error: type[Exception],
    ) -> Any:
        phase: _Phase | None = getattr(self._local, "phase", None)
        if phase is None:
            return call(arg, timeout)
        remaining = phase.deadline - time.monotonic()
        if remaining <= 0:
            raise timeout_error("the deadline passed")
        timeout = remaining if timeout is None else min(timeout, remaining)
        if not phase.stream or sock is None:
            return call(arg, timeout)
        with self._lock:
            if self._cancelled.is_set():
                raise httpcore2.ReadError("cancelled")
            self._active = sock
        try:
            return call(arg, timeout)
        finally:
            with self._lock:
                if self._active is sock:
                    self._active = None

    def cut(self) -> None:
        """Shut down the socket a generation is blocked on, if any (from any thread)."""
        with self._lock:
            sock = self._active
        if sock is not None:
            with contextlib.suppress(OSError):  # already closed
                sock.shutdown(socket.SHUT_RDWR)


class _WatchedStream(httpcore2.NetworkStream):
    def __init__(self, inner: httpcore2.NetworkStream, watch: _Watch) -> None:
        self._inner = inner
        self._watch = watch
        sock = inner.get_extra_info("socket")
        self._sock = sock if isinstance(sock, socket.socket) else None

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        data: bytes = self._watch.io(
            self._inner.read, max_bytes, timeout, self._sock, httpcore2.ReadTimeout
        )
        return data

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._watch.io(self._inner.write, buffer, timeout, self._sock, httpcore2.WriteTimeout)

    def close(self) -> None:
        self._inner.close()

    def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore2.NetworkStream:
        inner = self._inner.start_tls(ssl_context, server_hostname, timeout)
        return _WatchedStream(inner, self._watch)

    def get_extra_info(self, info: str) -> Any:
        return self._inner.get_extra_info(info)


class _WatchedBackend(httpcore2.NetworkBackend):
    def __init__(self, inner: httpcore2.NetworkBackend, watch: _Watch) -> None:
        self._inner = inner
        self._watch = watch

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore2.NetworkStream:
        stream = self._inner.connect_tcp(host, port, timeout, local_address, socket_options)
        return _WatchedStream(stream, self._watch)

    def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore2.NetworkStream:
        stream = self._inner.connect_unix_socket(path, timeout, socket_options)
        return _WatchedStream(stream, self._watch)

    def sleep(self, seconds: float) -> None:
        self._inner.sleep(seconds)


def _make_client(network: NetworkSettings, watch: _Watch) -> httpx2.Client:
    """One pooled client: proxies from the environment, the system trust store, our deadlines."""
    slowest = max(network.first_byte_timeout, network.read_timeout)
    client = httpx2.Client(
        trust_env=True,
        timeout=httpx2.Timeout(
            connect=network.connect_timeout,
            read=slowest,
            write=slowest,
            pool=network.connect_timeout,
        ),
        limits=httpx2.Limits(max_connections=8, max_keepalive_connections=4),
    )
    # httpx takes no network backend, but each transport's httpcore pool does; the pools are
    # httpx's (a direct one, and one per proxy from the environment), so wrap them in place.
    transports = [client._transport, *client._mounts.values()]
    for transport in transports:
        pool = getattr(transport, "_pool", None)
        backend = getattr(pool, "_network_backend", None)
        if isinstance(backend, httpcore2.NetworkBackend):
            pool._network_backend = _WatchedBackend(backend, watch)  # type: ignore[union-attr]
    return client


def _clean(value: object, limit: int = 120) -> str:
    """Text from a server or an exception, safe to print on one line of a terminal."""
    return shorten(" ".join(printable(str(value)).split()), limit)


def _root_cause(exc: BaseException) -> BaseException:
    """The innermost exception httpx and httpcore wrapped (an OSError, an SSL error…)."""
    seen = {id(exc)}
    while (inner := exc.__cause__ or exc.__context__) is not None and id(inner) not in seen:
        seen.add(id(inner))
        exc = inner
    return exc


class _HTTPStatusError(EngineError):
    """A non-2xx answer, kept with its status so callers can decide to retry or fall back."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


class _TooBig(Exception):
    """A line, an event or a body over its bound (the message says which)."""


def _error_text(body: bytes) -> str:
    """The server's own error message out of an error body, cleaned for a terminal."""
    return _clean(_raw_error_text(body), 300)


def _raw_error_text(body: bytes) -> str:
    """The server's own error message out of a JSON error body (several dialects)."""
    try:
        data = json.loads(body)
    except ValueError:
        return " ".join(body.decode("utf-8", "replace").split())[:300]
    if isinstance(data, dict):
        err = data.get("error", data.get("detail", data.get("message")))
        if isinstance(err, dict):
            err = err.get("message", err)
        if isinstance(err, list):  # FastAPI validation errors
            err = "; ".join(str(e.get("msg", e)) if isinstance(e, dict) else str(e) for e in err)
        if err is not None:
            return str(err)[:300]
    return json.dumps(data)[:300]


def _overflow(body: bytes) -> ContextOverflowError | None:
    """The server said the prompt does not fit (llama-server and llama_cpp.server wordings)."""
    try:
        data = json.loads(body)
    except ValueError:
        data = None
    err = data.get("error") if isinstance(data, dict) else None
    if isinstance(err, dict) and "n_prompt_tokens" in err and "n_ctx" in err:
        return ContextOverflowError(int(err["n_prompt_tokens"]), int(err["n_ctx"]))
    m = re.search(
        r"Requested tokens \((\d+)\) exceed context window of (\d+)",
        body.decode("utf-8", "replace"),
    )
    if m:
        return ContextOverflowError(int(m.group(1)), int(m.group(2)))
    return None


def _alternatives(entry: Mapping[str, Any], limit: int) -> tuple[Alternative, ...]:
    """Top candidates of one token from an OpenAI/llama-server `logprobs.content` item."""
    tops = entry.get("top_logprobs") or entry.get("top_probs") or []
    out: list[Alternative] = []
    if isinstance(tops, dict):  # the legacy completions format: {token: logprob}
        tops = [{"token": k, "logprob": v} for k, v in tops.items()]
    for t in tops if isinstance(tops, list) else []:
        if not isinstance(t, dict):
            continue
        if isinstance(t.get("prob"), int | float):
            prob = float(t["prob"])
        elif isinstance(t.get("logprob"), int | float):
            prob = math.exp(t["logprob"])
        else:
            continue
        token_id = t.get("id")
        out.append(
            Alternative(
                text=str(t.get("token", "")),
                id=token_id if isinstance(token_id, int) else -1,
                prob=prob,
            )
        )
    out.sort(key=lambda a: a.prob, reverse=True)
    return tuple(out[:limit])


def _logprob_tokens(logprobs: object, limit: int) -> list[tuple[str, int, tuple[Alternative, ...]]]:
    """(text, id, alternatives) per token from a chunk's `logprobs`, in either format."""
    if not isinstance(logprobs, dict):
        return []
    content = logprobs.get("content")
    if isinstance(content, list):
        out = []
        for item in content:
            if isinstance(item, dict):
                token_id = item.get("id")
                out.append(
                    (
                        str(item.get("token", "")),
                        token_id if isinstance(token_id, int) else -1,
                        _alternatives(item, limit),
                    )
                )
        return out
    tokens, tops = logprobs.get("tokens"), logprobs.get("top_logprobs")
    if isinstance(tokens, list):
        tops_list = tops if isinstance(tops, list) else []
        return [
            (
                str(tok),
                -1,
                _alternatives({"top_logprobs": tops_list[i]}, limit)
                if i < len(tops_list) and isinstance(tops_list[i], dict)
                else (),
            )
            for i, tok in enumerate(tokens)
        ]
    return []


class _StreamState:
    """What the stream has told us so far, for the final DoneEvent."""

    def __init__(self, start: float) -> None:
        self.start = start
        self.first: float | None = None
        self.last: float | None = None
        self.count = 0
        self.finish: str | None = None
        self.overrun = False  # the server went on past max_tokens
        self.usage: dict[str, Any] = {}
        self.timings: dict[str, Any] = {}

    def token(self) -> None:
        now = time.monotonic()
        if self.first is None:
            self.first = now
        self.last = now
        self.count += 1

    def done(self, reason: FinishReason, detail: str, error: str = "") -> DoneEvent:
        tokens = _int(self.usage.get("completion_tokens")) or _int(self.timings.get("predicted_n"))
        prompt = _int(self.usage.get("prompt_tokens")) or _int(self.timings.get("prompt_n"))
        rate = self.timings.get("predicted_per_second")
        if not isinstance(rate, int | float) or reason == "cancelled" or self.overrun:
            rate = 0.0
            if self.first is not None and self.last is not None and self.count > 1:
                rate = (self.count - 1) / max(self.last - self.first, 1e-9)
        counted = reason == "cancelled" or self.overrun
        return DoneEvent(
            finish_reason=reason,
            prompt_tokens=prompt or 0,
            tokens=self.count if counted else (tokens or self.count),
            ttft_s=(self.first - self.start) if self.first is not None else 0.0,
            tokens_per_s=float(rate),
            stop_detail=detail,
            error=error,
        )


def _int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


class _Lines:
    """Lines of a streamed body, each at most `MAX_LINE_BYTES`, read under a deadline."""

    def __init__(self, chunks: Iterator[bytes], watch: _Watch) -> None:
        self._chunks = chunks
        self._watch = watch
        self._buffer = bytearray()
        self._scanned = 0  # bytes of the buffer known to hold no newline
        self._ended = False

    def readline(self, deadline: float) -> bytes | None:
        """The next line without its end, or None at the end of the body."""
        while True:
            end = self._buffer.find(b"\n", self._scanned)
            if end >= 0:
                line = bytes(self._buffer[:end])
                del self._buffer[: end + 1]
                self._scanned = 0
                return line
            self._scanned = len(self._buffer)
            if len(self._buffer) > MAX_LINE_BYTES:
                raise _TooBig(f"a line longer than {format_size(MAX_LINE_BYTES)}")
            if self._ended:
                if not self._buffer:
                    return None
                line = bytes(self._buffer)
                self._buffer.clear()
                return line
            with self._watch.phase(deadline, stream=True):
                chunk = next(self._chunks, None)
            if chunk is None:
                self._ended = True
            else:
                self._buffer += chunk


class RemoteEngine:
    """The `Engine` for a model served over HTTP (see engine/base.py for the contract).

    `base_url` is the server's OpenAI-compatible address (`http://HOST:PORT/v1`); `load(ref)`
    may point the engine elsewhere. The server owns the model: `LoadConfig` fields (context
    size, threads, GPU layers) are the server's command-line options, not ours. `network`
    holds the timeouts (the settings file's `[network]` table).
    """

    def __init__(
        self,
        base_url: str,
        model: str | None = None,
        api_key: str | None = None,
        *,
        network: NetworkSettings | None = None,
    ) -> None:
        self._target = _Target.from_url(base_url)
        self._model = model
        self._api_key = api_key
        self._net = network or NetworkSettings()
        self._info: LoadInfo | None = None
        self._seed = -1
        self._busy = threading.Lock()
        self._cancel = threading.Event()
        self._watch = _Watch(self._cancel)
        self._client_lock = threading.Lock()
        self._http: httpx2.Client | None = None
        self._logs: collections.deque[str] = collections.deque(maxlen=1000)
        # Learned from the server as we go (None: not asked yet).
        self._minimal: bool = False  # it rejected llama.cpp's sampling fields or logprobs
        self._has_template_endpoint: bool | None = None
        self._tokenizer: Literal["llama-server", "llama-cpp-python", "none"] | None = None
        self._bos_text = ""
        self._eos_text = ""

    # --- plumbing ------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        return self._target.url

    @property
    def model(self) -> str | None:
        return self._model

    def _client(self) -> httpx2.Client:
        """The pooled client, made on first use (and again after `close()`)."""
        with self._client_lock:
            if self._http is None:
                self._http = _make_client(self._net, self._watch)
            return self._http

    def _log(self, line: str) -> None:
        self._logs.append(f"{time.strftime('%H:%M:%S')} {line}")

    def _headers(self, body: bool) -> dict[str, str]:
        headers = {"Accept": "application/json, text/event-stream", "User-Agent": "localbvi"}
        if body:
            headers["Content-Type"] = "application/json"
        if self._api_key:
            headers["Authorization"] = f"Bearer {self._api_key}"
        return headers

    def _network_error(
        self, exc: BaseException, path: str, waiting: Waiting = "headers"
    ) -> EngineError:
        url, net = self._target.url, self._net
        root = _root_cause(exc)
        proxy = self._target.proxy()
        if isinstance(exc, httpx2.ConnectTimeout):
            where = f"through the proxy {proxy} " if proxy else ""
            return EngineError(
                f"the server at {url} did not accept a connection {where}within "
                f"{net.connect_timeout:g} s: check that it is running and reachable "
                "(network.connect_timeout in settings sets the wait)"
            )
        if isinstance(exc, httpx2.TimeoutException):
            return EngineError(self._timeout_message(path, waiting))
        if isinstance(exc, httpx2.ProxyError) or (proxy and isinstance(exc, httpx2.ConnectError)):
            return EngineError(
                f"the proxy {proxy} did not get through to {url} ({_clean(root)}): "
                "check HTTPS_PROXY/HTTP_PROXY, or list the host in NO_PROXY to go direct"
            )
        if isinstance(root, ConnectionRefusedError):
            return EngineError(
                f"no server answers at {url}: start llama-server there or check the address"
            )
        if isinstance(root, socket.gaierror):
            return EngineError(
                f"cannot find the host {self._target.host!r} of {url}: check the address"
            )
        if isinstance(root, ssl.SSLCertVerificationError):
            return EngineError(
                f"the server at {url} has a certificate this computer does not trust "
                f"({root.verify_message or root.reason}): add its certificate authority to "
                "the system's trust store, or set SSL_CERT_FILE to a file that holds it"
            )
        if isinstance(root, ssl.SSLError):
            return EngineError(
                f"a secure connection to {url} failed ({root.reason or root}): check the "
                "address (http:// or https://?)"
            )
        if waiting == "headers" and isinstance(
            exc, httpx2.RemoteProtocolError | httpx2.ReadError | httpx2.WriteError
        ):
            return EngineError(
                f"{url} did not answer {path} like an HTTP server ({type(exc).__name__}): "
                "check the address and port (llama-server listens on 8080 by default)"
            )
        if isinstance(exc, httpx2.DecodingError):
            return EngineError(
                f"the server at {url} sent an answer to {path} that cannot be decoded "
                f"({_clean(exc)}): is it an OpenAI-compatible server? Check the address"
            )
        if isinstance(exc, httpx2.TransportError):
            return EngineError(
                f"the connection to {url} broke ({_clean(root)}): check that the "
                "server is still running and the network is up"
            )
        return EngineError(f"the connection to {url} failed ({_clean(exc)}): check the address")

    def _timeout_message(self, path: str, waiting: Waiting) -> str:
        url, net = self._target.url, self._net
        if waiting == "headers":
            return (
                f"the server at {url} did not start answering {path} within "
                f"{net.first_byte_timeout:g} s: it may be overloaded or still loading its "
                "model; try again, or raise network.first_byte_timeout in settings"
            )
        if waiting == "first token":
            return (
                f"the server at {url} sent no token within {net.first_byte_timeout:g} s: it "
                "may be busy or evaluating a very long prompt; try again, or raise "
                "network.first_byte_timeout in settings"
            )
        if waiting == "next token":
            return (
                f"the server at {url} sent no token for {net.read_timeout:g} s in the middle "
                "of its reply: check that it is still running, or raise network.read_timeout "
                "in settings if it is just slow"
            )
        return (
            f"the server at {url} did not finish its answer to {path} within "
            f"{net.read_timeout:g} s: check that it is still running, or raise "
            "network.read_timeout in settings if it is just slow"
        )

    def _too_big(self, what: str, path: str) -> EngineError:
        return EngineError(
            f"the server at {self._target.url} sent {what} in its answer to {path}; localbvi "
            "stopped reading: is it an OpenAI-compatible server? Check the address"
        )

    def _status_error(self, status: int, body: bytes, path: str) -> EngineError:
        url, text = self._target.url, _error_text(body)
        if status in (401, 403):
            return _HTTPStatusError(
                f"the server at {url} refused the request (HTTP {status}: {text}): give it the "
                "right API key (api_key_env of this [[remote]] in settings)",
                status,
            )
        if status == 404:
            return _HTTPStatusError(
                f"the server at {url} has no {path} (HTTP 404): is it an OpenAI-compatible "
                "server? llama-server answers at http://HOST:PORT/v1",
                status,
            )
        if status == 407:
            return _HTTPStatusError(
                f"the proxy {self._target.proxy() or ''} wants a login (HTTP 407) to reach "
                f"{url}: put the user and password in the proxy URL "
                "(http://USER:PASS@PROXY:PORT), or list the host in NO_PROXY",
                status,
            )
        if status == 503:
            return _HTTPStatusError(
                f"the server at {url} is not ready (HTTP 503: {text}): it may still be loading "
                "its model; try again in a moment",
                status,
            )
        if overflow := _overflow(body):
            return overflow
        return _HTTPStatusError(
            f"the server at {url} refused {path} (HTTP {status}: {text})", status
        )

    def _send(
        self, method: str, path: str, payload: object | None, *, stream: bool = False
    ) -> httpx2.Response:
        """Send a request and wait for the answer's headers (at most `first_byte_timeout`).

        The body is left unread. A stream's socket is registered so that cancel() can cut it.
        """
        body = json.dumps(payload).encode() if payload is not None else None
        client = self._client()
        started = time.monotonic()
        try:
            request = client.build_request(
                method, self._target.full(path), content=body, headers=self._headers(bool(body))
            )
            with self._watch.phase(started + self._net.first_byte_timeout, stream=stream):
                resp = client.send(request, stream=True)
        except (httpx2.HTTPError, httpx2.InvalidURL, OSError) as exc:
            if stream and self._cancel.is_set():
                raise _Cancelled from None
            self._log(f"{method} {path} failed: {exc!r}")
            raise self._network_error(exc, path) from None
        self._log(f"{method} {path} → {resp.status_code} ({time.monotonic() - started:.2f} s)")
        return resp

    def _read_body(self, resp: httpx2.Response, path: str, *, stream: bool = False) -> bytes:
        """A whole body, at most `MAX_BODY_BYTES`, within `read_timeout` (raises EngineError)."""
        declared = resp.headers.get("Content-Length", "")
        if declared.isdigit() and int(declared) > MAX_BODY_BYTES:
            raise self._too_big(f"more than {format_size(MAX_BODY_BYTES)}", path)
        deadline = time.monotonic() + self._net.read_timeout
        chunks: list[bytes] = []
        size = 0
        pieces = resp.iter_bytes()
        try:
            while True:
                with self._watch.phase(deadline, stream=stream):
                    chunk = next(pieces, None)
                if chunk is None:
                    return b"".join(chunks)
                size += len(chunk)
                if size > MAX_BODY_BYTES:
                    raise self._too_big(f"more than {format_size(MAX_BODY_BYTES)}", path)
                chunks.append(chunk)
        except (httpx2.HTTPError, OSError) as exc:
            if stream and self._cancel.is_set():
                raise _Cancelled from None
            raise self._network_error(exc, path, "body") from None

    def _request_json(self, method: str, path: str, payload: object | None = None) -> Any:
        """One whole request/response; a non-2xx status or a non-JSON body raises."""
        resp = self._send(method, path, payload)
        try:
            body = self._read_body(resp, path)
        finally:
            resp.close()
        if not 200 <= resp.status_code < 300:
            raise self._status_error(resp.status_code, body, path)
        try:
            return json.loads(body)
        except ValueError:
            raise EngineError(
                f"the server at {self._target.url} answered {path} with something that is not "
                f"JSON ({_error_text(body)[:80]!r}): is it an OpenAI-compatible server? Check "
                "the address and port"
            ) from None

    # --- loading -------------------------------------------------------------------------

    @property
    def info(self) -> LoadInfo | None:
        return self._info

    def load(self, path: str, config: LoadConfig | None = None) -> LoadInfo:
        """Point at `path` (`http(s)://host:port/v1[#MODEL]`) and check the server answers."""
        config = config or LoadConfig()
        base, model = parse_remote_ref(str(path))
        target, model = _Target.from_url(base), model or self._model
        previous = (self._target, self._model)
        self._target, self._model = target, model
        started = time.monotonic()
        try:
            listing = self._request_json("GET", target.api("models"))
            models = self._model_ids(listing)
        except EngineError as exc:
            self._target, self._model = previous
            raise ModelLoadError(str(exc)) from None
        if model is None and models:
            model = models[0][0]
        elif model is not None and models and model not in {m for m, _ in models}:
            self._target, self._model = previous
            offered = ", ".join(m for m, _ in models)
            raise ModelLoadError(
                f"the server at {target.url} has no model {model!r}; it offers: {offered}. "
                f"Use {target.url}#NAME with one of those"
            )
        self._model = model
        meta = next((m for name, m in models if name == model), {})
        props = self._props()
        settings = props.get("default_generation_settings")
        n_ctx = _int(props.get("n_ctx")) or (
            _int(settings.get("n_ctx")) if isinstance(settings, dict) else None
        )
        template = props.get("chat_template")
        template = template if isinstance(template, str) and template else None
        self._bos_text = str(props.get("bos_token") or "")
        self._eos_text = str(props.get("eos_token") or "")
        self._has_template_endpoint = None
        self._tokenizer = None
        self._seed = config.seed
        self._info = LoadInfo(
            path=f"{target.url}#{model}" if model else target.url,
            load_s=time.monotonic() - started,
            n_ctx=n_ctx or 0,
            n_ctx_train=_int(meta.get("n_ctx_train")) or 0,
            n_threads=0,
            n_layers=0,
            gpu_offload_supported=False,
            n_gpu_layers=0,
            chat_template=template,
            template_source="gguf" if template else None,
            bos_token=self._bos_text,
            eos_token=self._eos_text,
            model_name=model or "",
            remote=True,
        )
        self._log(
            f"connected to {target.url}, model {model or '(the server default)'}, "
            f"n_ctx {n_ctx or 'not reported'}; context, threads and GPU layers are the server's"
        )
        return self._info

    def _model_ids(self, listing: object) -> list[tuple[str, dict[str, Any]]]:
        """(id, meta) of each model in a `/v1/models` answer; anything else is garbage."""
        data = listing.get("data") if isinstance(listing, dict) else None
        if not isinstance(data, list):
            raise EngineError(
                f"the server at {self._target.url} answered /models with something that is "
                "not an OpenAI model list: is it an OpenAI-compatible server? Check the address"
            )
        out = []
        for item in data:
            if isinstance(item, dict) and isinstance(item.get("id"), str):
                meta = item.get("meta")
                out.append((item["id"], meta if isinstance(meta, dict) else {}))
        return out

    def _props(self) -> dict[str, Any]:
        """llama-server's `/props` (context size, chat template, special tokens), if offered."""
        try:
            props = self._request_json("GET", self._target.root("props"))
        except EngineError:
            return {}
        return props if isinstance(props, dict) else {}

    def unload(self) -> None:
        """Forget the server (nothing to free on this side)."""
        self.cancel()
        self._info = None

    def close(self) -> None:
        """Forget the server and close the pooled connections (a later load opens new ones)."""
        self.unload()
        with self._client_lock:
            client, self._http = self._http, None
        if client is not None:
            client.close()

    # --- generation ----------------------------------------------------------------------

    def complete(
        self, prompt: str | Sequence[int], sampling: Sampling | None = None
    ) -> Iterator[Event]:
        """Raw completion through `/v1/completions`: the text goes to the model as is."""
        sampling = sampling or Sampling()
        payload: dict[str, Any] = {
            "prompt": prompt if isinstance(prompt, str) else list(prompt),
        }
        return self._stream("completions", payload, sampling)

    def chat(
        self, messages: Sequence[Message], sampling: Sampling | None = None
    ) -> Iterator[Event]:
        """Chat through `/v1/chat/completions`: the server renders its chat template."""
        sampling = sampling or Sampling()
        payload: dict[str, Any] = {
            "messages": [{"role": m.role, "content": m.content} for m in messages],
        }
        return self._stream("chat/completions", payload, sampling)

    def _payload(
        self, endpoint: str, base: dict[str, Any], s: Sampling, minimal: bool
    ) -> dict[str, Any]:
        payload = dict(base)
        if self._model:
            payload["model"] = self._model
        payload.update(stream=True, temperature=s.temperature, top_p=s.top_p)
        payload["max_tokens"] = s.max_tokens
        if s.stop:
            payload["stop"] = list(s.stop)
        seed = s.seed if s.seed is not None else (self._seed if self._seed >= 0 else None)
        if seed is not None:
            payload["seed"] = seed
        if minimal:
            return payload
        # llama.cpp's own sampling fields (llama-server and llama_cpp.server read them).
        payload.update(top_k=s.top_k, min_p=s.min_p, repeat_penalty=s.repeat_penalty)
        payload["stream_options"] = {"include_usage": True}
        if s.top_probs > 0:
            if endpoint == "completions":
                payload["logprobs"] = s.top_probs
            else:
                payload["logprobs"] = True
                payload["top_logprobs"] = s.top_probs
            payload["n_probs"] = s.top_probs
        return payload

    def _start(self, endpoint: str, base: dict[str, Any], sampling: Sampling) -> httpx2.Response:
        """Open the stream; once, fall back to plain OpenAI fields if the server balks."""
        path = self._target.api(endpoint)
        while True:
            minimal = self._minimal
            payload = self._payload(endpoint, base, sampling, minimal)
            resp = self._send("POST", path, payload, stream=True)
            if 200 <= resp.status_code < 300:
                return resp
            try:
                body = self._read_body(resp, path, stream=True)
            except EngineError:
                body = b""
            finally:
                resp.close()
            error = self._status_error(resp.status_code, body, path)
            retry = (
                not minimal
                and resp.status_code in (400, 422, 500)
                and not isinstance(error, ContextOverflowError)
            )
            if not retry:
                raise error
            self._log(
                f"the server refused llama.cpp sampling fields or token probabilities "
                f"({error}); sending plain OpenAI fields from now on"
            )
            self._minimal = True

    def _stream(self, endpoint: str, base: dict[str, Any], sampling: Sampling) -> Iterator[Event]:
        if not self._busy.acquire(blocking=False):
            raise EngineError("the model is already generating: wait or cancel it first")
        self._cancel.clear()
        resp: httpx2.Response | None = None
        state = _StreamState(time.monotonic())
        try:
            try:
                resp = self._start(endpoint, base, sampling)
            except _Cancelled:
                yield state.done("cancelled", "cancelled")
                return
            content_type = resp.headers.get("Content-Type", "")
            if "text/event-stream" not in content_type:
                yield from self._whole_answer(resp, endpoint, state, sampling)
                return
            yield from self._read_events(resp, endpoint, state, sampling)
        finally:
            if resp is not None:
                resp.close()  # an unfinished stream's connection is dropped, not reused
            self._busy.release()

    def _garbage(self, what: str) -> EngineError:
        return EngineError(
            f"the server at {self._target.url} streamed something that is not an OpenAI "
            f"answer ({_clean(what, 80)!r}): is it an OpenAI-compatible server? "
            "Check the address"
        )

    def _whole_answer(
        self,
        resp: httpx2.Response,
        endpoint: str,
        state: _StreamState,
        sampling: Sampling,
    ) -> Iterator[Event]:
        """A server that ignored `stream: true` and sent one JSON answer: emit it as one piece."""
        try:
            body = self._read_body(resp, self._target.api(endpoint), stream=True)
        except _Cancelled:
            yield state.done("cancelled", "cancelled")
            return
        try:
            chunk = json.loads(body)
        except ValueError:
            raise self._garbage(body.decode("utf-8", "replace")) from None
        if not isinstance(chunk, dict) or not isinstance(chunk.get("choices"), list):
            raise self._garbage(body.decode("utf-8", "replace"))
        for choice in chunk["choices"][:1]:
            if isinstance(choice, dict) and "message" in choice and "delta" not in choice:
                choice["delta"] = choice["message"]
        yield from self._chunk_events(chunk, state, sampling)
        if state.overrun:
            yield self._cut_off(state)
            return
        yield self._finish(state, endpoint)

    def _deadline(self, state: _StreamState) -> float:
        """The first token must come within first_byte_timeout, each next within read_timeout.

        Only tokens move it: pings, empty events and stray fields cannot keep a stream alive.
        """
        if state.last is None:
            return state.start + self._net.first_byte_timeout
        return state.last + self._net.read_timeout

    def _cut_off(self, state: _StreamState) -> DoneEvent:
        self._log(f"the server went on past max_tokens ({state.count}); stopped reading")
        return state.done("length", "max tokens")

    def _read_events(
        self,
        resp: httpx2.Response,
        endpoint: str,
        state: _StreamState,
        sampling: Sampling,
    ) -> Iterator[Event]:
        path = self._target.api(endpoint)
        lines = _Lines(resp.iter_bytes(), self._watch)
        data_lines: list[str] = []
        data_size = 0
        while True:
            if self._cancel.is_set():
                yield state.done("cancelled", "cancelled")
                return
            try:
                raw = lines.readline(self._deadline(state))
            except _TooBig as exc:
                error = self._too_big(str(exc), path)
                if state.count == 0:
                    raise error from None
                yield state.done("error", "error", str(error))
                return
            except (httpx2.HTTPError, OSError) as exc:
                if self._cancel.is_set():
                    yield state.done("cancelled", "cancelled")
                    return
                waiting: Waiting = "first token" if state.count == 0 else "next token"
                error = self._network_error(exc, path, waiting)
                self._log(f"the stream of {path} failed: {exc!r}")
                if state.count == 0:
                    raise error from None
                yield state.done("error", "error", f"the stream broke: {error}")
                return
            if raw is None:  # end of stream
                if self._cancel.is_set():
                    yield state.done("cancelled", "cancelled")
                    return
                if data_lines:
                    result = yield from self._dispatch("\n".join(data_lines), state, sampling)
                    if state.overrun:
                        yield self._cut_off(state)
                        return
                    if result == "end":
                        break
                if state.finish is None:
                    message = (
                        f"the server at {self._target.url} closed the stream before the reply "
                        "was finished"
                    )
                    if state.count == 0:
                        raise EngineError(
                            message + ": it failed on its side (with llama_cpp.server often a "
                            "prompt longer than its context); check the server's log"
                        )
                    yield state.done("error", "error", message)
                    return
                break
            line = raw.decode("utf-8", "replace").rstrip("\r")
            if line == "":
                if data_lines:
                    result = yield from self._dispatch("\n".join(data_lines), state, sampling)
                    data_lines, data_size = [], 0
                    if state.overrun:
                        yield self._cut_off(state)
                        return
                    if result == "end":
                        break
                continue
            if line.startswith(":"):
                continue  # an SSE comment (keep-alive ping)
            field, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if field == "data":
                data_size += len(value) + 1
                if data_size > MAX_EVENT_BYTES:
                    error = self._too_big(
                        f"an event larger than {format_size(MAX_EVENT_BYTES)}", path
                    )
                    if state.count == 0:
                        raise error
                    yield state.done("error", "error", str(error))
                    return
                data_lines.append(value)
            elif field == "error":  # llama-server reports failures mid-stream this way
                message = f"the server failed: {_error_text(value.encode())}"
                if state.count == 0:
                    raise EngineError(message)
                yield state.done("error", "error", message)
                return
            elif field not in ("event", "id", "retry") and state.count == 0 and not state.finish:
                raise self._garbage(line)
        yield self._finish(state, endpoint)

    def _dispatch(
        self, data: str, state: _StreamState, sampling: Sampling
    ) -> Generator[Event, None, str | None]:
        """Handle one SSE event's data; returns "end" after `[DONE]`."""
        if data.strip() == "[DONE]":
            return "end"
        try:
            chunk = json.loads(data)
        except ValueError:
            raise self._garbage(data) from None
        if not isinstance(chunk, dict):
            raise self._garbage(data)
        if "error" in chunk and not chunk.get("choices"):
            raise EngineError(f"the server failed: {_error_text(data.encode())}")
        yield from self._chunk_events(chunk, state, sampling)
        return None

    def _chunk_events(
        self, chunk: dict[str, Any], state: _StreamState, sampling: Sampling
    ) -> Iterator[Event]:
        if isinstance(chunk.get("usage"), dict):
            state.usage = chunk["usage"]
        if isinstance(chunk.get("timings"), dict):
            state.timings = chunk["timings"]
        choices = chunk.get("choices")
        if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
            return
        choice = choices[0]
        if "delta" in choice:
            delta = choice.get("delta")
            text = delta.get("content") if isinstance(delta, dict) else None
        else:
            text = choice.get("text")
        text = text if isinstance(text, str) else ""
        limit = sampling.max_tokens if sampling.max_tokens > 0 else None
        if text:
            top = sampling.top_probs
            pieces = _logprob_tokens(choice.get("logprobs"), top) if top > 0 else []
            if not (pieces and "".join(p[0] for p in pieces) == text):
                token_id = pieces[0][1] if len(pieces) == 1 else -1
                alternatives = pieces[0][2] if len(pieces) == 1 else ()
                pieces = [(text, token_id, alternatives)]
            for piece, token_id, alternatives in pieces:
                if limit is not None and state.count >= limit:
                    state.overrun = True  # the server ignores max_tokens: stop here
                    return
                state.token()
                yield TokenEvent(text=piece, id=token_id, alternatives=alternatives)
        finish = choice.get("finish_reason")
        if isinstance(finish, str) and finish:
            state.finish = finish

    def _finish(self, state: _StreamState, endpoint: str) -> DoneEvent:
        finish = state.finish
        if finish == "length":
            return state.done("length", "max tokens")
        if finish == "stop":
            detail = "end of turn" if endpoint.startswith("chat") else "end of text or stop string"
            return state.done("stop", detail)
        if finish is None:
            return state.done(
                "error",
                "error",
                "the server ended the stream without saying why (llama_cpp.server does this "
                "when another request interrupts this one)",
            )
        return state.done("stop", f"the server stopped: {shorten(_clean(finish), 80)}")

    def cancel(self) -> None:
        """Stop the running generation from any thread: the stream's socket is shut down."""
        self._cancel.set()
        self._watch.cut()

    # --- template and tokens -------------------------------------------------------------

    def render(self, messages: Sequence[Message]) -> Rendered:
        """The prompt the server builds for `messages` (llama-server's `/apply-template`)."""
        if self._has_template_endpoint is False:
            raise EngineError(NO_TEMPLATE_MESSAGE)
        payload = {"messages": [{"role": m.role, "content": m.content} for m in messages]}
        try:
            answer = self._request_json("POST", self._target.root("apply-template"), payload)
        except _HTTPStatusError as exc:
            if exc.status in (404, 405):
                self._has_template_endpoint = False
                raise EngineError(NO_TEMPLATE_MESSAGE) from None
            raise
        prompt = answer.get("prompt") if isinstance(answer, dict) else None
        if not isinstance(prompt, str):
            self._has_template_endpoint = False
            raise EngineError(NO_TEMPLATE_MESSAGE)
        self._has_template_endpoint = True
        try:
            tokens = self.tokenize(prompt)
        except EngineError:
            tokens = []
        bos = self._bos_text
        if bos and tokens and tokens[0].text == bos and not prompt.startswith(bos):
            prompt = bos + prompt  # the BOS the server adds is part of what the model sees
        return Rendered(text=prompt, tokens=tuple(tokens))

    def tokenize(self, text: str) -> list[Token]:
        """Tokens of `text` as raw completion sends them, from the server's tokenizer."""
        if self._tokenizer in (None, "llama-server"):
            try:
                tokens = self._tokenize_llama_server(text)
                self._tokenizer = "llama-server"
                return tokens
            except _HTTPStatusError as exc:
                if exc.status not in (404, 405) or self._tokenizer is not None:
                    raise
        if self._tokenizer in (None, "llama-cpp-python"):
            try:
                tokens = self._tokenize_llama_cpp_python(text)
                self._tokenizer = "llama-cpp-python"
                return tokens
            except _HTTPStatusError as exc:
                if exc.status not in (404, 405) or self._tokenizer is not None:
                    raise
        self._tokenizer = "none"
        raise EngineError(NO_TOKENIZE_MESSAGE)

    def _special(self, piece: str) -> bool:
        if piece and piece in (self._bos_text, self._eos_text):
            return True
        return bool(_SPECIAL_PIECE.match(piece))

    def _tokenize_llama_server(self, text: str) -> list[Token]:
        answer = self._request_json(
            "POST",
            self._target.root("tokenize"),
            {"content": text, "add_special": True, "parse_special": True, "with_pieces": True},
        )
        items = answer.get("tokens") if isinstance(answer, dict) else None
        if not isinstance(items, list):
            raise EngineError(NO_TOKENIZE_MESSAGE)
        tokens: list[Token] = []
        for item in items:
            if isinstance(item, dict):
                piece = item.get("piece", "")
                if isinstance(piece, list):  # bytes of an incomplete UTF-8 character
                    piece = bytes(b for b in piece if isinstance(b, int)).decode("utf-8", "replace")
                token_id = _int(item.get("id"))
                tokens.append(Token(token_id if token_id is not None else -1, str(piece)))
            elif (token_id := _int(item)) is not None:
                tokens.append(Token(token_id, ""))
        return self._mark(tokens)

    def _tokenize_llama_cpp_python(self, text: str) -> list[Token]:
        answer = self._request_json(
            "POST", self._target.root("extras/tokenize"), {"input": text, "model": self._model}
        )
        ids = answer.get("tokens") if isinstance(answer, dict) else None
        if not isinstance(ids, list) or not all(_int(t) is not None for t in ids):
            raise EngineError(NO_TOKENIZE_MESSAGE)
        # It returns ids only: ask for each piece (one small request per token).
        tokens = []
        for token_id in ids:
            try:
                piece = self._request_json(
                    "POST",
                    self._target.root("extras/detokenize"),
                    {"tokens": [token_id], "model": self._model},
                )
            except _HTTPStatusError:  # a piece of a UTF-8 character: its strict decode fails
                tokens.append(Token(token_id, "\ufffd"))
                continue
            text_piece = piece.get("text") if isinstance(piece, dict) else None
            text_piece = text_piece if isinstance(text_piece, str) else ""
            # Its detokenizer drops control tokens (BOS, end of turn): an empty piece is one.
            tokens.append(Token(token_id, text_piece, special=text_piece == ""))
        return self._mark(tokens)

    def _mark(self, tokens: list[Token]) -> list[Token]:
        """Flag special tokens and drop a doubled BOS (text that starts with `<bos>`)."""
        marked = [Token(t.id, t.text, t.special or self._special(t.text)) for t in tokens]
        if len(marked) > 1 and marked[0].id == marked[1].id and marked[0].special:
            marked = marked[1:]
        return marked

    def logs(self) -> list[str]:
        """This engine's requests and what the server answered (the server keeps its own log)."""
        return list(self._logs)

    def __enter__(self) -> RemoteEngine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _Cancelled(Exception):
    """cancel() cut the connection while the request was being sent."""
