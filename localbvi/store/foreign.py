"""Models other tools already downloaded: used where they are, never copied, never deleted.

LM Studio, Ollama, llama.cpp and GPT4All each keep GGUF files in a folder of their own. We
look in those fixed folders only, to a fixed depth, for at most `MAX_ENTRIES` directory
entries each, so a listing stays fast however big the home folder is. Only regular files that
start with the GGUF magic count; a symlink counts only if it points inside the tool's folder,
and symlinked folders are not entered. Unreadable or malformed Ollama manifests are skipped.

Each model gets a reference (`REF`) that names it the way its tool does:

- `ollama:NAME[:TAG]`: an Ollama model (`ollama:llama3.2:1b`, `ollama:user/model`,
  `ollama:hf.co/org/repo:Q4_K_M`; the tag defaults to `latest`);
- `lmstudio:PUBLISHER/REPO/FILE.gguf`: a file in LM Studio's models folder;
- `llamacpp:FILE.gguf`: a file in llama.cpp's download cache;
- `gpt4all:FILE.gguf`: a file in GPT4All's folder.

A plain path to the file works as well. Each location can be moved with an environment
variable (`OLLAMA_MODELS` and `LLAMA_CACHE` are the tools' own; `LMSTUDIO_MODELS` and
`GPT4ALL_MODELS` are ours), which also keeps tests away from the real home folder.
"""

from __future__ import annotations

import json
import os
import re
import stat
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from localbvi.errors import RefError
from localbvi.store.naming import FOREIGN_PREFIXES as _PREFIXES
from localbvi.store.naming import Tool, guess_quant, is_foreign_ref, user_text

__all__ = [
    "MAX_ENTRIES",
    "TOOLS",
    "ForeignModel",
    "Tool",
    "find",
    "is_foreign_ref",
    "locations",
    "owner",
    "scan",
    "tool_label",
]

TOOLS: dict[Tool, str] = {
    "lmstudio": "LM Studio",
    "ollama": "Ollama",
    "llama.cpp": "llama.cpp",
    "gpt4all": "GPT4All",
}
"""Each tool's key (the `source` of its models) and its name as people write it."""

_PREFIX_OF: dict[Tool, str] = {tool: prefix for prefix, tool in _PREFIXES.items()}

_HOW_TO_DELETE: dict[Tool, str] = {
    "lmstudio": "delete it in LM Studio's My Models",
    "ollama": "run `ollama rm {name}`",
    "llama.cpp": "delete the file yourself once llama.cpp no longer needs it",
    "gpt4all": "delete it in GPT4All's Models view",
}

MAX_ENTRIES = 5000
"""Directory entries looked at per location: a bound on the work, whatever is in there."""
MAX_MANIFEST_BYTES = 1 << 20
"""An Ollama manifest is a few hundred bytes; anything far bigger is not one."""
GGUF_MAGIC = b"GGUF"

_OLLAMA_REGISTRY = "registry.ollama.ai"
_OLLAMA_LIBRARY = "library"
_OLLAMA_MODEL = "application/vnd.ollama.image.model"
_OLLAMA_CONFIG = "application/vnd.docker.container.image.v1+json"
_DIGEST_RE = re.compile(r"sha256:([0-9a-f]{64})")
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
_SPLIT_RE = re.compile(r"-(\d{5})-of-(\d{5})\.gguf$", re.IGNORECASE)


@dataclass(frozen=True)
class ForeignModel:
    """A GGUF another tool keeps: loadable in place, read-only for us."""

    tool: Tool
    ref: str
    """`ollama:llama3.2:1b`, `lmstudio:PUB/REPO/FILE.gguf`, …: resolves to `path`."""
    name: str
    """The model's name in its tool (`llama3.2:1b`, `FILE.gguf`)."""
    path: Path
    """The file llama.cpp opens (the first part of a split file)."""
    size: int
    """Bytes on disk, all parts together."""
    quant: str | None
    repo: str | None = None
    """The Hub repository its folders name (LM Studio's `PUBLISHER/REPO`), else None."""

    @property
    def label(self) -> str:
        return TOOLS[self.tool]


def tool_label(source: str) -> str | None:
    """The tool's name ("Ollama") for a model's `source`; None when it is no other tool."""
    return TOOLS.get(source)  # type: ignore[call-overload, no-any-return]


# --- where each tool keeps its models --------------------------------------------------------


def _env_path(name: str) -> Path | None:
    value = os.environ.get(name)
    return Path(value).expanduser() if value else None


_OVERRIDES: dict[Tool, str] = {
    "lmstudio": "LMSTUDIO_MODELS",
    "ollama": "OLLAMA_MODELS",
    "llama.cpp": "LLAMA_CACHE",
    "gpt4all": "GPT4ALL_MODELS",
}


