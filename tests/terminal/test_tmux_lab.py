"""The lab's new features in a real terminal (tmux), on the real Gemma 3 270M, offline.

One app launch is shared by the three scenarios, which run in order as a user would meet them:
the base model chatting through in-context examples, the compare view with three columns
(raw base | base in context | instruct), and the token shift view opened from it.
"""

from __future__ import annotations

import os
import re
import shlex
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
    pytest.mark.timeout(300),
    pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed"),
]

QUESTION = "What is 2+2?"
MAX_TOKENS = 12
"""Short replies keep the file fast on two busy cores (the settings file says so)."""

ISOLATED = ("LOCALBVI_CONFIG_DIR", "LOCALBVI_DATA_DIR", "LOCALBVI_CACHE_DIR", "HF_HOME")
UNSET = ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_TOKEN_PATH", "HF_ENDPOINT", "LOCALBVI_SETTINGS")


def _home_env(home: Path) -> dict[str, str]:
    """Config, data, caches and the HF cache in `home`, offline (as conftest's isolated_home)."""
    env = {name: str(home / name.lower()) for name in ISOLATED}
    env["HF_HUB_CACHE"] = str(home / "hf_home" / "hub")
    env["HF_HUB_OFFLINE"] = "1"
    env["HF_HUB_DISABLE_TELEMETRY"] = "1"
    for var in ("LMSTUDIO_MODELS", "OLLAMA_MODELS", "LLAMA_CACHE", "GPT4ALL_MODELS"):
        env[var] = str(home / "other-tools" / var.lower())
    return env


@pytest.fixture(scope="module")
def lab(
    gemma_base: Path, gemma_instruct: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Tmux]:
    """`localbvi --offline --model BASE --mode chat` in tmux; the instruct copy imported first
    (`localbvi import`), as a user would, so the compare view's picker lists it."""
    home = tmp_path_factory.mktemp("lab-home")
    env = _home_env(home)
    config = Path(env["LOCALBVI_CONFIG_DIR"])
    config.mkdir(parents=True)
    (config / "settings.toml").write_text(
        f"[sampling]\ntemperature = 0\nmax_tokens = {MAX_TOKENS}\n", encoding="utf-8"
    )
    process_env = {k: v for k, v in os.environ.items() if k not in UNSET} | env
    imported = subprocess.run(
        [sys.executable, "-m", "localbvi", "import", str(gemma_instruct)],
        env=process_env,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
    )
    assert imported.returncode == 0, imported.stderr
    assert "imported" in imported.stdout

    session = Tmux(f"localbvi-lab-{os.getpid()}-{time.monotonic_ns()}")
    settings = " ".join(f"{k}={shlex.quote(v)}" for k, v in env.items())
    unset = " ".join(f"-u {name}" for name in UNSET)
    shell = f"env {unset} {settings} PS1='READY$ ' bash --norc --noprofile"
    session.run("new-session", "-d", "-s", "app", "-x", "120", "-y", "36", shell)
    try:
        wait_until(lambda: "READY$" in session.screen(), 20, "the shell prompt", session)
        session.type(
            f"cd {shlex.quote(str(REPO))} && {shlex.quote(sys.executable)} -m localbvi "
            f"--offline --model {shlex.quote(str(gemma_base))} --mode chat"
        )
        session.send("Enter")
        yield session
        session.send("C-q")
        wait_until(lambda: not session.alternate_on(), 30, "the app to quit", session)
        wait_until(
            lambda: session.screen().rstrip().endswith("READY$"), 30, "the shell prompt", session
        )
        assert "Traceback" not in session.screen()
    finally:
        subprocess.run(["tmux", "-L", session.socket, "kill-server"], capture_output=True)


def _no_traceback(screen: str) -> str:
    assert "Traceback" not in screen, screen
    return screen


def _status_line(screen: str) -> str:
    """The main screen's status bar: the line naming the model's kind."""
    return next((line for line in screen.splitlines() if "│ base │" in line), "")


def _reply(screen: str, heading: str) -> str:
    """The transcript's text under `heading`, up to its stats line."""
    lines = [line.strip() for line in screen.splitlines()]
    start = lines.index(f"█ {heading}") + 1
    body = []
    for line in lines[start:]:
        if " tokens · " in line or not line.startswith("█"):
            break
        body.append(line.removeprefix("█").strip())
    return "\n".join(body).strip()


def _columns(screen: str) -> list[str]:
    """The compare panes' text, left to right (one string per boxed column)."""
    columns: list[list[str]] = []
    for line in screen.splitlines():
        line = line.strip()
        if not (line.startswith("│") and line.endswith("│")):
            continue
        cells = [cell.strip() for cell in line[1:-1].split("││")]
        columns = columns or [[] for _ in cells]
        if len(cells) == len(columns):
            for column, cell in zip(columns, cells, strict=True):
                column.append(cell)
    return ["\n".join(c) for c in columns]


def _flat(text: str) -> str:
    """Pane text with its wrapping undone (headings and stats wrap in narrow columns)."""
    return " ".join(text.split())


