"""What a model reference says by its shape alone, and what GGUF file names say.

No lookups here (no catalog, no disk beyond `is_file`, no network): `refs` resolves references
and `library` lists and removes files, and both build on these names, so neither imports the
other's internals.
"""

from __future__ import annotations

import errno
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from localbvi.catalog import DEFAULT_QUANT
from localbvi.errors import RefError, printable, shorten
from localbvi.store import hub

__all__ = [
    "FOREIGN_PREFIXES",
    "MAX_REF_CHARS",
    "ParsedRef",
    "Tool",
    "guess_quant",
    "is_foreign_ref",
    "is_later_part",
    "parse_ref",
    "path_problem",
    "pick_quant_file",
    "safe_is_file",
    "split_parts",
    "user_text",
]

RefKind = Literal["path", "catalog", "hub-quant", "hub-file", "foreign"]

Tool = Literal["lmstudio", "ollama", "llama.cpp", "gpt4all"]
"""Another tool whose downloaded models are used where they are (`store/foreign.py`)."""

FOREIGN_PREFIXES: dict[str, Tool] = {
    "lmstudio:": "lmstudio",
    "ollama:": "ollama",
    "llamacpp:": "llama.cpp",
    "gpt4all:": "gpt4all",
}
"""How a reference names another tool's model (`ollama:llama3.2:1b`)."""

MAX_REF_CHARS = 4096
"""Longest reference accepted: the longest path Linux can open (PATH_MAX)."""
_NAME = r"[A-Za-z0-9][A-Za-z0-9._-]{0,95}"  # the Hub allows 96 characters per name
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


def user_text(text: str, limit: int = 80) -> str:
    """User input as it may appear in a message: printable and short (one line stays short)."""
    return shorten(printable(text), limit)


def safe_is_file(path: Path) -> bool:
    """`path.is_file()`, False instead of an exception for names the system cannot take."""
    try:
        return path.is_file()
    except (OSError, ValueError):
        return False


def path_problem(path: Path) -> str:
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
        f"'{user_text(ref)}': '{user_text(repo, 60)}' is not a Hub repository name (org/name, "
        "each at most 96 letters, digits, '.', '_' or '-')"
    )


def _check_quant(quant: str, text: str) -> str:
    if not _QUANT_RE.fullmatch(quant):
        raise RefError(
            f"'{user_text(text)}': '{user_text(quant, 40)}' is not a quantization name "
            "(like Q4_K_M or Q8_0)"
        )
    return quant.upper()


def parse_ref(ref: str) -> ParsedRef:
    """Classify a reference by its shape alone (no disk, no network)."""
    text = ref.strip()
    if not text:
        raise RefError("an empty model reference: give a path, a catalog id or org/repo:QUANT")
    if is_foreign_ref(text):
        return ParsedRef("foreign", ref)
    shown = user_text(text)
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
        if not hub.REPO_RE.fullmatch(repo):
            raise _not_a_repo(ref, repo)
        return ParsedRef(
            "hub-quant", ref, repo=repo, quant=_check_quant(quant, ref) if quant else DEFAULT_QUANT
        )
    org, name, filename = text.split("/", 2)
    repo = f"{org}/{name}"
    if not hub.REPO_RE.fullmatch(repo):
        raise _not_a_repo(ref, repo)
    parts = filename.split("/")
    if ".." in parts or "." in parts or "" in parts or "\\" in filename or ":" in filename:
        raise RefError(
            f"'{shown}': '{user_text(filename, 60)}' is not a file inside the repository (no "
            "'..', '.' or empty parts)"
        )
    problem = hub.filename_problem(filename)
    if problem is not None:
        raise RefError(f"'{shown}' does not name a usable file: {problem}")
    if not filename.lower().endswith(".gguf"):
        raise RefError(f"'{shown}': '{user_text(filename, 60)}' is not a .gguf file")
    return ParsedRef("hub-file", ref, repo=repo, filename=filename, quant=guess_quant(filename))


def is_foreign_ref(ref: str) -> bool:
    """Whether `ref` names another tool's model (`ollama:…`, `lmstudio:…`, …)."""
    return ref.strip().lower().startswith(tuple(FOREIGN_PREFIXES))


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


def is_later_part(filename: str) -> bool:
    match = _SPLIT_RE.match(filename)
    return match is not None and int(match["no"]) != 1


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
    listed = ", ".join(user_text(f, 60) for f in firsts[:4]) + (" …" if len(firsts) > 4 else "")
    raise RefError(f"{repo} has several {quant} GGUF files ({listed}); name one as {repo}/<file>")
