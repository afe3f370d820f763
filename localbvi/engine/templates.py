"""Chat-template rendering, safely and within bounds.

A chat template inside a GGUF is untrusted input. It is rendered in Jinja's
`ImmutableSandboxedEnvironment` (as Hugging Face and llama-cpp-python do), so it cannot reach
Python internals, extended with size caps on every step (`template_sandbox.BoundedEnvironment`).
And it is rendered in a helper process with a 2 s timer and a 256 MB address space, so a
template that runs away anyway (nested loops, exponential macros) costs its caller at most a
few seconds and never its memory: the helper is killed and the caller gets a TemplateError
saying what happened and what to do. The helper starts on first use (about 0.15 s) and then
serves every render (well under a millisecond of overhead each; see `_Sandbox`).

The variables follow the Hugging Face convention (`messages`, `bos_token`, `eos_token`,
`add_generation_prompt`, `raise_exception`, `strftime_now`).
"""

from __future__ import annotations

import atexit
import contextlib
import os
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import IO, Any

from localbvi.engine import template_sandbox
from localbvi.engine.types import Message
from localbvi.errors import TemplateError, printable, shorten

__all__ = ["bundled_template", "keep_llama_cpp_from_compiling_templates", "render_chat"]

_HELPER = Path(template_sandbox.__file__)
_START_TIMEOUT_S = 20.0  # Python + Jinja start in ~0.15 s; a loaded machine can take far longer
_KILL_GRACE_S = 2.0  # past the helper's own timer: it is stuck in C code, so it is killed
_POLL_S = 0.05
_OVERRIDE_HINT = "set a chat_template override for this model in models.toml"


class _SandboxFailure(Exception):
    """The helper did not answer: it could not start, died, or had to be killed."""


