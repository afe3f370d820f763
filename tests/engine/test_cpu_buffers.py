"""Runs on every x86-64 CPU: a crash in llama.cpp's first decode with CPU extra buffers on
(llama.cpp's AMX bug, issue 20824) is survived, served anyway and remembered.

The crash is injected (`LOCALBVI_FAULT_FIRST_DECODE`, read by the llama.cpp child) so these
tests prove the fallback on any machine; on an AMX machine the real crash takes the same path.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from localbvi.cli import main
from localbvi.engine import DoneEvent, LoadConfig, LocalEngine, Sampling, TokenEvent, cpu_buffers
from localbvi.errors import EngineCrashedError

GREEDY = Sampling(temperature=0.0, max_tokens=8)
CONFIG = LoadConfig(n_ctx=512, n_threads=2)
INJECTED = "injected crash in the first decode"


def run(events: Any) -> tuple[str, DoneEvent]:
    text, done = "", None
    for event in events:
        if isinstance(event, TokenEvent):
            text += event.text
        else:
            done = event
    assert done is not None
    return text, done


@pytest.fixture
def crash_with_extra_buffers(monkeypatch: pytest.MonkeyPatch) -> None:
    """The llama.cpp child segfaults at its first decode while extra buffers are on."""
    monkeypatch.setenv("LOCALBVI_FAULT_FIRST_DECODE", "extra-buffers")


# -- the decision and where it is kept (no model needed) ----------------------------------------


def test_an_unknown_machine_is_tried_once_with_a_warm_up() -> None:
    plan = cpu_buffers.plan("auto")
    assert plan.use_extra_buffers and plan.warm_up and plan.retry_safe


def test_a_remembered_crash_goes_straight_to_the_safe_setting() -> None:
    cpu_buffers.remember(False, cpu_buffers.CRASH_NOTE)
    plan = cpu_buffers.plan("auto")
    assert not plan.use_extra_buffers and not plan.warm_up
    assert plan.reason == cpu_buffers.CRASH_NOTE


def test_a_remembered_success_skips_the_warm_up_but_keeps_one_retry() -> None:
    cpu_buffers.remember(True, "a warm-up decode with them on worked")
    plan = cpu_buffers.plan("auto")
    assert plan.use_extra_buffers and not plan.warm_up and plan.retry_safe


def test_forced_settings_ignore_what_was_remembered() -> None:
    cpu_buffers.remember(False, cpu_buffers.CRASH_NOTE)
    assert cpu_buffers.plan("on").use_extra_buffers
    assert not cpu_buffers.plan("on").retry_safe
    cpu_buffers.remember(True, "worked")
    assert not cpu_buffers.plan("off").use_extra_buffers


def test_another_build_or_cpu_is_tried_again() -> None:
    path = cpu_buffers.decision_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    # A decision for another llama.cpp build (e.g. before an upgrade) does not apply here.
    path.write_text(json.dumps({"0123456789abcdef-fedcba9876543210": {"extra_buffers": False}}))
    assert cpu_buffers.recall() is None
    assert cpu_buffers.plan("auto").warm_up


@pytest.mark.parametrize(
    "content", [b"{not json", b"[1, 2]", b'{"x": 1}', b"\x00" * 10, b"{" * 300_000]
)
def test_an_unreadable_decision_file_counts_as_none(content: bytes) -> None:
    path = cpu_buffers.decision_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    assert cpu_buffers.recall() is None
    cpu_buffers.remember(False, "x")  # and it is replaced by a good one
    known = cpu_buffers.recall()
    assert known is not None and known["extra_buffers"] is False


def test_an_unwritable_cache_only_means_deciding_again(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOCALBVI_CACHE_DIR", "/dev/null/cache")  # under a file: never writable
    cpu_buffers.remember(False, "x")
    assert cpu_buffers.recall() is None


def test_the_build_id_follows_the_installed_library() -> None:
    # Same process, same install: stable. (Its inputs are the version and the libraries' stats.)
    assert cpu_buffers.build_id() == cpu_buffers.build_id()
    assert len(cpu_buffers.build_id()) == 16 and len(cpu_buffers.cpu_id()) == 16


# -- the real engine ----------------------------------------------------------------------------


@pytest.mark.slow
def test_first_load_crash_is_survived_and_the_reply_arrives(
    gemma_base: Path, crash_with_extra_buffers: None
) -> None:
    with LocalEngine() as engine:
        info = engine.load(gemma_base, CONFIG)
        assert not info.extra_buffers
        assert info.extra_buffers_note == cpu_buffers.CRASH_NOTE
        assert info.device == "CPU (extra buffers off)"
        text, done = run(engine.complete("What is 2+2?", GREEDY))
        assert done.finish_reason == "length" and done.tokens == 8 and text.strip()
        assert engine.logs()[0] == f"localbvi: {cpu_buffers.CRASH_NOTE}"
    known = cpu_buffers.recall()
    assert known is not None and known["extra_buffers"] is False
    assert "SIGSEGV" in known["reason"]

    # The next load goes straight to the safe setting: no crash, no second load.
    with LocalEngine() as engine:
        info = engine.load(gemma_base, CONFIG)
        assert not info.extra_buffers
        assert not any(INJECTED in line for line in engine.logs())
        text2, _ = run(engine.complete("What is 2+2?", GREEDY))
        assert text2 == text


@pytest.mark.slow
def test_a_crash_in_the_first_request_is_retried_once_in_the_safe_setting(
    gemma_base: Path, crash_with_extra_buffers: None
) -> None:
    # This CPU was found fine with another model: no warm-up, but the first decode is guarded.
    cpu_buffers.remember(True, "a warm-up decode with them on worked")
    with LocalEngine() as engine:
        info = engine.load(gemma_base, CONFIG)
        assert info.extra_buffers
        text, done = run(engine.complete("What is 2+2?", GREEDY))
        assert text.strip() and done.tokens == 8
        assert done.notice == cpu_buffers.CRASH_NOTE
        assert engine.info is not None and not engine.info.extra_buffers
        # Later requests run on the reloaded model without notice.
        _, again = run(engine.complete("What is 2+2?", GREEDY))
        assert again.notice == "" and again.tokens == 8
    known = cpu_buffers.recall()
    assert known is not None and known["extra_buffers"] is False


@pytest.mark.slow
def test_a_crash_in_the_safe_setting_is_the_usual_clear_error(
    gemma_base: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LOCALBVI_FAULT_FIRST_DECODE", "always")
    with LocalEngine() as engine:
        engine.load(gemma_base, replace_config(cpu_extra_buffers="off"))
        started = time.monotonic()
        with pytest.raises(EngineCrashedError, match=r"killed \(SIGSEGV\).*Load the model again"):
            run(engine.complete("What is 2+2?", GREEDY))
        assert time.monotonic() - started < 10  # one try, never a loop
        assert engine.info is None


@pytest.mark.slow
def test_forced_on_is_not_second_guessed(gemma_base: Path, crash_with_extra_buffers: None) -> None:
    with LocalEngine() as engine:
        info = engine.load(gemma_base, replace_config(cpu_extra_buffers="on"))
        assert info.extra_buffers
        with pytest.raises(EngineCrashedError, match="SIGSEGV"):
            run(engine.complete("What is 2+2?", GREEDY))
    assert cpu_buffers.recall() is None


@pytest.mark.slow
def test_forced_off_says_so(gemma_base: Path) -> None:
    with LocalEngine() as engine:
        info = engine.load(gemma_base, replace_config(cpu_extra_buffers="off"))
        assert not info.extra_buffers
        assert info.extra_buffers_note == "turned off in the settings"
        text, _ = run(engine.complete("What is 2+2?", GREEDY))
        assert text.strip()


@pytest.mark.slow
def test_cli_complete_and_doctor_on_a_crashing_cpu(
    gemma_base: Path, crash_with_extra_buffers: None, capsys: pytest.CaptureFixture[str]
) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "localbvi", "complete", "-m", str(gemma_base), "--no-save",
         "--temperature", "0", "--max-tokens", "8", "--ctx", "512", "What is 2+2?"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip()
    assert "Traceback" not in proc.stderr
    assert cpu_buffers.CRASH_NOTE in proc.stderr  # in the stats line

    assert main(["doctor", "--json"]) == 0
    facts = json.loads(capsys.readouterr().out)["cpu_extra_buffers"]
    assert facts["decision"] == "off" and "crashed" in facts["reason"]
    assert facts["setting"] == "auto"
    assert main(["doctor"]) == 0
    out = capsys.readouterr().out
    assert "extra buffers" in out and "in use: off: CPU extra buffers off" in out


@pytest.mark.slow
def test_the_llama_child_dies_with_its_parent_even_by_kill_9(gemma_base: Path) -> None:
    script = (
        "import sys, time\n"
        "from localbvi.engine import LocalEngine, LoadConfig\n"
        "e = LocalEngine()\n"
        f"e.load({str(gemma_base)!r}, LoadConfig(n_ctx=256))\n"
        "print(e.pid, flush=True)\n"
        "time.sleep(60)\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert parent.stdout is not None
    child_pid = int(parent.stdout.readline())
    os.kill(parent.pid, signal.SIGKILL)
    parent.wait(timeout=10)
    assert gone(child_pid, timeout=5), "the llama.cpp child outlived its parent"


def gone(pid: int, timeout: float) -> bool:
    """True once `pid` has exited (a zombie nobody reaped counts as exited)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            return True
        if state in ("Z", "X"):
            return True
        time.sleep(0.05)
    return False


def replace_config(**changes: Any) -> LoadConfig:
    from dataclasses import replace

    return replace(CONFIG, **changes)
