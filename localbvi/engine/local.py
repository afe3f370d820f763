"""LocalEngine: llama.cpp in a child process, driven over a pipe.

The caller's process never loads llama.cpp, so an abort, segfault or OOM kill in llama.cpp
becomes an `EngineCrashedError` carrying the child's last log lines, and the engine can load
again. The child's stdout/stderr go to a log file (`logs()` reads it), never to the terminal.
"""

from __future__ import annotations

import contextlib
import os
import queue
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from localbvi import errors
from localbvi.engine import cpu_buffers
from localbvi.engine.types import (
    Alternative,
    DoneEvent,
    Event,
    LoadConfig,
    LoadInfo,
    Message,
    Rendered,
    Sampling,
    ScoreProgress,
    ScoreRequest,
    Token,
    TokenEvent,
    TokenScore,
    VocabInfo,
)
from localbvi.errors import EngineCrashedError, EngineError, ModelLoadError

__all__ = ["LocalEngine"]

_LOG_TAIL = 20


class _Child:
    """One llama.cpp process with its request pipe, reply reader and log file."""

    def __init__(self) -> None:
        from localbvi.engine.worker import _Channel

        fd, self.log_path = tempfile.mkstemp(prefix="localbvi-llama-", suffix=".log")
        os.close(fd)
        self.process = subprocess.Popen(
            [sys.executable, "-m", "localbvi.engine.worker", self.log_path],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,  # the child points fd 2 at the log file itself
            start_new_session=True,  # Ctrl-C in the terminal is the caller's to handle
        )
        assert self.process.stdin is not None and self.process.stdout is not None
        self.channel = _Channel(self.process.stdout, self.process.stdin)
        self.replies: queue.Queue[Any] = queue.Queue()
        self._next_id = 0
        self.current_id = -1
        threading.Thread(target=self._read_replies, name="llama-replies", daemon=True).start()

    def _read_replies(self) -> None:
        while True:
            try:
                msg = self.channel.recv()
            except (EOFError, OSError, ValueError):
                self.replies.put(_GONE)
                return
            self.replies.put(msg)

    def send(self, op: str, *args: Any) -> int:
        """Send a request; returns its id (the handle `cancel` targets)."""
        self._next_id += 1
        self.current_id = self._next_id
        try:
            self.channel.send((op, self._next_id, *args))
        except (BrokenPipeError, OSError, ValueError):
            raise self.crashed() from None
        return self._next_id

    def cancel(self) -> None:
        # A dead child has nothing left to cancel.
        with contextlib.suppress(BrokenPipeError, OSError, ValueError):
            self.channel.send(("cancel", self.current_id))

    def recv(self) -> Any:
        msg = self.replies.get()
        if msg is _GONE:
            self.replies.put(_GONE)  # every later recv sees the death too
            raise self.crashed()
        return msg

    def log_lines(self) -> list[str]:
        try:
            return Path(self.log_path).read_text("utf-8", errors="replace").splitlines()
        except OSError:
            return []

    def crashed(self) -> EngineCrashedError:
        try:
            code: int | None = self.process.wait(timeout=2)
        except subprocess.TimeoutExpired:
            code = None
        if code is not None and code < 0:
            try:
                name = signal.Signals(-code).name
            except ValueError:
                name = f"signal {-code}"
            how = f"was killed ({name})"
            if name == "SIGKILL":
                how += ", perhaps by the system for lack of memory"
        elif code is None:
            how = "stopped answering"
        else:
            how = f"exited with code {code}"
        tail = tuple(line for line in self.log_lines()[-_LOG_TAIL:] if line.strip())
        last = tail[-1].strip() if tail else ""
        message = f"the llama.cpp process {how}"
        if last:
            message += f"; its last log line: {last}"
        message += ". Load the model again to continue."
        return EngineCrashedError(message, tail)

    def stop(self) -> None:
        self.cancel()
        with contextlib.suppress(BrokenPipeError, OSError, ValueError):
            self.channel.send(("shutdown", 0))
        try:
            self.process.wait(timeout=3)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=3)
        for stream in (self.process.stdin, self.process.stdout):
            try:
                if stream is not None:
                    stream.close()
            except OSError:
                pass
        with contextlib.suppress(OSError):
            os.unlink(self.log_path)