class _Sandbox:
    """The helper process: started on first use, killed and restarted when a render overruns.

    One render at a time (a lock); a reader thread turns the helper's replies into a queue so
    that the caller waits with a timeout on every platform, and Ctrl-C interrupts the wait.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._proc: subprocess.Popen[bytes] | None = None
        self._replies: queue.Queue[Any] = queue.Queue()
        self._owner = 0  # the pid that started the helper: a forked child starts its own
        self._frame_limit = 0

    def render(self, request: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            proc = self._started()
            assert proc.stdin is not None
            self._frame_limit = 64 * 1024 * 1024 + 12 * template_sandbox.text_size(request)
            try:
                template_sandbox.write_frame(proc.stdin, request)
                reply = self._reply(template_sandbox.TIME_LIMIT_S + _KILL_GRACE_S)
            except BaseException:  # a timeout, a dead helper, Ctrl-C: never reuse it half-way
                self._stop()
                raise
            if reply.get("error") in ("timeout", "memory"):
                self._stop()  # it survived, but may hold fragmented memory: start fresh
            return reply

    def _started(self) -> subprocess.Popen[bytes]:
        proc = self._proc
        if proc is not None and proc.poll() is None and self._owner == os.getpid():
            return proc
        self._stop()
        try:
            proc = subprocess.Popen(
                [
                    sys.executable,
                    "-P",  # not the helper's folder on sys.path: engine/types.py would shadow
                    str(_HELPER),
                    str(template_sandbox.MEMORY_LIMIT_BYTES),
                    str(template_sandbox.TIME_LIMIT_S),
                ],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                start_new_session=True,  # Ctrl-C in the terminal reaches only the caller
            )
        except OSError as exc:
            raise _SandboxFailure(f"cannot start the chat-template sandbox ({exc})") from None
        self._proc, self._owner = proc, os.getpid()
        self._replies = queue.Queue()
        assert proc.stdout is not None
        threading.Thread(
            target=self._read_replies,
            args=(proc.stdout, self._replies),
            name="template-sandbox-reader",
            daemon=True,
        ).start()
        try:
            self._reply(_START_TIMEOUT_S)
        except _SandboxFailure:
            code = proc.poll()
            self._stop()
            raise _SandboxFailure(
                f"the chat-template sandbox ({sys.executable} {_HELPER.name}) did not start"
                + (f": it exited with code {code}" if code is not None else " in time")
            ) from None
        except BaseException:
            self._stop()
            raise
        return proc

    def _read_replies(self, stream: IO[bytes], replies: queue.Queue[Any]) -> None:
        try:
            while True:
                reply = template_sandbox.read_frame(stream, self._frame_limit or None)
                replies.put(reply)
                if reply is None:
                    return
        except (OSError, ValueError):  # closed under us, or not JSON: a broken helper
            replies.put(None)

    def _reply(self, timeout: float) -> dict[str, Any]:
        # Short waits: a signal (Ctrl-C) delivered to another thread interrupts no wait here,
        # and Python runs its handler in this thread only when the wait returns.
        deadline = time.monotonic() + timeout
        while True:
            try:
                reply = self._replies.get(
                    timeout=min(_POLL_S, max(0.0, deadline - time.monotonic()))
                )
                break
            except queue.Empty:
                if time.monotonic() >= deadline:
                    raise _SandboxFailure("timeout") from None
        if not isinstance(reply, dict):
            raise _SandboxFailure("stopped")
        return reply

    def _stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None or self._owner != os.getpid():
            return
        if proc.poll() is None:
            proc.kill()  # first: closing stdout waits for the reader thread's read to end
        with contextlib.suppress(subprocess.TimeoutExpired):  # a kill that does not take
            proc.wait(timeout=5)
        for stream in (proc.stdin, proc.stdout):
            with contextlib.suppress(OSError):
                if stream is not None:
                    stream.close()

    def close(self) -> None:
        """Stop the helper (at exit; a render still running elsewhere gets 5 s to end)."""
        if self._lock.acquire(timeout=5):
            try:
                self._stop()
            finally:
                self._lock.release()


_SANDBOX = _Sandbox()
atexit.register(_SANDBOX.close)


def render_chat(
    source: str,
    messages: Sequence[Message],
    *,
    bos_token: str,
    eos_token: str,
    add_generation_prompt: bool = True,
    origin: str | None = None,
) -> str:
    """Render `messages` with a chat template, exactly as the model will receive them.

    Raises TemplateError with a readable message when the template is broken, refuses the
    conversation, or exceeds a limit (2 s, 256 MB, a 4 MB prompt); `origin` (e.g. the model
    file's name) is named in that message when given.
    """
    whose = f"the chat template of {origin}" if origin else "the chat template"
    if len(source) > template_sandbox.MAX_SOURCE_CHARS:
        raise TemplateError(
            f"{whose} is {len(source):,} characters long, which is not a chat template (real "
            f"ones are under 50,000); {_OVERRIDE_HINT}"
        )
    request = {
        "source": source,
        "messages": [{"role": m.role, "content": m.content} for m in messages],
        "bos_token": bos_token,
        "eos_token": eos_token,
        "add_generation_prompt": add_generation_prompt,
    }
    try:
        reply = _SANDBOX.render(request)
    except _SandboxFailure as exc:
        if str(exc) == "timeout":
            raise TemplateError(
                f"{whose} did not finish rendering in {template_sandbox.TIME_LIMIT_S:g} s "
                f"and was stopped (a runaway loop?); {_OVERRIDE_HINT}"
            ) from None
        if str(exc) == "stopped":
            raise TemplateError(
                f"{whose} crashed its renderer (it ran out of memory?) and was stopped; "
                f"{_OVERRIDE_HINT}"
            ) from None
        raise TemplateError(f"{whose} cannot be rendered: {exc}") from None
    if "text" in reply and isinstance(reply["text"], str):
        return reply["text"]
    raise TemplateError(_error_message(whose, reply))


def _error_message(whose: str, reply: dict[str, Any]) -> str:
    kind = reply.get("error")
    detail = printable(shorten(str(reply.get("message", "")), 300))
    if kind == "syntax":
        return f"{whose} is broken (line {reply.get('line')}: {detail}); {_OVERRIDE_HINT}"
    if kind == "raised":
        return f"{whose} refused this conversation: {detail}"
    if kind == "limit":
        return f"{whose} went past a size limit: {detail}; {_OVERRIDE_HINT}"
    if kind == "timeout":
        return (
            f"{whose} did not finish rendering in {template_sandbox.TIME_LIMIT_S:g} s and was "
            f"stopped (a runaway loop?); {_OVERRIDE_HINT}"
        )
    if kind == "memory":
        mb = template_sandbox.MEMORY_LIMIT_BYTES // (1024 * 1024)
        return f"{whose} needed more than {mb} MB of memory to render; {_OVERRIDE_HINT}"
    return f"{whose} failed to render: {detail}"


class _NotCompiled:
    """Stands in for llama-cpp-python's `Jinja2ChatFormatter`: keeps the text, compiles nothing."""

    def __init__(self, template: str, *args: object, **kwargs: object) -> None:
        self.template = template

    def to_chat_handler(self) -> Any:
        def refuse(*args: object, **kwargs: object) -> Any:
            raise TemplateError("localbvi renders chat templates itself (render_chat)")

        return refuse


def keep_llama_cpp_from_compiling_templates() -> None:
    """Make llama-cpp-python skip compiling the chat templates in a GGUF when it loads it.

    `llama_cpp.Llama(...)` compiles every `tokenizer.chat_template*` value with Jinja, with no
    bound: Jinja folds constant expressions while compiling, so `{{ 'x' * 2000000000 }}` in a
    file's template took 50-110 s and 8 GB in the loading process (measured here, 0.3.x).
    localbvi never uses those compiled templates (it renders with `render_chat`), so the
    process that loads models calls this first. Idempotent; needs llama_cpp installed.
    """
    from llama_cpp import llama_chat_format

    llama_chat_format.Jinja2ChatFormatter = _NotCompiled  # type: ignore[misc,assignment]


def bundled_template(name: str) -> str:
    """The text of a template shipped in `localbvi/data/<name>.jinja` (e.g. "gemma3")."""
    try:
        return resources.files("localbvi.data").joinpath(f"{name}.jinja").read_text("utf-8")
    except FileNotFoundError:
        raise TemplateError(f"no bundled chat template named {name!r}") from None
