"""Where saved KV-cache states of long prompt prefixes live, and how the folder stays bounded.

A base model aligned in context reads a preamble of about a thousand tokens before every
question. Evaluating it costs seconds on a laptop CPU; restoring llama.cpp's state for it from
a file costs milliseconds. A state belongs to one model file, one llama.cpp build and one
context size: the file name is a hash of all of them and of the prefix text, so a changed
model, build or preamble simply misses and the state is rebuilt. The llama.cpp child writes
and checks the files (magic, sha256, token ids); this module only names and evicts them.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from pathlib import Path

from localbvi.engine.cpu_buffers import build_id
from localbvi.engine.types import LoadInfo
from localbvi.paths import cache_dir

__all__ = ["MAX_BYTES", "evict", "folder", "path_for"]

MAX_BYTES = 512 * 1024 * 1024
"""The folder's size limit; the least recently used states go first."""


def folder() -> Path:
    return cache_dir() / "prefix-states"


def path_for(info: LoadInfo, prefix: str) -> Path | None:
    """The state file for `prefix` on the model `info` describes (None for a model that is
    not a local file)."""
    if info.remote:
        return None
    try:
        st = os.stat(info.path)
    except OSError:
        return None
    key = "|".join(
        [
            os.path.realpath(info.path),
            str(st.st_size),
            str(st.st_mtime_ns),
            build_id(),
            str(info.n_ctx),
            "extra" if info.extra_buffers else "safe",
            prefix,
        ]
    )
    return folder() / (hashlib.sha256(key.encode("utf-8")).hexdigest()[:32] + ".kv")


def evict(limit: int = MAX_BYTES) -> None:
    """Delete the least recently used states until the folder is under `limit` bytes."""
    try:
        entries = [(p, p.stat()) for p in folder().glob("*.kv")]
    except OSError:
        return
    total = sum(st.st_size for _, st in entries)
    for path, st in sorted(entries, key=lambda e: max(e[1].st_atime, e[1].st_mtime)):
        if total <= limit:
            break
        with contextlib.suppress(OSError):
            path.unlink()
            total -= st.st_size
