"""How responsive is the app? Startup to first screen, and streaming at 500 tokens/s.

1. Startup: a fresh Python process runs the app (headless) until its first screen is up,
   then exits; the same for a bare Textual "hello" app, alternating, several reps. The
   figure that matters is the ratio of medians (aim: at most 1.3x).
2. Streaming: the app with a FakeEngine emitting 500 tokens/s, in chat and completion mode.
   Reports tokens shown vs emitted, how many UI updates carried them (batched per frame),
   and the latency of keypresses sent every 50 ms during the stream (median / p95).

Run from the repo root (prints figures; nothing is asserted):

    .venv/bin/python benchmarks/bench_tui.py [--reps 7] [--tokens 1000]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

HELLO_APP = """
import sys, time
T0 = time.perf_counter()
from textual.app import App
from textual.widgets import Footer, Label

class Hello(App[None]):
    def compose(self):
        yield Label("hello")
        yield Footer()

async def first_screen(pilot):
    await pilot.pause()
    print(time.perf_counter() - T0)
    pilot.app.exit()

Hello().run(headless=True, auto_pilot=first_screen)
"""

LOCALBVI_APP = """
import sys, time
T0 = time.perf_counter()
from localbvi.tui import make_app
from localbvi.tui.screens.welcome import WelcomeScreen

async def first_screen(pilot):
    while not isinstance(pilot.app.screen, WelcomeScreen):
        await pilot.pause()
    await pilot.pause()
    print(time.perf_counter() - T0)
    pilot.app.exit()

make_app(check_online=False).run(headless=True, auto_pilot=first_screen)
"""


def _time_process(code: str, env: dict[str, str]) -> tuple[float, float]:
    """(first screen, measured inside the process from its first line; whole process)."""
    start = time.perf_counter()
    out = subprocess.run(
        [sys.executable, "-c", code], check=True, env=env, cwd=REPO, capture_output=True, text=True
    ).stdout
    return float(out.strip().splitlines()[-1]), time.perf_counter() - start


def bench_startup(reps: int) -> None:
    with tempfile.TemporaryDirectory() as home:
        env = {
            **os.environ,
            "LOCALBVI_CONFIG_DIR": f"{home}/config",
            "LOCALBVI_DATA_DIR": f"{home}/data",
            "LOCALBVI_CACHE_DIR": f"{home}/cache",
            "HF_HOME": f"{home}/hf",
            "PYTHONPATH": str(REPO),
        }
        _time_process(HELLO_APP, env)  # warm the file cache for both
        _time_process(LOCALBVI_APP, env)
        hello: list[tuple[float, float]] = []
        ours: list[tuple[float, float]] = []
        for _ in range(reps):
            hello.append(_time_process(HELLO_APP, env))
            ours.append(_time_process(LOCALBVI_APP, env))
    print(f"startup ({reps} reps, headless, median):")
    for label, index in (("to first screen (in process)", 0), ("whole process, to exit", 1)):
        h = statistics.median(r[index] for r in hello)
        o = statistics.median(r[index] for r in ours)
        print(
            f"  {label:<29}: hello {h * 1000:5.0f} ms, localbvi welcome {o * 1000:5.0f} ms, "
            f"ratio {o / h:.2f}x"
        )
    heavy = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys, localbvi.tui, localbvi.cli; "
            "print(','.join(m for m in ('llama_cpp', 'numpy', 'huggingface_hub') "
            "if m in sys.modules) or 'none')",
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    ).stdout.strip()
    print(f"  heavy modules imported by the app at startup: {heavy}")


async def _stream(mode: str, tokens: int) -> dict[str, Any]:
    from textual import events

    from localbvi.engine.fake import FakeEngine
    from localbvi.tui import make_app
    from localbvi.tui.services import StaticServices
    from localbvi.tui.state import AppSettings, ModelChoice

    script = tuple(f" t{i}" for i in range(tokens))
    engine = FakeEngine(
        tokens_per_s=500,
        chat_script=script,
        completion_script=script,
        stop_after_script=True,
    )
    path = "/bench/model-it.gguf" if mode == "chat" else "/bench/model-base.gguf"
    model = ModelChoice(ref=path, display_name="bench", kind=None, path=path)
    app = make_app(
        lambda: engine,
        model_ref=path,
        services=StaticServices(local=[model]),
        settings=AppSettings(max_tokens=tokens),
        check_online=False,
    )
    latencies: list[float] = []
    async with app.run_test(size=(120, 40)) as pilot:
        while app.model is None:
            await pilot.pause(0.01)
        view = app.main.chat if mode == "chat" else app.main.completion
        updates = 0
        original = view.on_stream_text

        def counting(text: str) -> None:
            nonlocal updates
            updates += 1
            original(text)

        view.on_stream_text = counting  # type: ignore[method-assign]
        start = time.perf_counter()
        if mode == "chat":
            await pilot.press(*"go", "enter")
            probe = app.main.chat.prompt
        else:
            await pilot.press(*"Start:", "ctrl+g")
            probe = None
        while not view.generating:
            await asyncio.sleep(0.001)
        while view.generating:
            await asyncio.sleep(0.05)
            if not view.generating:
                break
            if probe is not None:
                before = probe.value
                sent = time.perf_counter()
                app.post_message(events.Key("x", "x"))
                while probe.value == before and time.perf_counter() - sent < 2:
                    await asyncio.sleep(0)
                latencies.append(time.perf_counter() - sent)
            else:
                # Completion: the document is read-only while the model writes; measure
                # how long a callback waits in the same queue that key events go through.
                handled: list[float] = []
                sent = time.perf_counter()
                app.call_later(lambda h=handled: h.append(time.perf_counter()))
                while not handled and time.perf_counter() - sent < 2:
                    await asyncio.sleep(0)
                latencies.append((handled[0] if handled else time.perf_counter()) - sent)
        while view.generating:
            await asyncio.sleep(0.01)
        elapsed = time.perf_counter() - start
        await pilot.pause(0.1)
        if mode == "chat":
            shown = app.main.chat.turns[1].content
        else:
            shown = app.main.completion.document.generated_text()
        emitted = engine.requests and len(script)
        shown_tokens = shown.count(" t")
        intact = shown == "".join(script)
    return {
        "emitted": emitted,
        "shown": shown_tokens,
        "intact": intact,
        "updates": updates,
        "elapsed": elapsed,
        "latencies": latencies,
    }


def bench_streaming(tokens: int) -> None:
    print(f"\nstreaming {tokens} tokens from a FakeEngine at 500 tokens/s:")
    for mode in ("chat", "completion"):
        r = asyncio.run(_stream(mode, tokens))
        lat = sorted(r["latencies"])
        line = (
            f"  {mode:<10}: shown {r['shown']}/{r['emitted']} tokens "
            f"({'all, in order' if r['intact'] else 'MISMATCH'}), "
            f"{r['updates']} UI updates in {r['elapsed']:.2f} s "
            f"({r['shown'] / max(r['updates'], 1):.1f} tokens/update)"
        )
        print(line)
        if lat:
            p95 = lat[min(len(lat) - 1, round(0.95 * (len(lat) - 1)))]
            print(
                f"  {'':<10}  keypress latency during the stream: n={len(lat)} "
                f"median {statistics.median(lat) * 1000:.1f} ms, p95 {p95 * 1000:.1f} ms, "
                f"max {lat[-1] * 1000:.1f} ms"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=7)
    parser.add_argument("--tokens", type=int, default=1000)
    args = parser.parse_args()
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}")
    bench_startup(args.reps)
    bench_streaming(args.tokens)


if __name__ == "__main__":
    main()
