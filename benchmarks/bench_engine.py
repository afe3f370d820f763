"""Engine benchmark: localbvi's out-of-process engine against bare llama-cpp-python.

Prints, for the Gemma 3 270M Q4_K_M model with the same threads in one run:
- decode tokens/s through LocalEngine vs bare `Llama.create_completion(stream=True)` (ratio;
  target ≥ 0.97), time to first token and load time for both;
- decode tokens/s with top-5 probabilities on vs off (target ≥ 0.7×);
- chat time to first token at turn 8 vs turn 1 of a growing conversation (target ≤ 1.5×:
  the shared prefix is reused, not re-evaluated);
- inspector time vs `gguf.GGUFReader`;
- CPU extra buffers (issue 9, llama.cpp's AMX crash): decode after the automatic fallback vs
  bare llama-cpp-python loaded with `use_extra_bufts = False` (target ≥ 0.97); what a load costs
  on a new machine (warm-up), on a new machine whose first decode crashes (crash + reload) and
  with a remembered decision; bare decode with extra buffers on vs off on this CPU;
- alignment lab (issue 10): `LocalEngine.score` of an answer vs a plain prompt evaluation of
  the same tokens (target <= 1.5x) and the extra memory it takes in the child (target
  <= 64 MiB); time to first token of the in-context mode in a new process with the prefix
  cache filled by an earlier process vs the first run (target <= 0.2x).

Usage: python benchmarks/bench_engine.py [--reps N] [--tokens N] [--threads N]
       [--cpu-buffers | --lab]
(`--cpu-buffers` and `--lab` run only that part.)
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from conftest import MODELS_DIR, _build_base, _build_instruct  # noqa: E402

from localbvi.engine import DoneEvent, LoadConfig, LocalEngine, Message, Sampling  # noqa: E402

PROMPT = "The history of the printing press begins"


def bare_run(llm: Any, tokens: int) -> tuple[float, float]:
    """(ttft_s, decode tok/s) of one streamed completion in this process."""
    start = time.perf_counter()
    first = last = 0.0
    n = 0
    for _chunk in llm.create_completion(PROMPT, max_tokens=tokens, temperature=0.0, stream=True):
        now = time.perf_counter()
        if n == 0:
            first = now
        last = now
        n += 1
    return first - start, (n - 1) / (last - first) if n > 1 else 0.0


def engine_run(engine: LocalEngine, tokens: int, top_probs: int = 0) -> DoneEvent:
    done: DoneEvent | None = None
    for event in engine.complete(
        PROMPT, Sampling(temperature=0.0, max_tokens=tokens, top_probs=top_probs)
    ):
        if isinstance(event, DoneEvent):
            done = event
    assert done is not None
    return done


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--cpu-buffers", action="store_true", help="only the extra-buffer part")
    parser.add_argument("--lab", action="store_true", help="only the alignment-lab part")
    parser.add_argument("--incontext-child", metavar="CACHE", help=argparse.SUPPRESS)
    args = parser.parse_args()

    base = _build_base(MODELS_DIR / "gemma-3-270m-pt-Q4_K_M.gguf")
    if args.incontext_child:
        incontext_child(base, args.incontext_child, args.threads)
        return
    if args.cpu_buffers:
        bench_cpu_buffers(base, args.reps, args.tokens, args.threads)
        return
    if args.lab:
        bench_lab(base, args.reps, args.tokens, args.threads)
        return
    instruct = _build_instruct(base, MODELS_DIR / "gemma-3-270m-instruct-shaped-Q4_K_M.gguf")
    config = LoadConfig(n_ctx=2048, n_threads=args.threads, n_gpu_layers=0)

    import llama_cpp

    t = time.perf_counter()
    llm = llama_cpp.Llama(
        str(base),
        n_ctx=2048,
        n_threads=args.threads,
        n_threads_batch=args.threads,
        n_gpu_layers=0,
        verbose=False,
    )
    bare_load = time.perf_counter() - t

    engine = LocalEngine()
    t = time.perf_counter()
    info = engine.load(base, config)
    engine_load_wall = time.perf_counter() - t

    bare_ttft: list[float] = []
    bare_tps: list[float] = []
    eng_ttft: list[float] = []
    eng_tps: list[float] = []
    probs_tps: list[float] = []
    bare_run(llm, 8)  # warm-up both
    engine_run(engine, 8)
    for _ in range(args.reps):  # interleaved so that machine noise hits both alike
        a, b = bare_run(llm, args.tokens)
        bare_ttft.append(a)
        bare_tps.append(b)
        d = engine_run(engine, args.tokens)
        eng_ttft.append(d.ttft_s)
        eng_tps.append(d.tokens_per_s)
        probs_tps.append(engine_run(engine, args.tokens, top_probs=5).tokens_per_s)
    del llm
    engine.close()

    med = statistics.median
    print(
        f"model: {base.name}, threads {args.threads}, {args.tokens} tokens, "
        f"{args.reps} reps (median)"
    )
    print(
        f"load:   bare {bare_load:.2f} s | localbvi {info.load_s:.2f} s in the child, "
        f"{engine_load_wall:.2f} s wall incl. process start"
    )
    print(f"ttft:   bare {med(bare_ttft) * 1000:.0f} ms | localbvi {med(eng_ttft) * 1000:.0f} ms")
    ratio = med(eng_tps) / med(bare_tps)
    print(
        f"decode: bare {med(bare_tps):.1f} tok/s | localbvi {med(eng_tps):.1f} tok/s "
        f"| ratio {ratio:.3f} (target >= 0.97)"
    )
    pratio = med(probs_tps) / med(eng_tps)
    print(
        f"probs:  top-5 on {med(probs_tps):.1f} tok/s vs off {med(eng_tps):.1f} tok/s "
        f"| ratio {pratio:.3f} (target >= 0.7)"
    )

    # Chat: time to first token as the conversation grows.
    with LocalEngine() as chat_engine:
        chat_engine.load(instruct, LoadConfig(n_ctx=4096, n_threads=args.threads, n_gpu_layers=0))
        history: list[Message] = [Message("system", "You are a helpful assistant.")]
        ttfts: list[float] = []
        prompt_tokens: list[int] = []
        for turn in range(1, 9):
            history.append(
                Message("user", f"Turn {turn}: tell me one fact about the number {turn}.")
            )
            reply: list[str] = []
            done: DoneEvent | None = None
            for event in chat_engine.chat(history, Sampling(temperature=0.0, max_tokens=48)):
                if isinstance(event, DoneEvent):
                    done = event
                else:
                    reply.append(event.text)
            assert done is not None
            ttfts.append(done.ttft_s)
            prompt_tokens.append(done.prompt_tokens)
            history.append(Message("assistant", "".join(reply)))
    print(
        f"chat:   ttft turn 1 {ttfts[0] * 1000:.0f} ms ({prompt_tokens[0]} prompt tokens) | "
        f"turn 8 {ttfts[-1] * 1000:.0f} ms ({prompt_tokens[-1]} prompt tokens) "
        f"| ratio {ttfts[-1] / ttfts[0]:.2f} (target <= 1.5)"
    )

    # Inspector vs the gguf package's reader.
    from localbvi.inspector import inspect_gguf

    times = []
    for _ in range(10):
        t = time.perf_counter()
        inspect_gguf(base)
        times.append(time.perf_counter() - t)
    import gguf

    t = time.perf_counter()
    gguf.GGUFReader(str(base))
    slow = time.perf_counter() - t
    print(
        f"inspect: localbvi {med(times) * 1000:.1f} ms | gguf.GGUFReader {slow:.1f} s "
        f"| {slow / med(times):.0f}x faster (target < 50 ms)"
    )
    bench_cpu_buffers(base, args.reps, args.tokens, args.threads)
    bench_lab(base, args.reps, args.tokens, args.threads)


@contextlib.contextmanager
def _env(**values: str | None) -> Iterator[None]:
    saved = {k: os.environ.get(k) for k in values}
    for k, v in values.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _timed_load(base: Path, config: LoadConfig) -> tuple[LocalEngine, float]:
    engine = LocalEngine()
    t = time.perf_counter()
    engine.load(base, config)
    return engine, time.perf_counter() - t


def bench_cpu_buffers(base: Path, reps: int, tokens: int, threads: int) -> None:
    """Issue 9: the safe setting's speed and what deciding it costs."""
    import llama_cpp

    from localbvi.engine import cpu_buffers
    from localbvi.engine.worker import _extra_buffer_types

    med = statistics.median
    config = LoadConfig(n_ctx=2048, n_threads=threads, n_gpu_layers=0)
    bare: dict[bool, Any] = {}
    for extra in (True, False):
        with _extra_buffer_types(extra):
            bare[extra] = llama_cpp.Llama(
                str(base), n_ctx=2048, n_threads=threads, n_threads_batch=threads,
                n_gpu_layers=0, verbose=False,
            )  # fmt: skip
    print(f"cpu extra buffers: CPU has AMX: {cpu_buffers.cpu_has_amx()}")

    loads: dict[str, list[float]] = {"plain": [], "new": [], "crash": [], "remembered": []}
    for _ in range(reps):
        with tempfile.TemporaryDirectory() as cache, _env(LOCALBVI_CACHE_DIR=cache):
            e, s = _timed_load(base, LoadConfig(**{**config.__dict__, "cpu_extra_buffers": "on"}))
            e.close()
            loads["plain"].append(s)
            e, s = _timed_load(base, config)  # new machine, no crash: load + warm-up
            e.close()
            loads["new"].append(s)
            cpu_buffers.forget()
            with _env(LOCALBVI_FAULT_FIRST_DECODE="extra-buffers"):
                e, s = _timed_load(base, config)  # new machine, crash: load, crash, reload
            e.close()
            loads["crash"].append(s)
            e, s = _timed_load(base, config)  # remembered: straight to the safe setting
            e.close()
            loads["remembered"].append(s)
    plain = med(loads["plain"])
    print(
        f"  load wall: plain {plain:.2f} s | new machine {med(loads['new']):.2f} s "
        f"(+{(med(loads['new']) - plain) * 1000:.0f} ms warm-up) | new machine with crash "
        f"{med(loads['crash']):.2f} s ({med(loads['crash']) / plain:.2f} loads, target <= 2) "
        f"| remembered {med(loads['remembered']):.2f} s ({med(loads['remembered']) / plain:.2f}x)"
    )

    with tempfile.TemporaryDirectory() as cache, _env(LOCALBVI_CACHE_DIR=cache):
        with _env(LOCALBVI_FAULT_FIRST_DECODE="extra-buffers"):
            engine = LocalEngine()
            info = engine.load(base, config)
        assert not info.extra_buffers, "the fallback did not happen"
        bare_on: list[float] = []
        bare_off: list[float] = []
        safe: list[float] = []
        bare_run(bare[False], 8)
        bare_run(bare[True], 8)
        engine_run(engine, 8)
        for _ in range(reps):
            bare_off.append(bare_run(bare[False], tokens)[1])
            safe.append(engine_run(engine, tokens).tokens_per_s)
            bare_on.append(bare_run(bare[True], tokens)[1])
        engine.close()
    print(
        f"  decode after the fallback: localbvi {med(safe):.1f} tok/s | bare, extra buffers "
        f"off {med(bare_off):.1f} tok/s | ratio {med(safe) / med(bare_off):.3f} (target >= 0.97)"
    )
    print(
        f"  bare decode on this CPU: extra buffers on {med(bare_on):.1f} tok/s | off "
        f"{med(bare_off):.1f} tok/s | off/on {med(bare_off) / med(bare_on):.3f}"
    )


