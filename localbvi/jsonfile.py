"""Small JSON files in localbvi's cache folder: read bounded, written atomically.

A cache file is a convenience: one that is missing, too large, unreadable or not a JSON object
counts as empty, and one that cannot be written costs time on the next run, never an error.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

__all__ = ["read_json_object", "write_json_atomic"]


def read_json_object(path: Path, limit: int) -> dict[str, Any]:
    """The JSON object in `path`, or {} when it is absent, over `limit` bytes or not one."""
    try:
        if path.stat().st_size > limit:
            return {}
        data = json.loads(path.read_text("utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def write_json_atomic(path: Path, data: dict[str, Any]) -> bool:
    """Replace `path` with `data` (temp file, then rename); False when it could not."""
    tmp = ""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}-", dir=path.parent)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=1)
        os.replace(tmp, path)
        return True
    except OSError:
        if tmp:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
        return False
