"""Reading the user-editable TOML files: settings, the catalog and experiments.

Each is read with `read_toml_text` and `parse_toml`, which bound what a file can cost before
anything trusts it: a size limit (a 50 MB file is refused without being read) and a nesting
limit (tomllib recurses once per nested array or inline table, so a few thousand `[` end in
RecursionError). Every problem is one `error(message)` that names the file and the fix.

`parse_entries` reads the files made of `[[table]]` entries (catalog, experiments). Both fail
the same ways — bad syntax, stray top-level keys, an entry that is not a table, an id given
twice — and must say so the same way: the file, the entry, the fix.
"""

from __future__ import annotations

import os
import stat
import tomllib
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Protocol, TypeVar

from localbvi.errors import LocalbviError

__all__ = ["MAX_TOML_BYTES", "MAX_TOML_DEPTH", "parse_entries", "parse_toml", "read_toml_text"]

MAX_TOML_BYTES = 1_000_000
"""Largest TOML file localbvi reads. Its own files are a few kilobytes; anything near this is
not one of them, and parsing it all would stall the app's start."""

MAX_TOML_DEPTH = 32
"""Deepest nesting of tables and arrays accepted (the document itself is level 1). localbvi's
files need 5: catalog > [[model]] list > entry > files > quantization."""


class _HasId(Protocol):
    @property
    def id(self) -> str: ...


T = TypeVar("T", bound=_HasId)


def _quoted(items: Iterable[str]) -> str:
    return ", ".join(f"'{item}'" for item in items)


def read_toml_text(path: Path, error: type[LocalbviError]) -> str | None:
    """The text of `path`, or None when there is no such file.

    Raises `error` for something that is not a regular file, a file larger than
    `MAX_TOML_BYTES`, one that cannot be read or is not UTF-8. Never reads past the limit:
    a FIFO or /dev/zero given as a settings file must not hang the app or fill its memory.
    """
    try:
        info = os.stat(path)
        if not stat.S_ISREG(info.st_mode):
            raise error(f"{path}: not a regular file; point localbvi at a TOML file")
        if info.st_size > MAX_TOML_BYTES:
            raise error(_too_big(path, info.st_size))
        with path.open("rb") as f:
            raw = f.read(MAX_TOML_BYTES + 1)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise error(f"{path}: cannot read it: {exc.strerror or exc}") from None
    if len(raw) > MAX_TOML_BYTES:  # it grew after stat
        raise error(_too_big(path, len(raw)))
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise error(f"{path}: not UTF-8 text (byte {exc.start}); save it as UTF-8") from None


def _too_big(path: Path, size: int) -> str:
    return (
        f"{path}: the file is {size / 1e6:.1f} MB, more than localbvi reads "
        f"({MAX_TOML_BYTES / 1e6:g} MB); these files are a few kilobytes, so it was not "
        "read: is this the right file?"
    )


def parse_toml(text: str, path: Path, error: type[LocalbviError]) -> dict[str, Any]:
    """`text` (read from `path`) as TOML, refusing nesting deeper than `MAX_TOML_DEPTH`."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        # The message carries "(at line L, column C)".
        raise error(f"{path}: not valid TOML: {exc}; fix the syntax there") from None
    except RecursionError:
        raise error(_too_deep(path, _deep_line(text))) from None
    if _depth(data) > MAX_TOML_DEPTH:
        raise error(_too_deep(path, _deep_line(text)))
    return data


def _too_deep(path: Path, line: int | None) -> str:
    where = f" (from line {line})" if line else ""
    return (
        f"{path}: tables or arrays nested more than {MAX_TOML_DEPTH} levels deep{where}; "
        "no localbvi file needs that: fix or remove that part"
    )


def _depth(data: object) -> int:
    """How deeply tables and arrays nest in `data`, without recursion (stops past the limit)."""
    deepest = 0
    stack: list[tuple[object, int]] = [(data, 1)]
    while stack and deepest <= MAX_TOML_DEPTH:
        value, level = stack.pop()
        if isinstance(value, dict):
            children: Iterable[object] = value.values()
        elif isinstance(value, list):
            children = value
        else:
            continue
        deepest = max(deepest, level)
        stack.extend((child, level + 1) for child in children)
    return deepest


def _deep_line(text: str) -> int | None:
    """The line where brackets (or one line's dotted keys) first nest past the limit.

    A rough scan that skips strings and comments: it only points the user somewhere in the
    message; `parse_toml` decides with the real parser.
    """
    depth = dots = 0
    quote = ""
    escaped = comment = False
    line = 1
    for ch in text:
        if ch == "\n":
            line, dots, comment = line + 1, 0, False
        elif comment:
            continue
        elif quote:
            if escaped:
                escaped = False
            elif ch == "\\" and quote == '"':
                escaped = True
            elif ch == quote:
                quote = ""
        elif ch in "\"'":
            quote = ch
        elif ch == "#":
            comment = True
        elif ch in "[{":
            depth += 1
        elif ch in "]}":
            depth = max(0, depth - 1)
        elif ch == ".":
            dots += 1
        if depth > MAX_TOML_DEPTH or dots > MAX_TOML_DEPTH:
            return line
    return None


def parse_entries(
    path: Path,
    table: str,
    parse: Callable[[Path, int, dict[str, Any]], T],
    error: type[LocalbviError],
    holds: str,
) -> list[T]:
    """Every `[[table]]` entry of `path`, parsed by `parse(path, index, raw)`, ids unique.

    `holds` names the file in messages ("a catalog", "this file").
    """
    text = read_toml_text(path, error)
    if text is None:
        raise error(f"{path}: cannot read it: there is no such file")
    data = parse_toml(text, path, error)

    extra = [key for key in data if key != table]
    if extra:
        raise error(
            f"{path}: unknown top-level key {_quoted(extra)}; {holds} holds only "
            f"[[{table}]] tables: put each {table} under a [[{table}]] header"
        )
    raw_items = data.get(table, [])
    if not isinstance(raw_items, list) or not all(isinstance(r, dict) for r in raw_items):
        raise error(f"{path}: '{table}' must be a list of tables; write each under [[{table}]]")

    out: list[T] = []
    seen: dict[str, int] = {}
    for index, raw in enumerate(raw_items, start=1):
        item = parse(path, index, raw)
        if item.id in seen:
            raise error(
                f"{path}: {table} '{item.id}' appears twice (entries {seen[item.id]} and "
                f"{index}); give each entry its own id or delete one"
            )
        seen[item.id] = index
        out.append(item)
    return out
