"""RemoteEngine: the `Engine` over an OpenAI-compatible HTTP server on a bigger machine.

Made for llama.cpp's `llama-server`, and works with llama-cpp-python's `llama_cpp.server` and
other OpenAI-compatible servers. Raw completion goes through `/v1/completions`, chat through
`/v1/chat/completions` (the server applies the chat template), both streamed as server-sent
events and turned into the same `TokenEvent`/`DoneEvent` values as the local engine.

Only the standard library: `http.client` gives us the socket, and cancelling shuts that socket
down from any thread, which ends a blocked read at once (even during a long prompt
evaluation, when no token is coming).

Errors: anything that stops a request before its first token raises `EngineError` (with what
to do); a failure after tokens arrived ends the stream with a `DoneEvent` whose finish reason
is "error", so the partial reply is kept.
"""

from __future__ import annotations

import collections
import contextlib
import http.client
import json
import math
import re
import socket
import ssl
import threading
import time
import urllib.parse
from collections.abc import Generator, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

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
from localbvi.errors import ContextOverflowError, EngineError, ModelLoadError, RefError

__all__ = ["RemoteEngine", "is_remote_ref", "parse_remote_ref"]

NO_TEMPLATE_MESSAGE = (
    "this server does not expose its chat template; the prompt is rendered on the server"
)
NO_TOKENIZE_MESSAGE = "this server does not expose its tokenizer: it offers no /tokenize endpoint"

_SPECIAL_PIECE = re.compile(r"^<(\|[^|<>\s]+\||[A-Za-z]+_[A-Za-z_]+|bos|eos|s|/s|unk|pad)>$")


def is_remote_ref(ref: str) -> bool:
    """Whether a model reference names a server (`http://…` or `https://…`)."""
    return ref.startswith(("http://", "https://"))


def parse_remote_ref(ref: str) -> tuple[str, str | None]:
    """`http(s)://host:port[/v1][#MODEL]` → (base URL, model or None).

    A bare `http://host:port` gets `/v1`, where OpenAI-compatible servers answer.
    """
    url, _, model = ref.partition("#")
    parts = urllib.parse.urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise RefError(
            f"{ref!r} is not a server address: write it like http://HOST:8080/v1 "
            "(optionally followed by #MODEL)"
        )
    try:
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number
    except ValueError:
        raise RefError(
            f"{ref!r} has a bad port number: write it like http://HOST:8080/v1"
        ) from None
    path = parts.path.rstrip("/") or "/v1"
    base = urllib.parse.urlunsplit((parts.scheme, parts.netloc, path, "", ""))
    return base, (model.strip() or None)


@dataclass(frozen=True)
class _Target:
    """Where requests go: the OpenAI base path (`/v1`) and the server root (llama.cpp extras)."""

    url: str
    scheme: str
    host: str
    port: int
    base_path: str
    root_path: str

    @classmethod
    def from_url(cls, url: str) -> _Target:
        base, _ = parse_remote_ref(url)
        parts = urllib.parse.urlsplit(base)
        assert parts.hostname is not None
        port = parts.port or (443 if parts.scheme == "https" else 80)
        root = parts.path[: -len("/v1")] if parts.path.endswith("/v1") else parts.path
        return cls(base, parts.scheme, parts.hostname, port, parts.path, root)

    def api(self, name: str) -> str:
        return f"{self.base_path}/{name}"

    def root(self, name: str) -> str:
        return f"{self.root_path}/{name}"

    def connect(self, timeout: float) -> http.client.HTTPConnection:
        if self.scheme == "https":
            return http.client.HTTPSConnection(
                self.host, self.port, timeout=timeout, context=ssl.create_default_context()
            )
        return http.client.HTTPConnection(self.host, self.port, timeout=timeout)


