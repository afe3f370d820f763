"""Helpers shared by the tests: waiting on a condition, reading the app's screen, fixed models.

Import them with `from tests.helpers import ...` (pytest puts the repo root on `sys.path`,
see `pythonpath` in pyproject.toml). Fixtures stay in the conftest.py files.
"""

from __future__ import annotations

import asyncio
import io
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from textual.pilot import Pilot

    from localbvi.tui import LocalbviApp
    from localbvi.tui.screens.compare import CompareScreen
    from localbvi.tui.services import StaticServices
    from localbvi.tui.state import AppSettings

from localbvi.engine.fake import FakeEngine
from localbvi.engine.types import Alternative, Event, Message, Sampling, TokenEvent
from localbvi.tui.state import AppSettings, ModelChoice

REPO = Path(__file__).resolve().parents[1]
"""The repository root (the app runs from here in the terminal tests)."""

SIZE = (100, 32)
"""Fixed terminal size of every Pilot and snapshot test under tests/app."""

BASE = ModelChoice(
    ref="demo-base",
    display_name="Demo 270M",
    kind="base",
    quant="Q4_K_M",
    size=253_000_000,
    path="/models/demo-270m-base.gguf",
    ram_fit="fits",
    source="catalog",
)
INSTRUCT = ModelChoice(
    ref="demo-it",
    display_name="Demo 270M IT",
    kind="instruct",
    quant="Q4_K_M",
    size=253_000_000,
    path="/models/demo-270m-it.gguf",
    ram_fit="fits",
    source="catalog",
)
BIG_BASE = ModelChoice(
    ref="big-base",
    display_name="Big 8B",
    kind="base",
    quant="Q4_K_M",
    size=4_900_000_000,
    ram_fit="tight",
    gated=True,
)
BIG_INSTRUCT = ModelChoice(
    ref="big-it",
    display_name="Big 8B Instruct",
    kind="instruct",
    quant="Q4_K_M",
    size=4_900_000_000,
    ram_fit="tight",
    gated=True,
)
IMPORTED = ModelChoice(
    ref="/models/my-finetune.gguf",
    display_name="my-finetune.gguf",
    kind=None,
    quant="Q8_0",
    size=300_000_000,
    path="/models/my-finetune.gguf",
    ram_fit="fits",
    source="imported",
)

AppFactory = Callable[..., "LocalbviApp"]
"""What the `fake_app` fixture (tests/app/conftest.py) returns: keyword arguments → an app."""


def static_services(*, online: bool = True, on_disk: bool = True) -> StaticServices:
    """Two catalog pairs (one on disk) and an imported file; the big pair downloads."""
    from localbvi.tui.services import StaticServices

    base, instruct = (
        (BASE, INSTRUCT)
        if on_disk
        else (
            ModelChoice(**{**BASE.__dict__, "path": None}),
            ModelChoice(**{**INSTRUCT.__dict__, "path": None}),
        )
    )
    return StaticServices(
        pairs=[(base, instruct), (BIG_BASE, BIG_INSTRUCT)],
        local=[IMPORTED] + ([BASE, INSTRUCT] if on_disk else []),
        downloads={
            "big-base": "/models/big-8b-base.gguf",
            "big-it": "/models/big-8b-it.gguf",
            "demo-base": BASE.path or "",
            "demo-it": INSTRUCT.path or "",
        },
        online=online,
    )


def wait_for(
    condition: Callable[[], bool],
    timeout: float,
    what: str = "",
    *,
    interval: float = 0.05,
    detail: Callable[[], str] | None = None,
) -> None:
    """Poll `condition()` from a plain (non-async) test instead of sleeping a guessed time.

    On timeout the error names `what` and, when given, `detail()` (e.g. a terminal's screen).
    """
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            extra = f"\n{detail()}" if detail is not None else ""
            raise AssertionError(f"timed out waiting for {what or condition}{extra}")
        time.sleep(interval)