def locations(tool: Tool) -> list[Path]:
    """The folders to look in for `tool`: its environment override, else its defaults."""
    override = _env_path(_OVERRIDES[tool])
    if override is not None:
        return [override]
    try:
        home = Path.home()
    except (RuntimeError, KeyError):  # no HOME and no password entry: no default folders
        return []
    local = os.environ.get("LOCALAPPDATA")
    if tool == "lmstudio":
        return [home / ".lmstudio" / "models", home / ".cache" / "lm-studio" / "models"]
    if tool == "ollama":
        found = [home / ".ollama" / "models"]
        if sys.platform.startswith("linux"):
            found.append(Path("/usr/share/ollama/.ollama/models"))  # the Linux service's
        return found
    if tool == "llama.cpp":
        if sys.platform == "darwin":
            return [home / "Library" / "Caches" / "llama.cpp"]
        if sys.platform == "win32":
            return [Path(local) / "llama.cpp"] if local else []
        xdg = os.environ.get("XDG_CACHE_HOME")
        return [(Path(xdg) if xdg else home / ".cache") / "llama.cpp"]
    if sys.platform == "darwin":
        return [home / "Library" / "Application Support" / "nomic.ai" / "GPT4All"]
    if sys.platform == "win32":
        return [Path(local) / "nomic.ai" / "GPT4All"] if local else []
    xdg = os.environ.get("XDG_DATA_HOME")
    return [(Path(xdg) if xdg else home / ".local" / "share") / "nomic.ai" / "GPT4All"]


# --- bounded, symlink-safe folder reading ----------------------------------------------------


class _Budget:
    """How many more directory entries one location may cost."""

    def __init__(self) -> None:
        self.left = MAX_ENTRIES

    def take(self) -> bool:
        self.left -= 1
        return self.left >= 0


def _entries(folder: Path, budget: _Budget) -> list[os.DirEntry[str]]:
    """The entries of `folder`, sorted by name; none if it cannot be read."""
    out: list[os.DirEntry[str]] = []
    try:
        with os.scandir(folder) as it:
            for entry in it:
                if not budget.take():
                    break
                out.append(entry)
    except (OSError, ValueError):  # unreadable, or a name the system cannot take (NUL)
        return []
    return sorted(out, key=lambda e: e.name)


def _subfolders(folder: Path, budget: _Budget) -> Iterator[Path]:
    """Real subfolders only: a symlinked folder could lead anywhere, or in a loop."""
    for entry in _entries(folder, budget):
        try:
            if entry.is_dir(follow_symlinks=False):
                yield Path(entry.path)
        except OSError:
            continue


def _inside(path: Path, root_real: str) -> bool:
    real = os.path.realpath(path)
    return os.path.commonpath([root_real, real]) == root_real


def _gguf_size(path: Path, root_real: str) -> int | None:
    """The size of `path` if it is a GGUF file we may read (inside the tool's folder), else None."""
    try:
        if not _inside(path, root_real):
            return None  # a symlink is never followed out of the tool's folder
        info = path.stat()
        if not stat.S_ISREG(info.st_mode):
            return None
        with path.open("rb") as f:
            if f.read(4) != GGUF_MAGIC:
                return None
    except (OSError, ValueError):
        return None
    return info.st_size


def _is_gguf_name(name: str) -> bool:
    lower = name.lower()
    return (
        lower.endswith(".gguf")
        and "mmproj" not in lower  # vision projectors: not a model on their own
        and not lower.startswith("incomplete-")  # GPT4All's downloads in progress
    )


def _model_files(folder: Path, root_real: str, budget: _Budget) -> Iterator[tuple[Path, int]]:
    """(first part, total size) of each complete GGUF model directly in `folder`."""
    files = [e for e in _entries(folder, budget) if _is_gguf_name(e.name)]
    names = {e.name for e in files}
    for entry in files:
        split = _SPLIT_RE.search(entry.name)
        parts = [entry.name]
        if split is not None:
            if int(split[1]) != 1:
                continue  # later parts are counted with the first
            count = int(split[2])
            stem = entry.name[: split.start()]
            ext = entry.name[-5:]
            parts = [f"{stem}-{i:05d}-of-{count:05d}{ext}" for i in range(1, count + 1)]
            if any(p not in names for p in parts):
                continue  # an incomplete split set is not loadable
        sizes = [_gguf_size(folder / p, root_real) for p in parts[:1]]
        sizes += [_plain_size(folder / p, root_real) for p in parts[1:]]
        if any(s is None for s in sizes):
            continue
        yield Path(entry.path), sum(s for s in sizes if s is not None)


