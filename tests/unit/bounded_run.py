"""Run one hostile case in a child process and measure what its user would live through.

A case runs as `python -c CODE ARGS` (or `python -m localbvi …`) in a new session with a unique
environment token, so that everything it starts — the chat-template helper included — can be
found afterwards in /proc. Memory: a `sitecustomize` on PYTHONPATH makes every Python process
of the case write its peak RSS (VmHWM) and that of the children it waited for when it exits.
(`os.wait4`'s figure would not do: a forked child's peak starts at its parent's size, and the
parent here is pytest.) Linux only.
"""

from __future__ import annotations

import contextlib
import json
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
_REPORT_VAR = "LOCALBVI_TEST_RSS_DIR"
_SITECUSTOMIZE = f"""
import atexit, json, os, resource

def _report(where=os.environ.get({_REPORT_VAR!r})):
    peak = 0
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                peak = int(line.split()[1])
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    with open(os.path.join(where, str(os.getpid())), "w") as f:
        json.dump([peak, children], f)

if os.environ.get({_REPORT_VAR!r}):
    atexit.register(_report)  # first registered, so it runs last: after helpers are reaped
"""


@dataclass(frozen=True)
class Outcome:
    returncode: int
    stdout: str
    stderr: str
    seconds: float
    """From start to exit."""
    max_rss_mb: float
    """Peak resident memory of any Python process of the case (0 if none could say)."""
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
    with (
        tempfile.TemporaryFile() as out,
        tempfile.TemporaryFile() as err,
        tempfile.TemporaryDirectory() as site,
    ):
        reports = Path(site) / "reports"
        reports.mkdir()
        (Path(site) / "sitecustomize.py").write_text(_SITECUSTOMIZE, encoding="utf-8")
        path = os.pathsep.join(p for p in (site, os.environ.get("PYTHONPATH")) if p)
        env = {**os.environ, TOKEN_VAR: token, _REPORT_VAR: str(reports), "PYTHONPATH": path}
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
        status = 0
        while True:
            pid, status = os.waitpid(proc.pid, os.WNOHANG)
            now = time.monotonic()
            if pid:
                break
            if signal_at is not None and signalled is None and now - start >= signal_at[0]:
                os.kill(proc.pid, signal_at[1])
                signalled = now
            if now - start > timeout:
                os.killpg(proc.pid, signal.SIGKILL)  # our own child's session only
                pid, status = os.waitpid(proc.pid, 0)
                break
            time.sleep(0.01)
        ended = time.monotonic()
        proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here, not by Popen
        out.seek(0)
        err.seek(0)
        stdout = out.read().decode("utf-8", "replace")
        stderr = err.read().decode("utf-8", "replace")
        leftovers = _reap_leftovers(token)
        peaks = [max(json.loads(r.read_text())) for r in reports.iterdir()]
    return Outcome(
        returncode=proc.returncode,
        stdout=stdout,
        stderr=stderr,
        seconds=ended - start,
        max_rss_mb=max(peaks, default=0) / 1024,
        leftovers=leftovers,
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
