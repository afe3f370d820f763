"""Compare view: both sides one after the other, or at the same time? And what do token
probabilities cost?

Two LocalEngines (the Gemma 3 270M base fixture raw, its instruct-shaped copy in chat mode)
run the same plan at temperature 0 (so every configuration does the same work):

- sequential: base, then instruct (each llama.cpp process uses the default threads);
- sequential-1t: the same with one llama.cpp thread per process;
- concurrent: both in two threads at once, default threads each;
- concurrent-1t: both at once with one llama.cpp thread each (no oversubscription).

Then decode speed of one engine with `Sampling.top_probs=10` against 0. Run from the repo
root (prints a table; nothing is asserted):

    .venv/bin/python benchmarks/bench_compare.py [--runs 3] [--max-tokens 64]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from localbvi.engine.local import LocalEngine  # noqa: E402
from localbvi.engine.types import LoadConfig, Sampling  # noqa: E402
from localbvi.lab.compare import plan, run_compare, run_side  # noqa: E402

MODELS_DIR = Path(os.environ.get("LOCALBVI_TEST_MODELS", REPO / ".cache" / "test-models"))
BASE = MODELS_DIR / "gemma-3-270m-pt-Q4_K_M.gguf"
INSTRUCT = MODELS_DIR / "gemma-3-270m-instruct-shaped-Q4_K_M.gguf"
PROMPT = "Write a short story about a lighthouse keeper."


def _engines(threads: int | None) -> tuple[LocalEngine, LocalEngine]:
    config = LoadConfig(n_ctx=1024, n_threads=threads)
    base, instruct = LocalEngine(), LocalEngine()
    base.load(BASE, config)
    instruct.load(INSTRUCT, config)
    return base, instruct


def bench_modes(runs: int, max_tokens: int) -> None:
    # ignore EOS is not an engine option: a long max_tokens and a story prompt keep both
    # sides writing; the token counts are printed so runs can be compared.
    sampling = Sampling(temperature=0.0, max_tokens=max_tokens, seed=1)
    the_plan = plan(PROMPT)
    configs = [
        ("sequential", None, False),
        ("sequential-1t", 1, False),
        ("concurrent", None, True),
        ("concurrent-1t", 1, True),
    ]
    rows: dict[str, list[tuple[float, float, float, int, int]]] = {c[0]: [] for c in configs}
    engines = {threads: _engines(threads) for threads in {c[1] for c in configs}}
    try:
        for _ in range(2):  # warm both processes (page cache, first-decode allocations)
            for base, instruct in engines.values():
                run_compare(base, instruct, the_plan, Sampling(temperature=0.0, max_tokens=8))
        for _ in range(runs):
            for name, threads, concurrent in configs:
                base, instruct = engines[threads]
                result = run_compare(base, instruct, the_plan, sampling, concurrent=concurrent)
                b, i = result.base.done, result.instruct.done
                assert b is not None and i is not None
                rows[name].append(
                    (result.wall_s, b.tokens_per_s, i.tokens_per_s, b.tokens, i.tokens)
                )
    finally:
        for base, instruct in engines.values():
            base.close()
            instruct.close()
    print(f"compare, {runs} runs each, max_tokens={max_tokens}, median of runs")
    print(f"{'mode':<15}{'wall s':>8}{'base tok/s':>12}{'instr tok/s':>13}{'tokens b/i':>12}")
    for name, values in rows.items():
        wall = statistics.median(v[0] for v in values)
        btps = statistics.median(v[1] for v in values)
        itps = statistics.median(v[2] for v in values)
        toks = f"{values[-1][3]}/{values[-1][4]}"
        print(f"{name:<15}{wall:>8.2f}{btps:>12.1f}{itps:>13.1f}{toks:>12}")


def bench_probs(runs: int, max_tokens: int, threads: int | None) -> None:
    engine = LocalEngine()
    engine.load(BASE, LoadConfig(n_ctx=1024, n_threads=threads))
    request = plan("Once upon a time").base
    rates: dict[int, list[float]] = {0: [], 10: []}
    try:
        run_side(engine, request, Sampling(temperature=0.0, max_tokens=8))
        for _ in range(runs):
            for k in (0, 10):
                sampling = Sampling(temperature=0.0, max_tokens=max_tokens, seed=1, top_probs=k)
                done = run_side(engine, request, sampling).done
                assert done is not None and not done.error, done
                rates[k].append(done.tokens_per_s)
    finally:
        engine.close()
    off, on = statistics.median(rates[0]), statistics.median(rates[10])
    print(
        f"\ndecode, base raw, threads={threads or 'default'}, {runs} runs, "
        f"max_tokens={max_tokens}, median tok/s"
    )
    print(f"probabilities off: {off:.1f}   top_probs=10: {on:.1f}   ratio on/off: {on / off:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--skip-compare", action="store_true")
    parser.add_argument("--threads", type=int, default=None, help="llama.cpp threads (probs)")
    args = parser.parse_args()
    print(f"{os.cpu_count()} CPUs")
    if not args.skip_compare:
        bench_modes(args.runs, args.max_tokens)
    bench_probs(args.runs, args.max_tokens, args.threads)


if __name__ == "__main__":
    main()
