"""The model catalog: base/instruct pairs of GGUF models on the Hugging Face Hub.

The bundled `models.toml` lists well-known pairs; a user catalog in the config folder
(`paths.user_catalog_path()`) is merged over it, so a user can add a pair or repoint an entry
without editing the package. Every problem in either file becomes a `CatalogError` whose
message names the file, the entry and the fix, because users write these files by hand.

An entry looks like this (every key but `chat_template` and `gated` is required)::

    [[model]]
    id = "gemma-3-270m"
    name = "Gemma 3 270M"
    family = "Gemma 3"
    kind = "base"                      # or "instruct"
    sibling = "gemma-3-270m-it"        # the entry of the other kind
    repo = "unsloth/gemma-3-270m-GGUF"
    params = "270M"
    context_length = 32768
    license = "gemma"
    gated = false                      # true: the Hub asks for a licence click and HF_TOKEN
    # chat_template = "gemma3"         # bundled name, a .jinja file path, or inline Jinja
    [model.files]
    Q4_K_M = { file = "gemma-3-270m-Q4_K_M.gguf", size = 253000000 }
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from localbvi import paths
from localbvi.engine.types import Kind
from localbvi.errors import CatalogError, printable, shorten
from localbvi.tomltables import parse_entries

__all__ = [
    "DEFAULT_QUANT",
    "Catalog",
    "CatalogEntry",
    "QuantFile",
    "bundled_catalog_path",
    "bundled_template_names",
    "load_catalog",
    "parse_catalog_file",
]

DEFAULT_QUANT = "Q4_K_M"
"""The quantization used when a reference names none: the usual size/quality trade-off."""

_PACKAGE_DIR = Path(__file__).resolve().parent
_DATA_DIR = _PACKAGE_DIR / "data"

_REQUIRED_KEYS = (
    "id",
    "name",
    "family",
    "kind",
    "sibling",
    "repo",
    "files",
    "params",
    "context_length",
    "license",
)
_OPTIONAL_KEYS = ("gated", "chat_template")
_ENTRY_KEYS = _REQUIRED_KEYS + _OPTIONAL_KEYS
_FILE_KEYS = ("file", "size")
_KINDS = ("base", "instruct")

# Ids appear in references such as `gemma-3-270m:Q8_0` and `org/repo:QUANT`, so they must
# not contain `:` or `/`; quant names appear after the `:`.
_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_QUANT_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_]*")
_REPO_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*")
_TEMPLATE_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")

_Fail = Callable[[str], CatalogError]
"""Builds a CatalogError that names the file and the entry being parsed."""


@dataclass(frozen=True)
class QuantFile:
    """One downloadable GGUF file of a catalog entry."""

    quant: str
    file: str
    size: int
    """Approximate size in bytes, for disk-space checks and progress before the Hub answers."""


@dataclass(frozen=True)
class CatalogEntry:
    """One model of the catalog, always half of a base/instruct pair."""

    id: str
    name: str
    family: str
    kind: Kind
    sibling: str
    repo: str
    files: Mapping[str, QuantFile] = field(hash=False)
    params: str
    context_length: int
    license: str
    gated: bool
    chat_template: str | None
    """Jinja text that replaces the GGUF's own template, or None to use the GGUF's."""
    source: Path
    """The catalog file this entry came from, so messages can point at it."""

    def file_for(self, quant: str | None = None) -> QuantFile:
        """The file for `quant` (default `DEFAULT_QUANT`); quant names ignore case."""
        wanted = quant or DEFAULT_QUANT
        if wanted in self.files:
            return self.files[wanted]
        for name, quant_file in self.files.items():
            if name.lower() == wanted.lower():
                return quant_file
        available = ", ".join(self.files)
        raise CatalogError(
            f"model '{self.id}' has no {wanted} file (available: {available}); "
            f"pick one, e.g. `{self.id}:{next(iter(self.files))}`"
        )


class Catalog:
    """All known models by id, in catalog order, with consistent sibling links."""

    def __init__(self, entries: Mapping[str, CatalogEntry]) -> None:
        _check_siblings(entries)
        self.entries: Mapping[str, CatalogEntry] = MappingProxyType(dict(entries))

    def __iter__(self) -> Iterator[CatalogEntry]:
        return iter(self.entries.values())

    def __len__(self) -> int:
        return len(self.entries)

    def __contains__(self, id: object) -> bool:
        return id in self.entries

    def find(self, id: str) -> CatalogEntry | None:
        """The entry with this id, or None."""
        return self.entries.get(id)

    def get(self, id: str) -> CatalogEntry:
        """The entry with this id; an unknown id is a user error with close matches."""
        entry = self.entries.get(id)
        if entry is not None:
            return entry
        close = difflib.get_close_matches(id, list(self.entries), n=3, cutoff=0.6)
        hint = f" (did you mean {_quoted_list(close, 'or')}?)" if close else ""
        raise CatalogError(f"unknown model id '{id}'{hint}; run `localbvi models` to list them")

    def pairs(self) -> list[tuple[CatalogEntry, CatalogEntry]]:
        """(base, instruct) for every base entry, in catalog order."""
        return [(entry, self.sibling(entry)) for entry in self if entry.kind == "base"]

    def sibling(self, entry: CatalogEntry) -> CatalogEntry:
        """The other half of `entry`'s pair."""
        sibling = self.entries.get(entry.sibling)
        if sibling is None:
            raise CatalogError(
                f"{entry.source}: model '{entry.id}': sibling '{entry.sibling}' is not in "
                "the catalog; add it or fix the sibling id"
            )
        return sibling