async def wait_until(
    pilot: Pilot[Any], condition: Callable[[], bool], timeout: float = 10.0, what: str = ""
) -> None:
    """Let the app run until `condition()` holds (instead of sleeping a guessed time)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or condition}")
        await pilot.pause(0.02)
        await asyncio.sleep(0)


def screen_text(app: LocalbviApp) -> str:
    """The terminal as the user sees it right now, as plain text."""
    from rich.console import Console

    width, height = app.size
    console = Console(
        width=width,
        height=height,
        file=io.StringIO(),
        force_terminal=True,
        color_system="truecolor",
        record=True,
        legacy_windows=False,
        safe_box=False,
    )
    console.print(
        app.screen._compositor.render_update(full=True, screen_stack=app._background_screens)
    )
    return console.export_text(styles=False)


def track_notifications(app: LocalbviApp) -> LocalbviApp:
    """Record every notification (toasts expire, so the app's own list forgets them)."""
    seen: list[str] = []
    original = app.notify

    def notify(message: str, *, title: str = "", **kwargs: Any) -> None:
        seen.append(f"{title}: {message}")
        original(message, title=title, **kwargs)

    app.notify = notify  # type: ignore[method-assign]
    app._seen_notifications = seen  # type: ignore[attr-defined]
    return app


def notifications(app: LocalbviApp) -> list[str]:
    """Every notification shown so far (title: message), oldest first."""
    seen: list[str] = app._seen_notifications  # type: ignore[attr-defined]
    return seen


class ProbsFakeEngine(FakeEngine):
    """A FakeEngine whose tokens carry alternatives (the real engine's `top_probs`)."""

    def _with_alternatives(self, events: Iterator[Event], sampling: Sampling) -> Iterator[Event]:
        for event in events:
            if isinstance(event, TokenEvent) and sampling.top_probs:
                event = TokenEvent(
                    event.text,
                    event.id,
                    (
                        Alternative(event.text, event.id, 0.6),
                        Alternative(" maybe", 900 + event.id, 0.3),
                        Alternative(" never", 950 + event.id, 0.05),
                    ),
                )
            yield event

    def complete(self, prompt: str | Sequence[int], sampling: Sampling) -> Iterator[Event]:
        return self._with_alternatives(super().complete(prompt, sampling), sampling)

    def chat(self, messages: Sequence[Message], sampling: Sampling) -> Iterator[Event]:
        return self._with_alternatives(super().chat(messages, sampling), sampling)


def lab_app(settings: AppSettings | None = None, **engine: Any) -> LocalbviApp:
    """The app on a FakeEngine that opens INSTRUCT, with the BASE/INSTRUCT pair listed."""
    from localbvi.tui import make_app
    from localbvi.tui.services import StaticServices

    fake = FakeEngine(**engine)
    services = StaticServices(pairs=[(BASE, INSTRUCT)], local=[BASE, INSTRUCT])
    return make_app(
        lambda: fake,
        model_ref=INSTRUCT.path,
        services=services,
        settings=settings,
        check_online=False,
    )


def fake_pair(**engine: Any) -> tuple[ProbsFakeEngine, ProbsFakeEngine]:
    """Two scripted engines holding BASE and INSTRUCT, for a compare view handed its engines."""
    from localbvi.engine.types import LoadConfig

    base, instruct = ProbsFakeEngine(**engine), ProbsFakeEngine(**engine)
    base.load(str(BASE.path), LoadConfig())
    instruct.load(str(INSTRUCT.path), LoadConfig())
    return base, instruct


async def open_compare(pilot: Pilot[Any], app: LocalbviApp, screen: CompareScreen) -> CompareScreen:
    """Push `screen` once the app has its model; return when both its sides are loaded."""
    await wait_until(pilot, lambda: app.model is not None, what="the app's model")
    app.push_screen(screen)
    await wait_until(
        pilot,
        lambda: app.screen is screen and screen.engines is not None and screen.is_mounted,
        what="the compare screen",
    )
    await pilot.pause()
    return screen


async def run_both(pilot: Pilot[Any], screen: CompareScreen, prompt: str) -> None:
    """Run `prompt` in the compare view and wait until both sides have finished."""
    screen.run_prompt(prompt)
    await wait_until(pilot, lambda: not screen.running and len(screen.runs) == 2)


def compare_argv(base: Path, instruct: Path, *args: str) -> list[str]:
    """`localbvi compare --base BASE --instruct INSTRUCT ARGS…` as `main` takes it."""
    return ["compare", "--base", str(base), "--instruct", str(instruct), *args]


class FakeEngines:
    """An engine factory that keeps each FakeEngine it makes, in order (`made`)."""

    def __init__(self, **engine: Any) -> None:
        self.engine = engine
        self.made: list[FakeEngine] = []

    def __call__(self) -> FakeEngine:
        self.made.append(FakeEngine(**self.engine))
        return self.made[-1]


REAL_SETTINGS = AppSettings(temperature=0.0, top_k=1, max_tokens=12, n_ctx=1024, n_threads=2)
"""Greedy, short replies: the real-engine app tests stay quick and give the same text each run."""


def real_app(model: Path | None, mode: str | None = None, **settings: object) -> LocalbviApp:
    """The app on the real engine (llama.cpp in a child process) and the real store."""
    from localbvi.engine.local import LocalEngine
    from localbvi.tui import make_app
    from localbvi.tui.services import Services

    chosen = AppSettings(**{**REAL_SETTINGS.__dict__, **settings})  # type: ignore[arg-type]
    app = make_app(
        LocalEngine,
        model_ref=str(model) if model else None,
        mode=mode,
        services=Services(),
        settings=chosen,
        check_online=False,
    )
    return track_notifications(app)


# -- the real program in tmux (tests/terminal) ---------------------------------------------


class Tmux:
    """A private tmux server (its own socket, so it inherits this test's environment)."""

    def __init__(self, socket: str) -> None:
        self.socket = socket

    def run(self, *args: str) -> str:
        out = subprocess.run(
            ["tmux", "-L", self.socket, *args], capture_output=True, text=True, check=True
        )
        return out.stdout

    def send(self, *keys: str) -> None:
        self.run("send-keys", "-t", "app", *keys)

    def type(self, text: str) -> None:
        self.run("send-keys", "-t", "app", "-l", text)

    def screen(self) -> str:
        return self.run("capture-pane", "-p", "-t", "app")

    def alternate_on(self) -> bool:
        return self.run("display-message", "-p", "-t", "app", "#{alternate_on}").strip() == "1"


def wait_until_on_screen(
    condition: Callable[[], bool], timeout: float, what: str, tmux: Tmux
) -> None:
    """Poll instead of sleeping; on timeout show what the terminal had."""
    wait_for(condition, timeout, what, interval=0.1, detail=lambda: f"screen:\n{tmux.screen()}")
