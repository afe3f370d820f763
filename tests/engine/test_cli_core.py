"""The headless CLI contract, run as a real process: output, JSON Lines, exit codes."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

GEMMA_RENDERED = (
    "<bos><start_of_turn>user\nBe helpful.\n\nHello<end_of_turn>\n<start_of_turn>model\n"
)


def cli(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "localbvi", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=180,
    )


def assert_one_readable_error(proc: subprocess.CompletedProcess[str]) -> None:
    assert "Traceback" not in proc.stderr and "Traceback" not in proc.stdout
    assert proc.stderr.startswith("localbvi: error: "), proc.stderr
    assert proc.stderr.count("\n") == 1


def test_complete_json_lines(gemma_base: Path) -> None:
    proc = cli(
        "complete",
        "-m",
        str(gemma_base),
        "--temperature",
        "0",
        "--max-tokens",
        "8",
        "--json",
        "What is 2+2?",
    )
    assert proc.returncode == 0, proc.stderr
    records = [json.loads(line) for line in proc.stdout.splitlines()]
    *tokens, done = records
    assert all(r["type"] == "token" and isinstance(r["text"], str) for r in tokens)
    assert done["type"] == "done"
    assert done["finish_reason"] == "length"
    assert done["tokens"] == 8 == len([r for r in tokens if r["id"] >= 0])
    assert done["ttft_s"] > 0 and done["tokens_per_s"] > 0 and done["load_s"] > 0
    assert "2+2" in "".join(r["text"] for r in tokens)


def test_complete_text_streams_to_stdout_and_stats_to_stderr(gemma_base: Path) -> None:
    proc = cli(
        "complete",
        "-m",
        str(gemma_base),
        "--temperature",
        "0",
        "--max-tokens",
        "8",
        "--stop",
        "?",
        "What is 2+2?",
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "What is 2+2"
    assert "tok/s" in proc.stderr and "stop string '?'" in proc.stderr


def test_render_prints_exactly_the_prompt(gemma_instruct: Path) -> None:
    proc = cli("render", "-m", str(gemma_instruct), "--system", "Be helpful.", "Hello")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == GEMMA_RENDERED
    assert "tokens of" in proc.stderr


def test_chat_one_reply_and_interactive_loop(gemma_instruct: Path) -> None:
    proc = cli(
        "chat",
        "-m",
        str(gemma_instruct),
        "--temperature",
        "0",
        "--max-tokens",
        "12",
        "--json",
        "Say hello.",
    )
    assert proc.returncode == 0, proc.stderr
    records = [json.loads(line) for line in proc.stdout.splitlines()]
    assert records[-1]["type"] == "done"
    assert "<end_of_turn>" not in "".join(r.get("text", "") for r in records)

    proc = cli(
        "chat",
        "-m",
        str(gemma_instruct),
        "--temperature",
        "0",
        "--max-tokens",
        "6",
        stdin="Hello\nHow are you?\n/exit\n",
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.count("tok/s") == 2  # two replies


def test_chat_on_a_base_model_is_one_clear_error(gemma_base: Path) -> None:
    proc = cli("chat", "-m", str(gemma_base), "Hello")
    assert proc.returncode == 1
    assert_one_readable_error(proc)
    assert "no chat template" in proc.stderr

    proc = cli("chat", "-m", str(gemma_base), "--json", "Hello")
    assert proc.returncode == 1
    record = json.loads(proc.stdout)
    assert record["type"] == "error" and "no chat template" in record["message"]


def test_info_json_and_corrupt_file(gemma_base: Path, tmp_path: Path) -> None:
    proc = cli("info", str(gemma_base), "--json")
    assert proc.returncode == 0, proc.stderr
    facts = json.loads(proc.stdout)
    assert facts["architecture"] == "gemma3"
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"GGUF\x03\x00\x00\x00" + b"\xff" * 40)
    proc = cli("info", str(bad))
    assert proc.returncode == 1
    assert_one_readable_error(proc)


@pytest.mark.parametrize(
    "args",
    [
        ("complete", "Hi"),  # no model
        ("complete", "-m", "x.gguf", "--gpu-layers", "lots", "Hi"),
        ("complete", "-m", "x.gguf", "--max-tokens", "0", "Hi"),
        ("frobnicate",),
    ],
)
def test_usage_errors_exit_2(args: tuple[str, ...]) -> None:
    proc = cli(*args)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert proc.stderr.count("\n") == 1 and "error: " in proc.stderr
    assert proc.stderr.endswith("--help')\n")


def test_missing_model_file_exits_1() -> None:
    proc = cli("complete", "-m", "/no/such/model.gguf", "Hi")
    assert proc.returncode == 1
    assert_one_readable_error(proc)


def test_doctor_reports_offload() -> None:
    proc = cli("doctor")
    assert proc.returncode == 0, proc.stderr
    assert "GPU offload" in proc.stdout and "llama-cpp-python" in proc.stdout


def test_settings_file_supplies_defaults_and_flags_win(
    gemma_base: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = tmp_path / "settings.toml"
    settings.write_text("[sampling]\nmax_tokens = 3\ntemperature = 0.0\n", encoding="utf-8")
    monkeypatch.setenv("LOCALBVI_SETTINGS", str(settings))
    proc = cli("complete", "-m", str(gemma_base), "--json", "--no-save", "Hello")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.splitlines()[-1])["tokens"] == 3
    proc = cli(
        "complete", "-m", str(gemma_base), "--json", "--no-save", "--max-tokens", "5", "Hello"
    )
    assert json.loads(proc.stdout.splitlines()[-1])["tokens"] == 5
    # A broken settings file is a warning, and the defaults still work.
    settings.write_text("[sampling\nmax_tokens = 3\n", encoding="utf-8")
    proc = cli("complete", "-m", str(gemma_base), "--json", "--no-save", "--max-tokens", "2", "Hi")
    assert proc.returncode == 0, proc.stderr
    assert "warning" in proc.stderr and "line 1" in proc.stderr


def test_complete_and_chat_are_recorded_as_sessions(gemma_base: Path, gemma_instruct: Path) -> None:
    assert (
        cli(
            "complete",
            "-m",
            str(gemma_base),
            "--temperature",
            "0",
            "--max-tokens",
            "4",
            "Once upon a time",
        ).returncode
        == 0
    )
    assert (
        cli(
            "chat",
            "-m",
            str(gemma_instruct),
            "--temperature",
            "0",
            "--max-tokens",
            "4",
            "Hello there",
        ).returncode
        == 0
    )
    assert (
        cli(
            "complete", "-m", str(gemma_base), "--max-tokens", "2", "--no-save", "Not saved"
        ).returncode
        == 0
    )
    proc = cli("sessions", "--json")
    assert proc.returncode == 0, proc.stderr
    listed = json.loads(proc.stdout)
    titles = [s["title"] for s in listed]
    assert titles == ["Hello there", "Once upon a time"]
    chat_id = listed[0]["id"]
    proc = cli("export", str(chat_id), "--format", "md")
    assert proc.returncode == 0, proc.stderr
    assert "Hello there" in proc.stdout


# -- Ctrl-C ----------------------------------------------------------------------------------


def _start(*args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "localbvi", *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def _interrupt(proc: subprocess.Popen[bytes]) -> tuple[float, str]:
    """SIGINT, as Ctrl-C sends; returns (seconds until the process ended, its stderr)."""
    started = time.monotonic()
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=15)
    finally:
        proc.kill()
    elapsed = time.monotonic() - started
    assert proc.stderr is not None
    return elapsed, proc.stderr.read().decode()


@pytest.mark.slow
def test_ctrl_c_mid_reply_exits_130_within_a_second(gemma_base: Path) -> None:
    proc = _start("complete", "-m", str(gemma_base), "--max-tokens", "4000", "Once upon a time")
    assert proc.stdout is not None
    assert proc.stdout.read(8)  # the reply is streaming
    elapsed, err = _interrupt(proc)
    assert proc.returncode == 130, err
    assert elapsed < 1.0, f"took {elapsed:.2f} s"
    assert "Traceback" not in err
    assert err.endswith("localbvi: interrupted\n")
    # What was shown is saved as cancelled, unless the engine took so long to stop that the
    # exit deadline came first (a loaded machine): then nothing, never a half-written row.
    for saved in json.loads(cli("sessions", "--json").stdout):
        export = json.loads(cli("export", str(saved["id"]), "--format", "json").stdout)
        assert export["messages"][0]["status"] == "cancelled"


@pytest.mark.slow
def test_ctrl_c_before_the_model_runs_exits_130(gemma_base: Path) -> None:
    proc = _start("complete", "-m", str(gemma_base), "-")  # waits for the prompt on stdin
    time.sleep(1.5)
    elapsed, err = _interrupt(proc)
    assert proc.returncode == 130, err
    assert elapsed < 1.0, f"took {elapsed:.2f} s"
    assert err == "localbvi: interrupted\n"


@pytest.mark.slow
def test_ctrl_c_in_a_chat_stops_the_reply_and_the_chat_goes_on(gemma_instruct: Path) -> None:
    proc = _start("chat", "-m", str(gemma_instruct), "--max-tokens", "4000", "--no-save")
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write(b"Tell me a very long story.\n")
    proc.stdin.flush()
    assert proc.stdout.read(8)
    proc.send_signal(signal.SIGINT)
    time.sleep(1.5)  # longer than the exit deadline: the chat must still be there
    assert proc.poll() is None
    _, err = proc.communicate(b"/exit\n", timeout=60)
    assert proc.returncode == 0, err
    assert b"(reply cancelled)" in err and b"Traceback" not in err
