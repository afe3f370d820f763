"""Whether llama.cpp may use its CPU "extra buffer types" on this machine, decided once.

llama.cpp built by pip targets the build machine's instruction set (`GGML_NATIVE`). On CPUs
with AMX (most current Xeons) the weights then go into an AMX extra buffer, and with some
quantizations the first decode segfaults in `ggml_backend_amx_mul_mat` (llama.cpp issue
20824). Loading with `use_extra_bufts = False` (no AMX, no CPU weight repacking) avoids it.

The engine finds out on the first load for a (llama.cpp build, CPU) pair: a tiny warm-up decode
right after the load, with extra buffers on; if that crashes the child, it reloads with them
off. The outcome is remembered here, in the cache folder, so later loads go straight to the
right setting. A rebuilt llama-cpp-python has another build id and is tried again.

Nothing here imports llama_cpp: the decision is taken in the caller's process before the child
is started, so it costs a few file stats, not an import.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import importlib.util
import platform
import time
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from localbvi.jsonfile import read_json_object, write_json_atomic
from localbvi.paths import cache_dir

__all__ = [
    "CRASH_NOTE",
    "Plan",
    "build_id",
    "cpu_flags",
    "cpu_has_amx",
    "cpu_id",
    "decision_path",
    "forget",
    "plan",
    "recall",
    "remember",
]

CRASH_NOTE = "CPU extra buffers off: llama.cpp crashed with them on this CPU"
_FILE = "cpu-extra-buffers.json"
_MAX_FILE = 256 * 1024  # the decisions file is tiny; anything bigger is not ours


@dataclass(frozen=True)
class Plan:
    """How the next load uses extra buffers, and whether it must prove the choice first."""

    use_extra_buffers: bool
    warm_up: bool
    """Decode a few tokens right after the load to find a crash before any user request."""
    retry_safe: bool
    """On a crash in the first decode, reload with extra buffers off and run it again."""
    reason: str


@lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags as the OS reports them (Linux: /proc/cpuinfo), else empty."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith(("flags", "Features")):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def cpu_has_amx() -> bool:
    """True on CPUs with Intel AMX tiles (the ones llama.cpp issue 20824 is about)."""
    return "amx_tile" in cpu_flags()


@lru_cache(maxsize=1)
def cpu_id() -> str:
    """A short id of this CPU's model and features (what changes llama.cpp's kernels)."""
    model = ""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            names = (ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name"))
            model = next(names, "")
    except OSError:
        pass
    text = "|".join(
        [platform.machine(), platform.processor(), model, " ".join(sorted(cpu_flags()))]
    )
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@lru_cache(maxsize=1)
def build_id() -> str:
    """A short id of the installed llama.cpp build: its version and its libraries' stats.

    Rebuilding llama-cpp-python (another version, other CMAKE_ARGS, an upstream fix) changes
    the shared libraries, so a decision taken for the old build is not reused.
    """
    parts: list[str] = []
    with contextlib.suppress(importlib.metadata.PackageNotFoundError):
        parts.append(importlib.metadata.version("llama_cpp_python"))
    spec = importlib.util.find_spec("llama_cpp")
    for folder in (spec.submodule_search_locations or []) if spec else []:
        lib = Path(folder) / "lib"
        with contextlib.suppress(OSError):
            for entry in sorted(lib.iterdir()):
                if entry.suffix in (".so", ".dylib", ".dll") or ".so." in entry.name:
                    st = entry.stat()
                    parts.append(f"{entry.name}:{st.st_size}:{st.st_mtime_ns}")
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:16]


def _key() -> str:
    return f"{build_id()}-{cpu_id()}"


def decision_path() -> Path:
    """The JSON file of remembered decisions, in localbvi's cache folder."""
    return cache_dir() / _FILE


def _read() -> dict[str, Any]:
    """The remembered decisions; an unreadable or foreign file counts as none."""
    return read_json_object(decision_path(), _MAX_FILE)


def recall() -> dict[str, Any] | None:
    """What was decided for this build and CPU: {"extra_buffers": bool, "reason": str, …}."""
    entry = _read().get(_key())
    if isinstance(entry, dict) and isinstance(entry.get("extra_buffers"), bool):
        return entry
    return None


def remember(extra_buffers: bool, reason: str) -> None:
    """Record the decision for this build and CPU (atomically; a failure to save is harmless)."""
    data = _read()
    data[_key()] = {
        "extra_buffers": extra_buffers,
        "reason": reason,
        "decided": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "llama_cpp_python": _version(),
        "cpu_amx": cpu_has_amx(),
    }
    # Without a writable cache the engine decides again next time: slower, never wrong.
    write_json_atomic(decision_path(), data)


def forget() -> None:
    """Drop the decision for this build and CPU (the next auto load decides again)."""
    data = _read()
    if data.pop(_key(), None) is not None:
        write_json_atomic(decision_path(), data)


def _version() -> str:
    try:
        return importlib.metadata.version("llama_cpp_python")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def plan(setting: Literal["auto", "on", "off"]) -> Plan:
    """How to load under `setting` (the `cpu_extra_buffers` load option)."""
    if setting == "off":
        return Plan(False, warm_up=False, retry_safe=False, reason="turned off in the settings")
    if setting == "on":
        return Plan(True, warm_up=False, retry_safe=False, reason="turned on in the settings")
    known = recall()
    if known is None:
        return Plan(True, warm_up=True, retry_safe=True, reason="not yet tried on this CPU")
    reason = str(known.get("reason", ""))
    if known["extra_buffers"]:
        # Proven once for this build and CPU; a model that still crashes gets one safe retry.
        return Plan(True, warm_up=False, retry_safe=True, reason=reason)
    return Plan(False, warm_up=False, retry_safe=False, reason=reason)