def _plain_size(path: Path, root_real: str) -> int | None:
    """Later split parts carry no magic of their own worth checking; size and place only."""
    try:
        if not _inside(path, root_real):
            return None
        info = path.stat()
    except (OSError, ValueError):
        return None
    return info.st_size if stat.S_ISREG(info.st_mode) else None


# --- per tool ---------------------------------------------------------------------------------


def _scan_lmstudio(root: Path) -> Iterator[ForeignModel]:
    """`PUBLISHER/REPO/FILE.gguf`, LM Studio's layout (the Hub's org/repo)."""
    root_real, budget = os.path.realpath(root), _Budget()
    for publisher in _subfolders(root, budget):
        for repo in _subfolders(publisher, budget):
            for path, size in _model_files(repo, root_real, budget):
                name = f"{publisher.name}/{repo.name}/{path.name}"
                yield ForeignModel(
                    "lmstudio",
                    f"lmstudio:{name}",
                    path.name,
                    path,
                    size,
                    guess_quant(path.name),
                    f"{publisher.name}/{repo.name}",
                )


def _scan_flat(tool: Tool, root: Path) -> Iterator[ForeignModel]:
    """A folder of .gguf files (llama.cpp's cache, GPT4All's models folder)."""
    root_real, budget = os.path.realpath(root), _Budget()
    for path, size in _model_files(root, root_real, budget):
        yield ForeignModel(
            tool, f"{_PREFIX_OF[tool]}{path.name}", path.name, path, size, guess_quant(path.name)
        )


def _ollama_name(host: str, namespace: str, model: str, tag: str) -> str:
    """The name `ollama list` shows: the default registry and `library/` left out."""
    if host == _OLLAMA_REGISTRY:
        base = model if namespace == _OLLAMA_LIBRARY else f"{namespace}/{model}"
    else:
        base = f"{host}/{namespace}/{model}"
    return f"{base}:{tag}"


def _read_json(path: Path) -> Any:
    """Small JSON file contents, or None when missing, too big, unreadable or malformed."""
    try:
        if path.is_symlink() or path.stat().st_size > MAX_MANIFEST_BYTES:
            return None
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _ollama_model(root: Path, root_real: str, manifest: Path, name: str) -> ForeignModel | None:
    """The model a manifest names, if the manifest is well formed and its blob is a GGUF."""
    data = _read_json(manifest)
    layers = data.get("layers") if isinstance(data, dict) else None
    if not isinstance(layers, list):
        return None
    model = next(
        (x for x in layers if isinstance(x, dict) and x.get("mediaType") == _OLLAMA_MODEL), None
    )
    digest = _DIGEST_RE.fullmatch(str(model.get("digest", ""))) if model else None
    if digest is None:
        return None
    blob = root / "blobs" / f"sha256-{digest[1]}"
    if not os.path.lexists(blob) and os.path.lexists(root / "blobs" / f"sha256:{digest[1]}"):
        blob = root / "blobs" / f"sha256:{digest[1]}"  # older Ollama versions named it so
    size = _gguf_size(blob, root_real)
    if size is None:
        return None
    quant = None
    config = data.get("config") if isinstance(data, dict) else None
    if isinstance(config, dict) and config.get("mediaType") == _OLLAMA_CONFIG:
        config_digest = _DIGEST_RE.fullmatch(str(config.get("digest", "")))
        if config_digest is not None:
            details = _read_json(root / "blobs" / f"sha256-{config_digest[1]}")
            file_type = details.get("file_type") if isinstance(details, dict) else None
            if isinstance(file_type, str) and _NAME_RE.fullmatch(file_type):
                quant = file_type.upper()
    return ForeignModel("ollama", f"ollama:{name}", name, blob, size, quant)


def _scan_ollama(root: Path) -> Iterator[ForeignModel]:
    """`manifests/HOST/NAMESPACE/MODEL/TAG` JSON files pointing at `blobs/sha256-HEX`."""
    root_real, budget = os.path.realpath(root), _Budget()
    manifests = root / "manifests"
    for host in _subfolders(manifests, budget):
        for namespace in _subfolders(host, budget):
            for model in _subfolders(namespace, budget):
                for tag in _entries(model, budget):
                    parts = (host.name, namespace.name, model.name, tag.name)
                    if not all(_NAME_RE.fullmatch(p) for p in parts):
                        continue
                    found = _ollama_model(root, root_real, Path(tag.path), _ollama_name(*parts))
                    if found is not None:
                        yield found