def bundled_catalog_path() -> Path:
    """Where the bundled `models.toml` is: inside the package when installed from a wheel,
    at the repository root in an editable or source checkout."""
    packaged = _PACKAGE_DIR / "models.toml"
    if packaged.is_file():
        return packaged
    return _PACKAGE_DIR.parent / "models.toml"


def bundled_template_names() -> list[str]:
    """Names usable as `chat_template = "<name>"`: the `.jinja` files in `localbvi/data`."""
    return sorted(p.stem for p in _DATA_DIR.glob("*.jinja"))


def load_catalog(bundled: Path | None = None, user: Path | None = None) -> Catalog:
    """The bundled catalog with the user's merged over it.

    A user entry with a bundled id replaces that entry in place; new ids come after the
    bundled ones. A missing user file is normal (most users never write one).
    """
    bundled_path = bundled if bundled is not None else bundled_catalog_path()
    user_path = user if user is not None else paths.user_catalog_path()
    if not bundled_path.is_file():
        raise CatalogError(
            f"{bundled_path}: the bundled model catalog is missing; reinstall localbvi"
        )
    merged = {entry.id: entry for entry in parse_catalog_file(bundled_path)}
    if user_path.is_file():
        for entry in parse_catalog_file(user_path):
            merged[entry.id] = entry
    return Catalog(merged)


def parse_catalog_file(path: Path) -> list[CatalogEntry]:
    """Read and validate one catalog file; sibling links are checked by `Catalog`, since a
    user entry may pair with a bundled one."""
    return parse_entries(path, "model", _parse_entry, CatalogError, "a catalog")


def _parse_entry(path: Path, index: int, raw: dict[str, Any]) -> CatalogEntry:
    raw_id = raw.get("id")
    label = f"model '{raw_id}'" if isinstance(raw_id, str) and raw_id else f"entry {index}"

    def fail(problem: str) -> CatalogError:
        return CatalogError(f"{path}: {label}: {problem}")

    for key in raw:
        if key not in _ENTRY_KEYS:
            raise fail(
                f"unknown key {_shown(key)}{_did_you_mean(key, _ENTRY_KEYS)}; fix its spelling or "
                f"remove it (known keys: {', '.join(_ENTRY_KEYS)})"
            )
    missing = [key for key in _REQUIRED_KEYS if key not in raw]
    if missing:
        raise fail(f"missing {_quoted_list(missing)}; add {_plural(missing, 'it', 'them')}")

    def text(key: str) -> str:
        value = raw[key]
        if not isinstance(value, str) or not value.strip():
            raise fail(f"'{key}' must be a non-empty string, not {_shown(value)}")
        return value

    id_ = text("id")
    if not _ID_RE.fullmatch(id_):
        raise fail(
            "the id may only hold letters, digits, '.', '_' and '-' (no ':' or '/', "
            "which references use); rename it"
        )
    sibling = text("sibling")
    if sibling == id_:
        raise fail("'sibling' names the entry itself; set it to the id of its other half")
    kind = text("kind")
    if kind not in _KINDS:
        raise fail(f'\'kind\' is {_shown(kind)}; set it to "base" or "instruct"')
    repo = text("repo")
    if not _REPO_RE.fullmatch(repo):
        raise fail(f"'repo' is {_shown(repo)}; write the Hub repository as \"org/name\"")

    context_length = raw["context_length"]
    if not _is_int(context_length) or context_length <= 0:
        raise fail(
            f"'context_length' must be a positive whole number, not {_shown(context_length)}"
        )
    gated = raw.get("gated", False)
    if not isinstance(gated, bool):
        raise fail(f"'gated' must be true or false, not {_shown(gated)}")

    template = raw.get("chat_template")
    if template is not None and not isinstance(template, str):
        raise fail(f"'chat_template' must be a string, not {_shown(template)}")

    return CatalogEntry(
        id=id_,
        name=text("name"),
        family=text("family"),
        kind="base" if kind == "base" else "instruct",
        sibling=sibling,
        repo=repo,
        files=_parse_files(raw["files"], fail),
        params=text("params"),
        context_length=context_length,
        license=text("license"),
        gated=gated,
        chat_template=None if template is None else _resolve_template(path, template, fail),
        source=path,
    )