class _HTTPStatusError(EngineError):
    """A non-2xx answer, kept with its status so callers can decide to retry or fall back."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


def _error_text(body: bytes) -> str:
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
        if not isinstance(rate, int | float) or reason == "cancelled":
            rate = 0.0
            if self.first is not None and self.last is not None and self.count > 1:
                rate = (self.count - 1) / max(self.last - self.first, 1e-9)
        return DoneEvent(
            finish_reason=reason,
            prompt_tokens=prompt or 0,
            tokens=self.count if reason == "cancelled" else (tokens or self.count),
            ttft_s=(self.first - self.start) if self.first is not None else 0.0,
            tokens_per_s=float(rate),
            stop_detail=detail,
            error=error,
        )


def _int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


class RemoteEngine:
    """The `Engine` for a model served over HTTP (see engine/base.py for the contract).

    `base_url` is the server's OpenAI-compatible address (`http://HOST:PORT/v1`); `load(ref)`
    may point the engine elsewhere. The server owns the model: `LoadConfig` fields (context
    size, threads, GPU layers) are the server's command-line options, not ours.
    """

    def __init__(
        self,
        base_url: str,
        model: str | None = None,
        api_key: str | None = None,
        *,
        timeout: float = 300.0,
        connect_timeout: float = 10.0,
    ) -> None:
        self._target = _Target.from_url(base_url)
        self._model = model
        self._api_key = api_key
        self._timeout = timeout
        self._connect_timeout = connect_timeout
        self._info: LoadInfo | None = None
        self._seed = -1
        self._busy = threading.Lock()
        self._cancel = threading.Event()
        self._sock_lock = threading.Lock()
        # The running stream's socket. Kept apart from its HTTPConnection, which drops its
        # reference once a response that ends with the connection (no keep-alive) arrives.
        self._sock: socket.socket | None = None
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

    def _log(self, line: str) -> None:
        self._logs.append(f"{time.strftime('%H:%M:%S')} {line}")

    def _headers(self, body: bool) -> dict[str, str]:
        headers = {"Accept": "application/json, text/event-stream", "User-Agent": "localbvi"}
        if body:
            headers["Content-Type"] = "application/json"
        if self._api_key:
            headers["Authorization"] = f"Bearer {self._api_key}"
        return headers

    def _network_error(self, exc: BaseException, path: str) -> EngineError:
        url = self._target.url
        if isinstance(exc, ConnectionRefusedError):
            return EngineError(
                f"no server answers at {url}: start llama-server there or check the address"
            )
        if isinstance(exc, socket.gaierror):
            return EngineError(
                f"cannot find the host {self._target.host!r} of {url}: check the address"
            )
        if isinstance(exc, TimeoutError):
            return EngineError(
                f"the server at {url} did not answer {path} in time: check that it is running, "
                "reachable and not overloaded"
            )
        if isinstance(exc, ssl.SSLError):
            return EngineError(
                f"a secure connection to {url} failed ({exc.reason or exc}): check the address "
                "(http:// or https://?)"
            )
        if isinstance(
            exc,
            http.client.HTTPException
            | ConnectionResetError
            | BrokenPipeError
            | ConnectionAbortedError,
        ):
            return EngineError(
                f"{url} did not answer {path} like an HTTP server ({type(exc).__name__}): "
                "check the address and port (llama-server listens on 8080 by default)"
            )
        return EngineError(f"the connection to {url} failed ({exc}): check the address")

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

    def _open(
        self,
        method: str,
        path: str,
        payload: object | None,
        timeout: float,
        *,
        stream: bool = False,
    ) -> tuple[http.client.HTTPConnection, http.client.HTTPResponse]:
        """Send a request; a stream's connection is registered so that cancel() can cut it."""
        conn = self._target.connect(self._connect_timeout)
        body = json.dumps(payload).encode() if payload is not None else None
        started = time.monotonic()
        try:
            conn.connect()
            assert conn.sock is not None
            conn.sock.settimeout(timeout)
            if stream:
                with self._sock_lock:
                    self._sock = conn.sock
                if self._cancel.is_set():  # cancelled while connecting
                    self._forget(conn, stream=True)
                    raise _Cancelled
            conn.request(method, path, body=body, headers=self._headers(body is not None))
            resp = conn.getresponse()
        except (OSError, http.client.HTTPException) as exc:
            self._forget(conn, stream=stream)
            if stream and self._cancel.is_set():
                raise _Cancelled from None
            self._log(f"{method} {path} failed: {exc!r}")
            raise self._network_error(exc, path) from None
        self._log(f"{method} {path} → {resp.status} ({time.monotonic() - started:.2f} s)")
        return conn, resp

    def _forget(
        self,
        conn: http.client.HTTPConnection,
        resp: http.client.HTTPResponse | None = None,
        *,
        stream: bool = False,
    ) -> None:
        """Close a request's connection (and response); a stream's socket is unregistered."""
        if stream:
            with self._sock_lock:
                self._sock = None
        if resp is not None:
            resp.close()
        conn.close()

    def _request_json(
        self, method: str, path: str, payload: object | None = None, *, timeout: float = 30.0
    ) -> Any:
        """One whole request/response; a non-2xx status or a non-JSON body raises."""
        conn, resp = self._open(method, path, payload, timeout)
        try:
            body = resp.read()
        except (OSError, http.client.HTTPException) as exc:
            raise self._network_error(exc, path) from None
        finally:
            self._forget(conn, resp)
        if not 200 <= resp.status < 300:
            raise self._status_error(resp.status, body, path)
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
            listing = self._request_json("GET", target.api("models"), timeout=30.0)
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
            props = self._request_json("GET", self._target.root("props"), timeout=10.0)
        except EngineError:
            return {}
        return props if isinstance(props, dict) else {}

    def unload(self) -> None:
        """Forget the server (nothing to free on this side)."""
        self.cancel()
        self._info = None

    def close(self) -> None:
        self.unload()

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

    def _start(
        self, endpoint: str, base: dict[str, Any], sampling: Sampling
    ) -> tuple[http.client.HTTPConnection, http.client.HTTPResponse]:
        """Open the stream; once, fall back to plain OpenAI fields if the server balks."""
        path = self._target.api(endpoint)
        while True:
            minimal = self._minimal
            payload = self._payload(endpoint, base, sampling, minimal)
            conn, resp = self._open("POST", path, payload, self._timeout, stream=True)
            if 200 <= resp.status < 300:
                return conn, resp
            try:
                body = resp.read()
            except (OSError, http.client.HTTPException):
                body = b""
            finally:
                self._forget(conn, resp, stream=True)
            error = self._status_error(resp.status, body, path)
            retry = (
                not minimal
                and resp.status in (400, 422, 500)
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
        conn: http.client.HTTPConnection | None = None
        resp: http.client.HTTPResponse | None = None
        state = _StreamState(time.monotonic())
        try:
            try:
                conn, resp = self._start(endpoint, base, sampling)
            except _Cancelled:
                yield state.done("cancelled", "cancelled")
                return
            content_type = resp.getheader("Content-Type", "")
            if "text/event-stream" not in content_type:
                yield from self._whole_answer(resp, endpoint, state, sampling)
                return
            yield from self._read_events(resp, endpoint, state, sampling)
        finally:
            if conn is not None:
                self._forget(conn, resp, stream=True)
            self._busy.release()

    def _garbage(self, what: str) -> EngineError:
        return EngineError(
            f"the server at {self._target.url} streamed something that is not an OpenAI "
            f"answer ({what[:80]!r}): is it an OpenAI-compatible server? Check the address"
        )

    def _whole_answer(
        self,
        resp: http.client.HTTPResponse,
        endpoint: str,
        state: _StreamState,
        sampling: Sampling,
    ) -> Iterator[Event]:
        """A server that ignored `stream: true` and sent one JSON answer: emit it as one piece."""
        try:
            body = resp.read()
        except (OSError, http.client.HTTPException) as exc:
            if self._cancel.is_set():
                yield state.done("cancelled", "cancelled")
                return
            raise self._network_error(exc, endpoint) from None
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
        yield self._finish(state, endpoint)

    def _read_events(
        self,
        resp: http.client.HTTPResponse,
        endpoint: str,
        state: _StreamState,
        sampling: Sampling,
    ) -> Iterator[Event]:
        data_lines: list[str] = []
        while True:
            if self._cancel.is_set():
                yield state.done("cancelled", "cancelled")
                return
            try:
                raw = resp.readline(1 << 24)
            except (OSError, http.client.HTTPException) as exc:
                if self._cancel.is_set():
                    yield state.done("cancelled", "cancelled")
                    return
                error = self._network_error(exc, self._target.api(endpoint))
                if state.count == 0:
                    raise error from None
                yield state.done("error", "error", f"the stream broke: {error}")
                return
            if not raw:  # end of stream
                if self._cancel.is_set():
                    yield state.done("cancelled", "cancelled")
                    return
                if data_lines:
                    result = yield from self._dispatch("\n".join(data_lines), state, sampling)
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
            line = raw.decode("utf-8", "replace").rstrip("\r\n")
            if line == "":
                if data_lines:
                    result = yield from self._dispatch("\n".join(data_lines), state, sampling)
                    data_lines = []
                    if result == "end":
                        break
                continue
            if line.startswith(":"):
                continue  # an SSE comment (keep-alive ping)
            field, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if field == "data":
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
        if text:
            limit = sampling.top_probs
            pieces = _logprob_tokens(choice.get("logprobs"), limit) if limit > 0 else []
            if pieces and "".join(p[0] for p in pieces) == text:
                for piece, token_id, alternatives in pieces:
                    state.token()
                    yield TokenEvent(text=piece, id=token_id, alternatives=alternatives)
            else:
                token_id = pieces[0][1] if len(pieces) == 1 else -1
                alternatives = pieces[0][2] if len(pieces) == 1 else ()
                state.token()
                yield TokenEvent(text=text, id=token_id, alternatives=alternatives)
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
        return state.done("stop", f"the server stopped: {finish}")

    def cancel(self) -> None:
        """Stop the running generation from any thread: the stream's socket is shut down."""
        self._cancel.set()
        with self._sock_lock:
            sock = self._sock
        if sock is not None:
            with contextlib.suppress(OSError):  # already closed
                sock.shutdown(socket.SHUT_RDWR)

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