def test_base_model_chats_through_incontext_examples(lab: Tmux) -> None:
    """The offline demo: only a base model, chat mode → it answers through in-context
    examples, says so, and never shows the frame's `# Query`; ctrl+t → completion."""
    wait_until(lambda: "in-context chat mode" in _status_line(lab.screen()), 120, "load", lab)
    screen = _no_traceback(lab.screen())
    assert "Base model, chat through in-context examples" in screen  # the banner

    lab.type(QUESTION)
    lab.send("Enter")
    heading = "Base model · in-context examples"
    wait_until(lambda: f"█ {heading}" in lab.screen(), 60, "the reply's heading", lab)
    wait_until(lambda: " tokens · " in lab.screen(), 120, "the reply to end", lab)
    screen = _no_traceback(lab.screen())
    reply = _reply(screen, heading)
    assert reply, screen
    assert "# Query" not in reply and "# Answer" not in reply, reply
    assert QUESTION in screen  # the user's turn

    lab.send("C-t")
    wait_until(lambda: "completion mode" in _status_line(lab.screen()), 30, "ctrl+t", lab)
    screen = _no_traceback(lab.screen())
    assert "in-context" not in _status_line(screen)
    assert "Base model, raw completion" in screen


def test_compare_three_columns(lab: Tmux) -> None:
    """Compare with the instruct copy picked for the right side, ctrl+g for the in-context
    column: three columns, each with its heading and its text."""
    lab.send("C-b")
    wait_until(
        lambda: lab.screen().count("│ ready ") == 2, 120, "the compare view's two models", lab
    )
    lab.send("C-n")
    wait_until(lambda: "Type to filter" in lab.screen(), 30, "the picker", lab)
    lab.type("instruct-shaped")
    wait_until(
        lambda: "instruct-shaped" in lab.screen() and "on disk" in lab.screen(),
        30,
        "the imported instruct copy in the picker",
        lab,
    )
    lab.send("Enter")
    wait_until(
        lambda: "Type to filter" not in (s := lab.screen()) and s.count("│ ready ") == 2,
        120,
        "the instruct side's new model",
        lab,
    )
    lab.send("C-g")
    wait_until(lambda: len(_columns(lab.screen())) == 3, 30, "three columns", lab)

    lab.type(QUESTION)
    lab.send("Enter")
    wait_until(lambda: lab.screen().count("tok/s") == 3, 240, "all three sides to end", lab)
    screen = _no_traceback(lab.screen())
    base, incontext, instruct = (_flat(c) for c in _columns(screen))
    assert base.startswith("base · Gemma 3 270m · raw completion"), base
    assert incontext.startswith("in context · Gemma 3 270m · base + in-context examples")
    assert instruct.startswith("instruct · Gemma 3 270m · chat template"), instruct
    for column, heading in ((base, "raw completion"), (incontext, "examples")):
        text = column.split(heading, 1)[1].split(" tokens · ")[0]
        assert re.search(r"\w", text), f"no text under the heading: {column}"
    answer = instruct.split("chat template", 1)[1].split(" tokens · ")[0]
    assert re.search(r"\w", answer), instruct
    assert "# Query" not in incontext.split(" tokens · ")[0], incontext

    # The right side runs the instruct copy: its X-ray is the question in Gemma's template.
    lab.send("F3")
    wait_until(lambda: "Prompt X-ray" in lab.screen(), 30, "the instruct side's X-ray", lab)
    wait_until(lambda: "<start_of_turn>user" in lab.screen(), 30, "the chat template", lab)
    lab.send("Escape")
    wait_until(lambda: "Prompt X-ray" not in lab.screen(), 30, "the X-ray to close", lab)


def test_token_shift_view(lab: Tmux) -> None:
    """f9 after the compare run: the three percentages (≈100 % together), → moves the
    selected token and the alternatives panel follows, escape closes."""
    figures_re = re.compile(
        r"(\d+) tokens:\s+unshifted ([\d.]+) % \((\d+)\)\s+marginal ([\d.]+) % \((\d+)\)"
        r"\s+shifted ([\d.]+) % \((\d+)\)"
    )
    lab.send("F9")
    wait_until(lambda: "tokens scored" in lab.screen(), 240, "the shift figures", lab)
    # The terminal may show the status line a frame before the panels: wait for the figures.
    wait_until(lambda: figures_re.search(lab.screen()) is not None, 30, "the figures", lab)
    screen = _no_traceback(lab.screen())
    figures = figures_re.search(screen)
    assert figures is not None, screen
    n, u, nu, m, nm, s, ns = figures.groups()
    assert abs(float(u) + float(m) + float(s) - 100) <= 0.3, figures.group(0)
    assert int(nu) + int(nm) + int(ns) == int(n) >= 2

    def panel(screen: str) -> str:
        """The selected token and the base model's alternatives (the right column)."""
        return _columns(screen)[-1]

    def alternatives(panel_text: str) -> list[str]:
        return [line for line in panel_text.splitlines() if "%  " in line]

    def shows_token(i: int) -> bool:
        now = panel(lab.screen())
        return f"token {i} of {n}:" in now and bool(alternatives(now))

    wait_until(lambda: shows_token(1), 30, "the first token's alternatives", lab)
    first = panel(_no_traceback(lab.screen()))
    lab.send("Right")
    wait_until(lambda: shows_token(2), 30, "the next token's alternatives", lab)
    second = panel(_no_traceback(lab.screen()))

    assert alternatives(second) and alternatives(second) != alternatives(first), second

    lab.send("Escape")
    wait_until(
        lambda: "tokens scored" not in (s := lab.screen()) and "Compare:" in s,
        30,
        "the compare view again",
        lab,
    )
    _no_traceback(lab.screen())
