"""The real program in a real terminal (tmux): launch, chat, quit, terminal restored."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import REPO, Tmux
from tests.helpers import wait_until_on_screen as wait_until

pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(240),
    pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed"),
]


def _reply_text(screen: str) -> str:
    """The text under the "Model" heading of the transcript ("" while none)."""
    lines = screen.splitlines()
    for i, line in enumerate(lines):
        if line.strip() == "█ Model" and i + 1 < len(lines):
            return lines[i + 1].replace("█", "").strip()
    return ""


@pytest.fixture
def tmux() -> Iterator[Tmux]:
    session = Tmux(f"localbvi-test-{os.getpid()}-{time.monotonic_ns()}")
    env_shell = "env PS1='READY$ ' bash --norc --noprofile"
    session.run("new-session", "-d", "-s", "app", "-x", "100", "-y", "30", env_shell)
    try:
        yield session
    finally:
        subprocess.run(["tmux", "-L", session.socket, "kill-server"], capture_output=True)


def test_chat_in_a_real_terminal(tmux: Tmux, gemma_instruct: Path) -> None:
    wait_until(lambda: "READY$" in tmux.screen(), 10, "the shell prompt", tmux)
    command = f"cd {REPO} && {sys.executable} -m localbvi --model {gemma_instruct} --mode chat"
    tmux.type(command)
    tmux.send("Enter")
    wait_until(lambda: "chat mode" in tmux.screen(), 60, "the app", tmux)
    wait_until(lambda: "instruct │" in tmux.screen(), 90, "the model to load", tmux)
    assert tmux.alternate_on()

    tmux.type("Hello")
    tmux.send("Enter")
    wait_until(lambda: "Model" in tmux.screen(), 30, "the reply to start", tmux)
    wait_until(lambda: _reply_text(tmux.screen()) != "", 60, "tokens to appear", tmux)
    # The default reply length is long for 2 busy cores: stop it, as a user would.
    if "tok/s" not in tmux.screen():
        tmux.send("Escape")
    wait_until(lambda: "tok/s" in tmux.screen(), 60, "the reply to end", tmux)
    screen = tmux.screen()
    assert "Hello" in screen
    assert "Traceback" not in screen

    tmux.send("C-q")
    wait_until(lambda: not tmux.alternate_on(), 20, "the alternate screen to be left", tmux)
    wait_until(lambda: tmux.screen().rstrip().endswith("READY$"), 20, "the shell prompt", tmux)
    assert "Traceback" not in tmux.screen()
