"""What the bounded chat-template rendering costs against rendering in the caller.

Renders the bundled Gemma 3 template (a system and a user message) three ways:

- unbounded: Jinja's ImmutableSandboxedEnvironment in this process (how localbvi rendered
  before the limits: no time, memory or size bound);
- bounded, in process: `template_sandbox.render` (the size-capped environment and its timer);
- render_chat: the bounded environment in the helper process (what localbvi does now), its
  first call (which starts the helper) apart from the steady state.

Run from the repo root (prints a table; nothing is asserted):

    .venv/bin/python benchmarks/bench_templates.py [--renders 500]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from jinja2.sandbox import ImmutableSandboxedEnvironment  # noqa: E402

from localbvi.engine import template_sandbox  # noqa: E402
from localbvi.engine.templates import render_chat  # noqa: E402
from localbvi.engine.types import Message  # noqa: E402

SOURCE = (REPO / "localbvi" / "data" / "gemma3.jinja").read_text(encoding="utf-8")
MESSAGES = [Message("system", "Be helpful."), Message("user", "Hello")]
VARIABLES = {
    "messages": [{"role": m.role, "content": m.content} for m in MESSAGES],
    "bos_token": "<bos>",
    "eos_token": "<eos>",
    "add_generation_prompt": True,
}


def per_call_ms(fn: Callable[[], object], n: int) -> float:
    """Median of 5 batches of n // 5 calls, in milliseconds per call."""
    batches = []
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(max(1, n // 5)):
            fn()
        batches.append((time.perf_counter() - start) / max(1, n // 5) * 1000)
    return statistics.median(batches)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--renders", type=int, default=500)
    n = parser.parse_args().renders

    start = time.perf_counter()
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    plain = env.from_string(SOURCE)
    plain.render(**VARIABLES)
    first_plain = (time.perf_counter() - start) * 1000

    start = time.perf_counter()
    render_chat(SOURCE, MESSAGES, bos_token="<bos>", eos_token="<eos>")
    first_helper = (time.perf_counter() - start) * 1000

    rows = [
        ("unbounded, in process", first_plain, per_call_ms(lambda: plain.render(**VARIABLES), n)),
        (
            "bounded, in process",
            float("nan"),
            per_call_ms(lambda: template_sandbox.render(SOURCE, VARIABLES), n),
        ),
        (
            "render_chat (helper process)",
            first_helper,
            per_call_ms(
                lambda: render_chat(SOURCE, MESSAGES, bos_token="<bos>", eos_token="<eos>"), n
            ),
        ),
    ]
    print(f"{'':30} {'first call ms':>14} {'per render ms':>14}")
    for name, first, each in rows:
        print(f"{name:30} {first:14.1f} {each:14.3f}")


if __name__ == "__main__":
    main()
