"""Model references: the one way a user names a model, everywhere a model is named.

A reference (`REF`) is one of:

- a path to a `.gguf` file (`./model.gguf`, `/models/x.gguf`, `~/x.gguf`, `x.gguf`);
- a catalog id, optionally with a quantization: `qwen2.5-0.5b-instruct:Q8_0` (default Q4_K_M);
- a Hub repo with a quantization: `org/repo:Q4_K_M` (the one matching file, like llama.cpp
  `-hf`; without `:QUANT`, Q4_K_M);
- a Hub file: `org/repo/path/file.gguf`;
- another tool's model, used where it is: `ollama:NAME[:TAG]`,
  `lmstudio:PUBLISHER/REPO/FILE.gguf`, `llamacpp:FILE.gguf`, `gpt4all:FILE.gguf`
  (see `localbvi.store.foreign`).

Split GGUFs (`…-00001-of-00003.gguf`) are fetched whole; the resolved path is the first part,
which is what llama.cpp opens.
"""

from __future__ import annotations

import difflib
import threading
from dataclasses import dataclass
from pathlib import Path

from localbvi.catalog import CatalogEntry, load_catalog
from localbvi.engine.types import Kind
from localbvi.errors import CatalogError, OfflineError, RefError
from localbvi.store import foreign, hub, library
from localbvi.store.hub import ProgressCallback
from localbvi.store.library import catalog_match
from localbvi.store.naming import (
    ParsedRef,
    guess_quant,
    is_later_part,
    parse_ref,
    path_problem,
    pick_quant_file,
    safe_is_file,
    split_parts,
    user_text,
)

__all__ = [
    "ParsedRef",
    "ResolvedModel",
    "catalog_match",
    "guess_quant",
    "parse_ref",
    "pull",
    "resolve",
    "safe_is_file",
    "split_parts",
]


@dataclass(frozen=True)
class ResolvedModel:
    """A reference turned into a local file ready to load."""

    path: Path
    """The local .gguf (the first part for split files)."""
    ref: str
    """What the user typed."""
    display_name: str
    entry: CatalogEntry | None
    """The catalog entry, when the reference is (or matches) one."""
    quant: str | None
    kind: Kind | None
    """From the catalog; None when unknown."""


def _offline_hint() -> str:
    """Which models can be used right now, for messages about being offline."""
    try:
        local = library.list_local()
    except Exception:  # a hint must never hide the real error
        return ""
    if not local:
        return " No models are on disk yet."
    names = ", ".join(user_text(m.ref, 40) for m in local[:8]) + (" …" if len(local) > 8 else "")
    return f" Models on disk: {names}."


def resolve(
    ref: str,
    *,
    download: bool = True,
    on_progress: ProgressCallback | None = None,
    cancel: threading.Event | None = None,
) -> ResolvedModel:
    """Turn a reference into a local file, downloading it first if needed and allowed.

    A model already on disk is used without asking the network (`localbvi pull` checks for
    updates); `download=False` raises `RefError` instead of fetching.
    """
    try:
        return _resolve(
            ref, download=download, on_progress=on_progress, cancel=cancel, refresh=False
        )
    except OfflineError as exc:
        raise OfflineError(f"{str(exc).rstrip('.')}.{_offline_hint()}") from exc


def pull(
    ref: str,
    *,
    on_progress: ProgressCallback | None = None,
    cancel: threading.Event | None = None,
) -> ResolvedModel:
    """Download a model, or check with the Hub that the copy on disk is the current one."""
    parsed = parse_ref(ref)
    if parsed.kind == "path" or (
        parsed.kind == "hub-file" and safe_is_file(Path(ref).expanduser())
    ):
        shown = user_text(ref)
        if parsed.path is not None and not safe_is_file(parsed.path):
            raise RefError(
                f"'{shown}' is a path ({path_problem(parsed.path)}); `pull` downloads a "
                "catalog id, org/repo:QUANT or org/repo/file.gguf from the Hub"
            )
        raise RefError(f"{shown} is a local file: use `localbvi import {shown}` to add it")
    try:
        return _resolve(ref, download=True, on_progress=on_progress, cancel=cancel, refresh=True)
    except OfflineError as exc:
        raise OfflineError(f"{str(exc).rstrip('.')}.{_offline_hint()}") from exc


