"""Run one hostile case in a child process and measure what its user would live through.

A case runs as `python -c CODE ARGS` (or `python -m localbvi …`) in a new session with a unique
environment token, so that everything it starts — the chat-template helper included — can be
found afterwards in /proc. The child is reaped with `os.wait4`, whose resource usage is the
child's own peak RSS or that of a descendant it waited for, whichever is larger. Linux only.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

TOKEN_VAR = "LOCALBVI_TEST_CASE_TOKEN"


@dataclass(frozen=True)
class Outcome:
    returncode: int
    stdout: str
    stderr: str
    seconds: float
    """From start to exit."""
    max_rss_mb: float
    """Peak resident memory of the child or of any process it waited for."""
    leftovers: tuple[int, ...]
    """Processes the case started that were still alive after it ended (then killed)."""
    after_signal_s: float | None = None
    """From the signal to the exit, when one was sent."""


def python(*args: str, timeout: float = 30, signal_at: tuple[float, int] | None = None) -> Outcome:
    """Run `python ARGS` from the repository root; `signal_at` = (seconds, signal) to send."""
    return run([sys.executable, *args], timeout=timeout, signal_at=signal_at)


def run(
    argv: list[str], *, timeout: float = 30, signal_at: tuple[float, int] | None = None
) -> Outcome:
    token = uuid.uuid4().hex
    env = {**os.environ, TOKEN_VAR: token}
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        start = time.monotonic()
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err,
            env=env,
            start_new_session=True,
            cwd=Path(__file__).resolve().parents[2],
        )
        signalled: float | None = None
        status, usage = 0, None
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            now = time.monotonic()
            if pid:
                break
            if signal_at is not None and signalled is None and now - start >= signal_at[0]:
                os.kill(proc.pid, signal_at[1])
                signalled = now
            if now - start > timeout:
                os.killpg(proc.pid, signal.SIGKILL)  # our own child's session only
                pid, status, usage = os.wait4(proc.pid, 0)
                break
            time.sleep(0.01)
        ended = time.monotonic()
        proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here, not by Popen
        out.seek(0)
        err.seek(0)
        stdout = out.read().decode("utf-8", "replace")
        stderr = err.read().decode("utf-8", "replace")
    return Outcome(
        returncode=proc.returncode,
        stdout=stdout,
        stderr=stderr,
        seconds=ended - start,
        max_rss_mb=usage.ru_maxrss / 1024 if usage else 0.0,
        leftovers=_reap_leftovers(token),
        after_signal_s=None if signalled is None else ended - signalled,
    )


def _with_token(token: str) -> list[int]:
    found = []
    needle = f"{TOKEN_VAR}={token}".encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes()
        except OSError:
            continue
        if needle in environ.split(b"\0"):
            found.append(int(entry.name))
    return found


def _reap_leftovers(token: str, grace_s: float = 3.0) -> tuple[int, ...]:
    """Processes of this case still alive after `grace_s` (a helper may finish its reply)."""
    deadline = time.monotonic() + grace_s
    while (alive := _with_token(token)) and time.monotonic() < deadline:
        time.sleep(0.05)
    for pid in alive:  # started by this case: end them so one failure does not pile up
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
    return tuple(alive)