def _parse_files(raw: object, fail: _Fail) -> Mapping[str, QuantFile]:
    example = f'{DEFAULT_QUANT} = {{ file = "name-{DEFAULT_QUANT}.gguf", size = 123456789 }}'
    if not isinstance(raw, dict) or not raw:
        raise fail(f"'files' must be a table of quantizations under [model.files], e.g. {example}")
    files: dict[str, QuantFile] = {}
    for quant, spec in raw.items():
        if not _QUANT_RE.fullmatch(quant):
            raise fail(f"quantization name {_shown(quant)} may only hold letters, digits and '_'")
        if not isinstance(spec, dict):
            raise fail(f"files.{quant} must be a table like {example}")
        for key in spec:
            if key not in _FILE_KEYS:
                raise fail(
                    f"files.{quant} has unknown key {_shown(key)}{_did_you_mean(key, _FILE_KEYS)}; "
                    "only 'file' and 'size' are allowed"
                )
        missing = [key for key in _FILE_KEYS if key not in spec]
        if missing:
            raise fail(f"files.{quant} is missing {_quoted_list(missing)}; e.g. {example}")
        name, size = spec["file"], spec["size"]
        if (
            not isinstance(name, str)
            or not name.endswith(".gguf")
            or name.startswith("/")
            or ".." in name.split("/")
        ):
            raise fail(
                f"files.{quant}.file must be a .gguf path inside the repository, not {_shown(name)}"
            )
        if not _is_int(size) or size <= 0:
            raise fail(
                f"files.{quant}.size must be the approximate size in bytes (a positive whole "
                f"number), not {_shown(size)}"
            )
        files[quant] = QuantFile(quant=quant, file=name, size=size)
    return MappingProxyType(files)


def _resolve_template(path: Path, value: str, fail: _Fail) -> str:
    """Turn a `chat_template` value into Jinja text.

    A bare name picks a bundled template, a value ending in `.jinja` is a file (relative to
    the catalog file), and anything with Jinja tags is the template itself.
    """
    if _TEMPLATE_NAME_RE.fullmatch(value) and not value.endswith(".jinja"):
        bundled = _DATA_DIR / f"{value}.jinja"
        if bundled.is_file():
            return bundled.read_text(encoding="utf-8")
        names = ", ".join(bundled_template_names()) or "none"
        raise fail(
            f"chat_template {_shown(value)} is not a bundled template (bundled: {names}); use one "
            "of those, a path to a .jinja file, or inline Jinja text"
        )
    if value.endswith(".jinja") and "{" not in value:
        template_path = Path(value).expanduser()
        if not template_path.is_absolute():
            template_path = path.parent / template_path
        try:
            return template_path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise fail(
                f"chat_template file {template_path} cannot be read ({exc}); fix the path"
            ) from exc
    if "{{" in value or "{%" in value:
        return value
    raise fail(
        f"chat_template {_shown(value)} is neither a bundled template name, a .jinja file nor "
        "Jinja text; fix it or remove the key to use the GGUF's own template"
    )


def _check_siblings(entries: Mapping[str, CatalogEntry]) -> None:
    """Every entry must name an existing entry of the other kind as its sibling."""
    for entry in entries.values():
        where = f"{entry.source}: model '{entry.id}'"
        sibling = entries.get(entry.sibling)
        if sibling is None:
            hint = _did_you_mean(entry.sibling, list(entries))
            raise CatalogError(
                f"{where}: sibling '{entry.sibling}' is not in the catalog{hint}; add an "
                f"entry with that id or set 'sibling' to the id of {_other(entry.kind)} model"
            )
        if sibling.kind == entry.kind:
            origin = "" if sibling.source == entry.source else f" (from {sibling.source})"
            raise CatalogError(
                f"{where}: sibling '{sibling.id}'{origin} is also {entry.kind}; a pair is one "
                f"base and one instruct model, so set 'sibling' to {_other(entry.kind)} model"
            )


def _other(kind: str) -> str:
    """The other kind, with its article, for messages."""
    return "an instruct" if kind == "base" else "a base"


def _shown(value: object) -> str:
    """A value from the file, quoted for a message: short, and without terminal controls."""
    return shorten(printable(repr(value)), 80)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _quoted_list(items: list[str], last: str = "and") -> str:
    quoted = [f"'{item}'" for item in items]
    return quoted[0] if len(quoted) == 1 else f"{', '.join(quoted[:-1])} {last} {quoted[-1]}"


def _plural(items: list[str], one: str, many: str) -> str:
    return one if len(items) == 1 else many


def _did_you_mean(word: str, choices: Iterable[str]) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""