_GONE = object()


def _require_safe(child: _Child, info: LoadInfo, exc: EngineCrashedError) -> None:
    """A build that cannot turn extra buffers off has no safe setting to fall back to."""
    if info.extra_buffers:
        child.stop()
        raise ModelLoadError(
            f"{exc} This llama-cpp-python build cannot turn its CPU extra buffers off: "
            "upgrade it (pip install -U llama-cpp-python) and try again."
        )


def _short(exc: BaseException) -> str:
    """The first clause of an error message, for a remembered reason."""
    return str(exc).split(";")[0].split(". ")[0]


def _raise_reply(reply: tuple[Any, ...]) -> None:
    """Turn the child's ("err", (type, message, extra)) into the project's exception."""
    name, message, extra = reply[1]
    if name == "ContextOverflowError":
        raise errors.ContextOverflowError(extra["prompt_tokens"], extra["n_ctx"])
    cls = getattr(errors, name, None)
    if isinstance(cls, type) and issubclass(cls, errors.LocalbviError):
        raise cls(message)
    raise EngineError(message)


class LocalEngine:
    """The `Engine` for GGUF files on this machine (see engine/base.py for the contract)."""

    def __init__(self) -> None:
        self._child: _Child | None = None
        self._info: LoadInfo | None = None
        self._lock = threading.Lock()  # one request at a time on the pipe
        self._busy = False
        self._last_logs: list[str] = []
        self._config = LoadConfig()
        self._retry_armed = False

    @property
    def info(self) -> LoadInfo | None:
        return self._info

    @property
    def pid(self) -> int | None:
        """The llama.cpp child's process id (for diagnostics and tests)."""
        return self._child.process.pid if self._child else None

    # -- loading ---------------------------------------------------------------------------

    def load(self, path: str | os.PathLike[str], config: LoadConfig | None = None) -> LoadInfo:
        config = config or LoadConfig()
        path = str(path)
        if not os.path.isfile(path):
            raise ModelLoadError(
                f"no model file at {path}: check the path or run `localbvi models`"
            )
        self._validate(path)
        plan = cpu_buffers.plan(config.cpu_extra_buffers)
        child, info = self._start(path, config, plan.use_extra_buffers)
        note = "" if info.extra_buffers else plan.reason
        if plan.warm_up and info.extra_buffers:
            try:
                self._warm_up(child)
            except EngineCrashedError as exc:
                # The crash llama.cpp's AMX kernels cause (or any first-decode crash): load
                # again without extra buffers and remember that for this build and CPU.
                child.stop()
                child, info = self._start(path, config, False)
                _require_safe(child, info, exc)
                note = cpu_buffers.CRASH_NOTE
                cpu_buffers.remember(False, f"{note} ({_short(exc)})")
            else:
                cpu_buffers.remember(True, "a warm-up decode with them on worked")
        # Only now drop the previous model: a failed load leaves it usable.
        self._stop_child()
        self._child = child
        self._info = replace(info, extra_buffers_note=note)
        self._config = config
        # A decision remembered for this CPU may not hold for every model: the first decode
        # of this one gets a single retry in the safe setting.
        self._retry_armed = plan.retry_safe and not plan.warm_up and info.extra_buffers
        return self._info

    def _start(self, path: str, config: LoadConfig, extra_buffers: bool) -> tuple[_Child, LoadInfo]:
        """A new child with the model loaded (the engine's current model is not touched)."""
        child = _Child()
        try:
            child.send("load", path, config, extra_buffers)
            reply = child.recv()
        except EngineCrashedError as exc:
            child.stop()
            raise ModelLoadError(f"could not load {path}: {exc}") from None
        if reply[0] != "ok":
            lines = child.log_lines()
            child.stop()
            reason = next(
                (
                    ln.strip()
                    for ln in reversed(lines)
                    if "error" in ln.lower() or "failed" in ln.lower()
                ),
                "",
            )
            message = str(reply[1][1])
            if reason and reason not in message:
                message += f" ({reason})"
            raise ModelLoadError(message)
        info: LoadInfo = reply[1]
        return child, info

    @staticmethod
    def _warm_up(child: _Child) -> None:
        child.send("warm_up")
        reply = child.recv()
        if reply[0] != "ok":
            _raise_reply(reply)

    def _reload_safe(self, exc: EngineCrashedError) -> _Child:
        """After a first-decode crash with extra buffers on: the same model without them."""
        info, config = self._info, self._config
        assert info is not None
        old = self._child
        self._child = None
        if old is not None:
            self._last_logs = old.log_lines()
            old.stop()
        try:
            child, fresh = self._start(info.path, config, False)
        except ModelLoadError:
            self._info = None
            raise exc from None
        try:
            _require_safe(child, fresh, exc)
        except ModelLoadError:
            self._info = None
            raise
        note = cpu_buffers.CRASH_NOTE
        cpu_buffers.remember(False, f"{note} ({_short(exc)})")
        self._child = child
        self._info = replace(fresh, extra_buffers_note=note)
        return child

    @staticmethod
    def _validate(path: str) -> None:
        """Reject files that are not GGUF before llama.cpp sees them (readable reasons)."""
        try:
            from localbvi.inspector import inspect_gguf
        except ImportError:  # the inspector is optional for the engine
            return
        try:
            inspect_gguf(path)
        except errors.GGUFError as exc:
            raise ModelLoadError(f"{path} is not a usable model: {exc}") from None

    def unload(self) -> None:
        self._stop_child()
        self._info = None

    def close(self) -> None:
        self.unload()

    def _stop_child(self) -> None:
        if self._child is not None:
            self._last_logs = self._child.log_lines()
            self._child.stop()
            self._child = None

    def _require(self) -> _Child:
        if self._child is None or self._info is None:
            raise EngineError("no model is loaded: load one first")
        return self._child

    def _crash(self, exc: EngineCrashedError) -> EngineCrashedError:
        """Forget the dead child (its logs stay readable) so that load works again."""
        if self._child is not None:
            self._last_logs = self._child.log_lines()
            self._child.stop()
            self._child = None
        self._info = None
        return exc

    # -- requests --------------------------------------------------------------------------

    def _call(self, op: str, *args: Any) -> Any:
        child = self._require()
        with self._lock:
            try:
                child.send(op, *args)
                reply = child.recv()
            except EngineCrashedError as exc:
                raise self._crash(exc) from None
        if reply[0] != "ok":
            _raise_reply(reply)
        return reply[1]

    def render(self, messages: Sequence[Message]) -> Rendered:
        result: Rendered = self._call("render", list(messages))
        return result

    def tokenize(self, text: str) -> list[Token]:
        result: list[Token] = self._call("tokenize", text)
        return result

    def score(
        self, request: ScoreRequest, on_progress: ScoreProgress | None = None
    ) -> list[TokenScore]:
        """Rank and probability of each answer token after the prompt (see worker.score).

        `on_progress` hears (positions scored, positions) after each chunk, on this thread;
        `cancel()` from another thread stops the pass between chunks (a LocalbviError). If
        the caller leaves early (an exception from `on_progress`, Ctrl-C), the child is
        cancelled and its remaining replies read, so the pipe stays in step.
        """
        child = self._require()
        with self._lock:
            finished = False
            try:
                child.send("score", request)
                while True:
                    reply = child.recv()
                    if reply[0] != "p":
                        finished = True
                        break
                    if on_progress is not None:
                        on_progress(reply[1], reply[2])
            except EngineCrashedError as exc:
                finished = True
                raise self._crash(exc) from None
            finally:
                if not finished and self._child is child:
                    self._drain(child)
        if reply[0] != "ok":
            _raise_reply(reply)
        result: list[TokenScore] = reply[1]
        return result

    def prime(self, prefix: str) -> tuple[int, str]:
        """Have the model's KV cache hold `prefix` before a request that starts with it.

        Restored from the prefix cache on disk when an earlier run saved it (a long in-context
        preamble then costs a file read, not an evaluation), else evaluated and saved. Returns
        (prefix tokens, "memory" | "disk" | "built").
        """
        from localbvi.engine import prefix_cache

        info = self._info
        path = prefix_cache.path_for(info, prefix) if info is not None else None
        result: tuple[int, str] = self._call("prime", prefix, str(path) if path else None)
        if path is not None and result[1] == "built":
            prefix_cache.evict()
        elif path is not None and result[1] == "disk":
            with contextlib.suppress(OSError):
                os.utime(path)  # recently used: evicted last
        return result

    def vocab(self) -> VocabInfo:
        """The loaded model's vocabulary in brief (tokenizer, size, hash)."""
        result: VocabInfo = self._call("vocab")
        return result

    def complete(
        self, prompt: str | Sequence[int], sampling: Sampling | None = None
    ) -> Iterator[Event]:
        payload: str | list[int] = prompt if isinstance(prompt, str) else list(prompt)
        return self._stream("complete", payload, sampling or Sampling())

    def chat(
        self, messages: Sequence[Message], sampling: Sampling | None = None
    ) -> Iterator[Event]:
        return self._stream("chat", list(messages), sampling or Sampling())

    def _stream(self, op: str, *args: Any) -> Iterator[Event]:
        child = self._require()
        if not self._lock.acquire(blocking=False):
            raise EngineError("the model is already generating: wait or cancel it first")
        finished = False
        notice = ""
        try:
            while True:  # a second pass only after a first-decode crash, in the safe setting
                retry, yielded = self._retry_armed, False
                try:
                    child.send(op, *args)
                    reply = child.recv()
                    if reply[0] == "err":
                        finished = True
                        _raise_reply(reply)
                    while True:
                        msg = child.recv()
                        if msg[0] == "t":
                            self._retry_armed = False
                            yielded = True
                            alternatives: tuple[Alternative, ...] = msg[3]
                            yield TokenEvent(text=msg[1], id=msg[2], alternatives=alternatives)
                        elif msg[0] == "done":
                            finished = True
                            self._retry_armed = False
                            yield DoneEvent(**{**msg[1], "notice": notice})
                            return
                        else:  # an error after the stream started
                            finished = True
                            _raise_reply(msg)
                except EngineCrashedError as exc:
                    self._retry_armed = False
                    if not retry or yielded:
                        finished = True
                        raise self._crash(exc) from None
                    child = self._reload_safe(exc)
                    notice = cpu_buffers.CRASH_NOTE
        finally:
            if not finished and self._child is child:
                self._drain(child)
            self._lock.release()

    def _drain(self, child: _Child) -> None:
        """The consumer stopped early: cancel and read the rest so the pipe stays in step."""
        child.cancel()
        try:
            while True:
                msg = child.recv()
                if msg[0] in ("done", "err", "ok"):  # "ok": the end of a score
                    return
        except EngineCrashedError as exc:
            self._crash(exc)

    def cancel(self) -> None:
        child = self._child
        if child is not None:
            child.cancel()

    def logs(self) -> list[str]:
        if self._child is None:
            return list(self._last_logs)
        note = self._info.extra_buffers_note if self._info else ""
        return ([f"localbvi: {note}"] if note else []) + self._child.log_lines()

    def __enter__(self) -> LocalEngine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        # No pipe I/O here: this may run during interpreter shutdown. Killing is enough, the
        # child holds nothing that needs a goodbye.
        child = getattr(self, "_child", None)
        if child is not None and child.process.poll() is None:
            child.process.kill()


def wait_for_exit(pid: int, timeout: float = 5.0) -> bool:
    """Test helper: wait until a process id is gone."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.05)
    return False