# -- alignment lab (issue 10) -------------------------------------------------------------------

QUESTION = "Explain in a few sentences why the sky is blue during the day and red at sunset."


def _child_memory(engine: LocalEngine) -> tuple[int, int]:
    """(current, peak) resident memory of the llama.cpp child in bytes (Linux /proc)."""
    values = {"VmRSS": 0, "VmHWM": 0}
    with open(f"/proc/{engine.pid}/status") as f:
        for line in f:
            key, _, rest = line.partition(":")
            if key in values:
                values[key] = int(rest.split()[0]) * 1024
    return values["VmRSS"], values["VmHWM"]


def bench_lab(base: Path, reps: int, tokens: int, threads: int) -> None:
    """Scoring vs plain prompt evaluation (time, memory), and the prefix cache across
    processes."""
    from localbvi.engine.types import ScoreRequest
    from localbvi.lab.incontext import frame_query

    med = statistics.median
    config = LoadConfig(n_ctx=2048, n_threads=threads, n_gpu_layers=0)
    with tempfile.TemporaryDirectory() as cache, _env(LOCALBVI_CACHE_DIR=cache):
        engine = LocalEngine()
        engine.load(base, config)
        prompt = [t.id for t in engine.tokenize(frame_query(QUESTION))]
        answer: list[int] = []
        for event in engine.complete(prompt, Sampling(temperature=0.0, max_tokens=tokens)):
            if not isinstance(event, DoneEvent) and event.id >= 0:
                answer.append(event.id)
        whole = prompt + answer
        plain_s: list[float] = []
        score_s: list[float] = []
        one = Sampling(temperature=0.0, max_tokens=1)

        def plain() -> float:
            # A fresh context each time: score() clears the KV cache when it ends, and the
            # plain run follows a score() (so llama.cpp cannot reuse a cached prefix).
            t = time.perf_counter()
            done: DoneEvent | None = None
            for event in engine.complete(whole, one):
                if isinstance(event, DoneEvent):
                    done = event
            assert done is not None and not done.error, done
            return time.perf_counter() - t

        def scored() -> float:
            t = time.perf_counter()
            wanted = (tuple(answer[:5]),) * len(answer)
            result = engine.score(ScoreRequest(tuple(prompt), tuple(answer), 10, wanted))
            assert len(result) == len(answer)
            return time.perf_counter() - t

        for _ in range(2):  # peak memory of plain evaluations alone first
            for _event in engine.complete("Hello", one):
                pass  # another prefix: the next plain run evaluates every token again
            plain()
        _, peak_plain = _child_memory(engine)
        scored()
        for _ in range(reps):
            score_s.append(scored())
            plain_s.append(plain())
        _, peak_score = _child_memory(engine)
        engine.close()
    ratio = med(score_s) / med(plain_s)
    print(
        f"lab: score {len(answer)} answer tokens after a {len(prompt)}-token prompt: "
        f"{med(score_s) * 1000:.0f} ms | plain prompt evaluation of the same {len(whole)} "
        f"tokens (+1 decode) {med(plain_s) * 1000:.0f} ms | ratio {ratio:.2f} (target <= 1.5)"
    )
    print(
        f"  child peak memory: after plain evaluations {peak_plain / 2**20:.0f} MiB | after "
        f"scoring {peak_score / 2**20:.0f} MiB | extra "
        f"{(peak_score - peak_plain) / 2**20:.0f} MiB (target <= 64)"
    )

    with tempfile.TemporaryDirectory() as cache:
        runs = []
        for _ in range(2):  # the first run builds the prefix state, the second restores it
            out = subprocess.run(
                [sys.executable, __file__, "--incontext-child", cache, "--threads", str(threads)],
                check=True,
                capture_output=True,
                text=True,
            )
            runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
    first, second = runs
    print(
        f"  in-context ttft in a new process: first {first['ttft_s']:.2f} s (prefix "
        f"{first['how']}, {first['prefix_tokens']} tokens, prime {first['prime_s']:.2f} s) | "
        f"second {second['ttft_s']:.2f} s (prefix {second['how']}, prime "
        f"{second['prime_s']:.2f} s) | ratio {second['ttft_s'] / first['ttft_s']:.2f} "
        "(target <= 0.2)"
    )


def incontext_child(base: Path, cache: str, threads: int) -> None:
    """One in-context question in this process; prints JSON with its time to first token
    (from the request, prime included, to the first token)."""
    os.environ["LOCALBVI_CACHE_DIR"] = cache
    from localbvi.lab.incontext import (
        build_prompt,
        bundled_incontext,
        incontext_sampling,
        preamble_text,
    )

    with LocalEngine() as engine:
        engine.load(base, LoadConfig(n_ctx=4096, n_threads=threads, n_gpu_layers=0))
        incontext = bundled_incontext()
        messages = [Message("user", "What is the boiling point of water at sea level?")]
        t = time.perf_counter()
        n, how = engine.prime(preamble_text(incontext, messages))
        primed = time.perf_counter() - t
        sampling = incontext_sampling(Sampling(temperature=0.0, max_tokens=4))
        first: float | None = None
        for _event in engine.complete(build_prompt(incontext, messages), sampling):
            if first is None:
                first = time.perf_counter() - t
    print(json.dumps({"ttft_s": first, "prime_s": primed, "how": how, "prefix_tokens": n}))


if __name__ == "__main__":
    main()
