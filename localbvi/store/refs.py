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
import errno
import os
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from localbvi.catalog import DEFAULT_QUANT, CatalogEntry, load_catalog
from localbvi.engine.types import Kind
from localbvi.errors import CatalogError, OfflineError, RefError, printable, shorten
from localbvi.store import hub
from localbvi.store.hub import ProgressCallback

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

RefKind = Literal["path", "catalog", "hub-quant", "hub-file", "foreign"]

MAX_REF_CHARS = 4096
"""Longest reference accepted: the longest path Linux can open (PATH_MAX)."""
_NAME = r"[A-Za-z0-9][A-Za-z0-9._-]{0,95}"  # the Hub allows 96 characters per name
_REPO_RE = re.compile(rf"{_NAME}/{_NAME}")
_ID_RE = re.compile(_NAME)
_QUANT_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_]{0,31}")
_URL_RE = re.compile(r"^(?P<scheme>[A-Za-z][A-Za-z0-9+.-]{0,15})://")
_SPLIT_RE = re.compile(r"^(?P<stem>.*)-(?P<no>\d{5})-of-(?P<count>\d{5})\.gguf$")
# Quantization names as they appear in GGUF file names: Q4_K_M, IQ3_XXS, Q8_0, F16, BF16, …
_QUANT_IN_NAME_RE = re.compile(
    r"(?<![A-Za-z0-9])((?:I?Q\d(?:_[A-Z0-9]+)*)|F16|F32|BF16)(?![A-Za-z0-9_])",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class ParsedRef:
    """What a reference names, before anything is looked up."""

    kind: RefKind
    text: str
    path: Path | None = None
    catalog_id: str | None = None
    repo: str | None = None
    filename: str | None = None
    quant: str | None = None


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


def _shown(text: str, limit: int = 80) -> str:
    """User input as it may appear in a message: printable and short (one line stays short)."""
    return shorten(printable(text), limit)


def safe_is_file(path: Path) -> bool:
    """`path.is_file()`, False instead of an exception for names the system cannot take."""
    try:
        return path.is_file()
    except (OSError, ValueError):
        return False


def _path_problem(path: Path) -> str:
    """Why `path` is not a file we can open, in words."""
    try:
        path.stat()
    except ValueError:
        return "it contains a NUL character"
    except OSError as exc:
        if exc.errno == errno.ENAMETOOLONG:
            return "the path is too long for the file system: a name in it is over 255 bytes"
        if exc.errno in (errno.ENOENT, errno.ENOTDIR):
            return "no such file"
        return exc.strerror or "cannot be read"
    return "it is not a file" if not path.is_file() else "cannot be read"


def _looks_like_path(text: str) -> bool:
    return (
        text.startswith(("/", "./", "../", "~", ".\\", "..\\"))
        or "\\" in text
        or re.match(r"^[A-Za-z]:[\\/]", text) is not None
        or text in (".", "..")
    )


def _not_a_repo(ref: str, repo: str) -> RefError:
    return RefError(
        f"'{_shown(ref)}': '{_shown(repo, 60)}' is not a Hub repository name (org/name, "
        "each at most 96 letters, digits, '.', '_' or '-')"
    )


def _check_quant(quant: str, text: str) -> str:
    if not _QUANT_RE.fullmatch(quant):
        raise RefError(
            f"'{_shown(text)}': '{_shown(quant, 40)}' is not a quantization name "
            "(like Q4_K_M or Q8_0)"
        )
    return quant.upper()


def parse_ref(ref: str) -> ParsedRef:
    """Classify a reference by its shape alone (no disk, no network)."""
    text = ref.strip()
    if not text:
        raise RefError("an empty model reference: give a path, a catalog id or org/repo:QUANT")
    if _is_foreign(text):
        return ParsedRef("foreign", ref)
    shown = _shown(text)
    if len(text) > MAX_REF_CHARS:
        raise RefError(
            f"'{shown}' is {len(text):,} characters long, too long for a model reference "
            "(a path, a catalog id, org/repo:QUANT or org/repo/file.gguf)"
        )
    if any(ord(c) < 32 or ord(c) == 127 for c in text):
        raise RefError(
            f"'{shown}' contains control characters; give a path, a catalog id or org/repo:QUANT"
        )
    if url := _URL_RE.match(text):
        scheme = url["scheme"].lower()
        if scheme in ("http", "https"):
            raise RefError(
                f"'{shown}' is a server address, not a model to download or a file: use it "
                "as the model of chat or complete (-m http://HOST:PORT/v1)"
            )
        raise RefError(
            f"'{shown}' is a {scheme}:// address; give a path, a catalog id, org/repo:QUANT "
            "or org/repo/file.gguf"
        )
    if _looks_like_path(text):
        return ParsedRef("path", ref, path=Path(text).expanduser())
    if text.lower().endswith(".gguf") and os.path.isfile(text):
        # `models/x.gguf` has the shape of a Hub file ref; a file that is there wins.
        return ParsedRef("path", ref, path=Path(text))
    slashes = text.count("/")
    if slashes == 0:
        if text.lower().endswith(".gguf"):
            return ParsedRef("path", ref, path=Path(text))
        name, _, quant = text.partition(":")
        if not _ID_RE.fullmatch(name):
            raise RefError(
                f"'{shown}' is not a model reference: use a catalog id (see `localbvi models`), "
                "org/repo:QUANT, org/repo/file.gguf or a path to a .gguf file"
            )
        return ParsedRef(
            "catalog", ref, catalog_id=name, quant=_check_quant(quant, ref) if quant else None
        )
    if slashes == 1 and text.lower().endswith(".gguf"):
        return ParsedRef("path", ref, path=Path(text))
    if slashes == 1:
        repo, _, quant = text.partition(":")
        if not _REPO_RE.fullmatch(repo):
            raise _not_a_repo(ref, repo)
        return ParsedRef(
            "hub-quant", ref, repo=repo, quant=_check_quant(quant, ref) if quant else DEFAULT_QUANT
        )
    org, name, filename = text.split("/", 2)
    repo = f"{org}/{name}"
    if not _REPO_RE.fullmatch(repo):
        raise _not_a_repo(ref, repo)
    parts = filename.split("/")
    if ".." in parts or "." in parts or "" in parts or "\\" in filename or ":" in filename:
        raise RefError(
            f"'{shown}': '{_shown(filename, 60)}' is not a file inside the repository (no "
            "'..', '.' or empty parts)"
        )
    problem = hub.filename_problem(filename)
    if problem is not None:
        raise RefError(f"'{shown}' does not name a usable file: {problem}")
    if not filename.lower().endswith(".gguf"):
        raise RefError(f"'{shown}': '{_shown(filename, 60)}' is not a .gguf file")
    return ParsedRef("hub-file", ref, repo=repo, filename=filename, quant=guess_quant(filename))


def _is_foreign(ref: str) -> bool:
    from localbvi.store.foreign import is_foreign_ref

    return is_foreign_ref(ref)


def guess_quant(filename: str) -> str | None:
    """The quantization a file name announces (`…-Q4_K_M.gguf` → Q4_K_M), if any."""
    matches = _QUANT_IN_NAME_RE.findall(Path(filename).name)
    return matches[-1].upper() if matches else None


def split_parts(filename: str) -> list[str]:
    """All parts of a split GGUF given any one of them; `[filename]` when not split."""
    match = _SPLIT_RE.match(filename)
    if match is None:
        return [filename]
    count = int(match["count"])
    return [f"{match['stem']}-{i:05d}-of-{count:05d}.gguf" for i in range(1, count + 1)]


def _is_later_part(filename: str) -> bool:
    match = _SPLIT_RE.match(filename)
    return match is not None and int(match["no"]) != 1


def catalog_match(repo: str, filename: str) -> tuple[CatalogEntry, str] | None:
    """The catalog entry and quant whose file this is, so Hub refs still know base/instruct."""
    try:
        catalog = load_catalog()
    except CatalogError:
        return None
    for entry in catalog:
        if entry.repo.lower() != repo.lower():
            continue
        for quant, quant_file in entry.files.items():
            if quant_file.file == filename:
                return entry, quant
    return None


def pick_quant_file(repo: str, quant: str, files: list[str], *, where: str) -> str:
    """The one GGUF in `files` whose name carries `quant` (first part if split)."""
    ggufs = [
        f
        for f in files
        if f.lower().endswith(".gguf")
        and "mmproj" not in f.lower()
        and hub.filename_problem(f) is None  # names from a server: only ones we can store
    ]
    matching = [f for f in ggufs if (guess_quant(f) or "").upper() == quant.upper()]
    firsts = sorted({split_parts(f)[0] for f in matching})
    if len(firsts) == 1:
        return firsts[0]
    if not firsts:
        quants = sorted({q for f in ggufs if (q := guess_quant(f))})
        listed_quants = ", ".join(quants[:12]) + (" …" if len(quants) > 12 else "")
        available = f"; {where} has {listed_quants}" if quants else f"; {where} has no GGUF"
        hint = f" (e.g. {repo}:{quants[0]})" if quants else ""
        raise RefError(f"{repo} has no {quant} GGUF file{available}{hint}")
    listed = ", ".join(_shown(f, 60) for f in firsts[:4]) + (" …" if len(firsts) > 4 else "")
    raise RefError(f"{repo} has several {quant} GGUF files ({listed}); name one as {repo}/<file>")


def _offline_hint() -> str:
    """Which models can be used right now, for messages about being offline."""
    from localbvi.store.library import list_local

    try:
        local = list_local()
    except Exception:  # a hint must never hide the real error
        return ""
    if not local:
        return " No models are on disk yet."
    names = ", ".join(_shown(m.ref, 40) for m in local[:8]) + (" …" if len(local) > 8 else "")
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
        shown = _shown(ref)
        if parsed.path is not None and not safe_is_file(parsed.path):
            raise RefError(
                f"'{shown}' is a path ({_path_problem(parsed.path)}); `pull` downloads a "
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
    if _is_foreign(ref):  # another tool's file: nothing to download or refresh
        from localbvi.store import foreign

        return foreign.resolve(ref)
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
            f"{_shown(str(path))}: {_path_problem(path)}; give the path of a .gguf file, a "
            "catalog id (`localbvi models`) or a Hub reference such as org/repo:Q4_K_M"
        )
    return ResolvedModel(
        path=path,
        ref=ref,
        display_name=path.name,
        entry=None,
        quant=guess_quant(path.name),
        kind=None,
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
    from localbvi.store import library

    catalog = load_catalog()
    entry = catalog.find(catalog_id)
    if entry is None:
        close = difflib.get_close_matches(catalog_id, list(catalog.entries), n=3, cutoff=0.6)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise RefError(
            f"'{_shown(catalog_id, 60)}' is not a model in the catalog{hint}; run "
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
        cached = [f for f in hub.cached_files(repo) if not _is_later_part(f)]
        try:
            return pick_quant_file(repo, quant, cached, where="the cache")
        except RefError:
            if hub.is_offline():
                if cached:
                    raise
                raise OfflineError(
                    f"{_shown(repo, 60)}:{quant} is not on disk and offline mode is on "
                    "(HF_HUB_OFFLINE=1)"
                ) from None
            if not download:
                raise RefError(
                    f"{_shown(repo, 60)}:{quant} is not on disk; run "
                    f"`localbvi pull {_shown(repo, 60)}:{quant}`"
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
        shown = _shown(ref)
        raise RefError(f"{shown} is not on disk; run `localbvi pull {shown}` to download it")
    first, commit = hub.fetch(repo, parts[0], on_progress=on_progress, cancel=cancel)
    for part in parts[1:]:
        hub.fetch(repo, part, revision=commit, on_progress=on_progress, cancel=cancel)
    return first
