"""Interrupted downloads: the `blobs/<etag>.incomplete` files a pull keeps so it can resume.

A partial blob is named by its hash, which says nothing a person can use. When a download
starts, `remember` writes a small note beside it (`<etag>.incomplete.json`: the file's name in
its repository and its full size), so `localbvi models` can show "gemma-3-270m:Q4_K_M, 48 %"
with the command that resumes it, and `localbvi rm` knows which partial belongs to which
model. huggingface_hub's `scan_cache_dir` only looks at `*.incomplete`, so the note is
invisible to other tools. Partials without a note (left by another tool, or an older
localbvi) are still listed, by repository and size.

`hub` imports this module, so it imports nothing from the store at import time.
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Partial", "delete", "forget", "note_path", "remember", "repo_of", "scan", "sweep_notes"]

SUFFIX = ".incomplete"
MAX_NOTE_BYTES = 8192
MAX_REPOS = 10_000
"""Repository folders looked at in one scan: a bound on the work in a huge cache."""


@dataclass(frozen=True)
class Partial:
    """One interrupted download in the HF cache."""

    repo: str
    path: Path
    """The `.incomplete` blob."""
    size: int
    """Bytes kept so far."""
    filename: str | None
    """The file's name in the repository, from the note (None without one)."""
    expected: int | None
    """The file's full size, from the note (None without one)."""

    @property
    def percent(self) -> float | None:
        if not self.expected:
            return None
        return min(100.0, 100.0 * self.size / self.expected)

    @property
    def ref(self) -> str:
        """What `localbvi pull` resumes: the catalog id:QUANT when the file is a catalog
        one, else org/repo/file (the first part of a split file); the repository alone
        when the file is unknown."""
        if self.filename is None:
            return self.repo
        from localbvi.store.refs import catalog_match, split_parts

        first = split_parts(self.filename)[0]
        match = catalog_match(self.repo, first)
        return f"{match[0].id}:{match[1]}" if match else f"{self.repo}/{first}"


def note_path(incomplete: Path) -> Path:
    return incomplete.with_name(incomplete.name + ".json")


def remember(incomplete: Path, filename: str, size: int) -> None:
    """Write the note for a download about to start (best effort: it is only for display)."""
    note = note_path(incomplete)
    with contextlib.suppress(OSError):
        if note.is_file():
            return
        tmp = note.with_name(f"{note.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps({"file": filename, "size": size}), encoding="utf-8")
        os.replace(tmp, note)


def forget(incomplete: Path) -> None:
    """Drop the note once the download is complete (or its partial file was deleted)."""
    with contextlib.suppress(OSError):
        note_path(incomplete).unlink()


def _read_note(incomplete: Path) -> tuple[str | None, int | None]:
    try:
        note = note_path(incomplete)
        if note.is_symlink() or note.stat().st_size > MAX_NOTE_BYTES:
            return None, None
        data = json.loads(note.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None, None
    if not isinstance(data, dict):
        return None, None
    filename, size = data.get("file"), data.get("size")
    from localbvi.store.hub import filename_problem

    if not isinstance(filename, str) or filename_problem(filename) is not None:
        return None, None
    if not isinstance(size, int) or isinstance(size, bool) or size <= 0:
        size = None
    return filename, size


def repo_of(folder: Path) -> str | None:
    """`org/name` of a cache folder `models--org--name`, or None for other folders."""
    if not folder.name.startswith("models--"):
        return None
    org, sep, name = folder.name.removeprefix("models--").partition("--")
    return f"{org}/{name}" if sep and org and name else None


def scan(cache: Path, repo: str | None = None) -> list[Partial]:
    """Every interrupted download in the cache (or in one repository's folder)."""
    if repo is not None:
        folders = [cache / ("models--" + repo.replace("/", "--"))]
    else:
        try:
            with os.scandir(cache) as it:
                folders = [Path(e.path) for _, e in zip(range(MAX_REPOS), it, strict=False)]
        except OSError:
            return []
    found: list[Partial] = []
    for folder in sorted(folders):
        name = repo_of(folder)
        blobs = folder / "blobs"
        if name is None or not os.path.isdir(blobs):
            continue
        try:
            candidates = sorted(blobs.glob(f"*{SUFFIX}"))
        except OSError:
            continue
        for path in candidates:
            try:
                size = path.stat().st_size
            except OSError:
                continue
            filename, expected = _read_note(path)
            found.append(Partial(name, path, size, filename, expected))
    return found


def delete(partial: Partial) -> int:
    """Delete a partial file and its note; the bytes freed."""
    try:
        partial.path.unlink()
    except FileNotFoundError:
        return 0
    forget(partial.path)
    return partial.size


def sweep_notes(blobs: Path) -> None:
    """Delete notes whose partial file is gone (a failed download deletes its bytes)."""
    with contextlib.suppress(OSError):
        for note in blobs.glob(f"*{SUFFIX}.json"):
            if not os.path.lexists(note.with_name(note.name.removesuffix(".json"))):
                note.unlink(missing_ok=True)