def _resolve(
    ref: str,
    *,
    download: bool,
    on_progress: ProgressCallback | None,
    cancel: threading.Event | None,
    refresh: bool,
) -> ResolvedModel:
    if foreign.is_foreign_ref(ref):  # another tool's file: nothing to download or refresh
        model = foreign.find(ref)
        label = f"{model.name} ({model.label})"
        return ResolvedModel(model.path, ref, label, entry=None, quant=model.quant, kind=None)
    parsed = parse_ref(ref)
    if parsed.kind == "hub-file" and safe_is_file(Path(ref).expanduser()):
        parsed = ParsedRef("path", ref, path=Path(ref).expanduser())
    if parsed.kind == "path":
        assert parsed.path is not None
        return _resolve_path(ref, parsed.path)
    if parsed.kind == "catalog":
        assert parsed.catalog_id is not None
        return _resolve_catalog(
            ref, parsed.catalog_id, parsed.quant, download, on_progress, cancel, refresh
        )

    assert parsed.repo is not None
    repo = parsed.repo
    if parsed.kind == "hub-quant":
        assert parsed.quant is not None
        filename = _quant_file(repo, parsed.quant, download, refresh)
    else:
        assert parsed.filename is not None
        filename = parsed.filename
    path = _fetch_parts(ref, repo, filename, download, on_progress, cancel, refresh)
    match = catalog_match(repo, filename)
    entry, quant = match if match else (None, guess_quant(filename))
    return ResolvedModel(
        path=path,
        ref=ref,
        display_name=f"{entry.name} {quant}" if entry else f"{repo}/{filename}",
        entry=entry,
        quant=quant,
        kind=entry.kind if entry else None,
    )


def _resolve_path(ref: str, path: Path) -> ResolvedModel:
    if not safe_is_file(path):
        raise RefError(
            f"{user_text(str(path))}: {path_problem(path)}; give the path of a .gguf file, a "
            "catalog id (`localbvi models`) or a Hub reference such as org/repo:Q4_K_M"
        )
    # A catalog file in the HF cache (models--ORG--NAME/snapshots/REV/FILE) keeps its catalog
    # name and kind, as it has when named by its catalog id (the app's picker opens the path).
    match = None
    snapshots = path.parent.parent
    if snapshots.name == "snapshots" and snapshots.parent.name.startswith("models--"):
        repo = snapshots.parent.name.removeprefix("models--").replace("--", "/", 1)
        match = catalog_match(repo, path.name)
    entry, quant = match if match else (None, guess_quant(path.name))
    return ResolvedModel(
        path=path,
        ref=ref,
        display_name=f"{entry.name} {quant}" if entry else path.name,
        entry=entry,
        quant=quant,
        kind=entry.kind if entry else None,
    )


def _resolve_catalog(
    ref: str,
    catalog_id: str,
    quant: str | None,
    download: bool,
    on_progress: ProgressCallback | None,
    cancel: threading.Event | None,
    refresh: bool,
) -> ResolvedModel:
    catalog = load_catalog()
    entry = catalog.find(catalog_id)
    if entry is None:
        close = difflib.get_close_matches(catalog_id, list(catalog.entries), n=3, cutoff=0.6)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise RefError(
            f"'{user_text(catalog_id, 60)}' is not a model in the catalog{hint}; run "
            "`localbvi models` for "
            "the ids, or use org/repo:QUANT, org/repo/file.gguf or a path"
        )
    try:
        quant_file = entry.file_for(quant)
    except CatalogError as exc:
        raise RefError(str(exc)) from exc
    demo = library.demo_path(entry, quant_file.quant)
    if demo is not None:
        path = library.ensure_demo(demo)
    else:
        path = _fetch_parts(
            ref, entry.repo, quant_file.file, download, on_progress, cancel, refresh
        )
    return ResolvedModel(
        path=path,
        ref=ref,
        display_name=f"{entry.name} {quant_file.quant}",
        entry=entry,
        quant=quant_file.quant,
        kind=entry.kind,
    )


def _quant_file(repo: str, quant: str, download: bool, refresh: bool) -> str:
    """The file `org/repo:QUANT` names: from the cache first, else from the Hub's listing."""
    if not refresh or hub.is_offline():
        cached = [f for f in hub.cached_files(repo) if not is_later_part(f)]
        try:
            return pick_quant_file(repo, quant, cached, where="the cache")
        except RefError:
            if hub.is_offline():
                if cached:
                    raise
                raise OfflineError(
                    f"{user_text(repo, 60)}:{quant} is not on disk and offline mode is on "
                    "(HF_HUB_OFFLINE=1)"
                ) from None
            if not download:
                raise RefError(
                    f"{user_text(repo, 60)}:{quant} is not on disk; run "
                    f"`localbvi pull {user_text(repo, 60)}:{quant}`"
                ) from None
    listing = [path for path, _size in hub.list_repo_files(repo)]
    return pick_quant_file(repo, quant, listing, where="the repository")


def _fetch_parts(
    ref: str,
    repo: str,
    filename: str,
    download: bool,
    on_progress: ProgressCallback | None,
    cancel: threading.Event | None,
    refresh: bool,
) -> Path:
    """All parts of `filename` on disk (cached or fetched); the path of the first part."""
    parts = split_parts(filename)
    cached = [hub.cached_file(repo, part) for part in parts]
    complete = [p for p in cached if p is not None]
    if not refresh and len(complete) == len(parts) and len({p.parent for p in complete}) == 1:
        return complete[0]
    if not download:
        shown = user_text(ref)
        raise RefError(f"{shown} is not on disk; run `localbvi pull {shown}` to download it")
    first, commit = hub.fetch(repo, parts[0], on_progress=on_progress, cancel=cancel)
    for part in parts[1:]:
        hub.fetch(repo, part, revision=commit, on_progress=on_progress, cancel=cancel)
    return first