def scan(tools: tuple[Tool, ...] = tuple(TOOLS)) -> list[ForeignModel]:
    """Every model the other tools keep, each reference once (the first location wins)."""
    found: dict[str, ForeignModel] = {}
    for tool in tools:
        for root in locations(tool):
            if not os.path.isdir(root):  # never raises (a folder we may not enter)
                continue
            if tool == "lmstudio":
                models: Iterator[ForeignModel] = _scan_lmstudio(root)
            elif tool == "ollama":
                models = _scan_ollama(root)
            else:
                models = _scan_flat(tool, root)
            for model in models:
                found.setdefault(model.ref, model)
    return list(found.values())


# --- references ---------------------------------------------------------------------------------


def _split_ref(ref: str) -> tuple[Tool, str]:
    text = ref.strip()
    for prefix, tool in _PREFIXES.items():
        if text.lower().startswith(prefix):
            return tool, text[len(prefix) :]
    raise RefError(f"'{user_text(ref, 100)}' is not another tool's model")


def _where(tool: Tool) -> str:
    places = ", ".join(str(p) for p in locations(tool)) or "no folder on this system"
    return f"{TOOLS[tool]}'s models ({places})"


def _not_found(ref: str, tool: Tool) -> RefError:
    return RefError(
        f"{user_text(ref, 100)} is not among {_where(tool)}; `localbvi models` lists the models "
        "other tools downloaded"
    )


def _ollama_parts(name: str) -> tuple[str, str, str, str] | None:
    """(host, namespace, model, tag) of an Ollama name, or None if it is not one."""
    base, tag = name, "latest"
    last = name.rsplit("/", 1)[-1]
    if ":" in last:
        base, tag = name.rsplit(":", 1)
    pieces = base.split("/")
    if len(pieces) == 1:
        parts = (_OLLAMA_REGISTRY, _OLLAMA_LIBRARY, pieces[0], tag)
    elif len(pieces) == 2:
        parts = (_OLLAMA_REGISTRY, pieces[0], pieces[1], tag)
    elif len(pieces) == 3:
        parts = (pieces[0], pieces[1], pieces[2], tag)
    else:
        return None
    return parts if all(_NAME_RE.fullmatch(p) for p in parts) else None


def find(ref: str) -> ForeignModel:
    """The model an `ollama:`/`lmstudio:`/`llamacpp:`/`gpt4all:` reference names.

    Looked up directly (no scan): the reference says where the file is.
    """
    tool, name = _split_ref(ref)
    if tool == "ollama":
        parts = _ollama_parts(name)
        if parts is None:
            raise RefError(
                f"'{user_text(ref, 100)}' is not an Ollama model name: use ollama:NAME[:TAG] as "
                "`ollama list` shows it (e.g. ollama:llama3.2:1b)"
            )
        for root in locations(tool):
            manifest = root / "manifests" / Path(*parts)
            found = _ollama_model(root, os.path.realpath(root), manifest, _ollama_name(*parts))
            if found is not None:
                return found
        raise _not_found(ref, tool)
    pieces = name.split("/")
    depth = 3 if tool == "lmstudio" else 1
    if (
        len(pieces) != depth
        or not all(p and p not in (".", "..") and "\\" not in p for p in pieces)
        or any(ord(c) < 32 or ord(c) == 127 for c in name)
        or not _is_gguf_name(pieces[-1])
    ):
        shape = "PUBLISHER/REPO/FILE.gguf" if tool == "lmstudio" else "FILE.gguf"
        raise RefError(
            f"'{user_text(ref, 100)}' does not name a model the way {TOOLS[tool]} keeps it: use "
            f"{_PREFIX_OF[tool]}{shape}"
        )
    for root in locations(tool):
        folder = root.joinpath(*pieces[:-1])
        for path, size in _model_files(folder, os.path.realpath(root), _Budget()):
            if path.name == pieces[-1]:
                quant = guess_quant(path.name)
                return ForeignModel(tool, ref.strip(), path.name, path, size, quant)
    raise _not_found(ref, tool)


def owner(path: Path) -> tuple[Tool, Path] | None:
    """The tool whose folder holds `path` (as written or once links are resolved), if any."""
    try:
        candidates = {os.path.abspath(path.expanduser()), os.path.realpath(path.expanduser())}
    except (OSError, ValueError):
        return None  # not a path the system can take, so in no tool's folder
    for tool in TOOLS:
        for root in locations(tool):
            roots = {os.path.abspath(root), os.path.realpath(root)}
            for r in roots:
                for c in candidates:
                    if c != r and os.path.commonpath([r, c]) == r:
                        return tool, root
    return None


def refusal(tool: Tool, what: str, name: str | None = None) -> str:
    """The one line `localbvi rm` answers for another tool's model."""
    how = _HOW_TO_DELETE[tool].format(name=name or what)
    return (
        f"{user_text(what, 100)} belongs to {TOOLS[tool]}, and localbvi never deletes another "
        f"tool's models: nothing was removed. To free its space, {how}"
    )
