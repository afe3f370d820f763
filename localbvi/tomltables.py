"""Reading user-editable TOML files made of `[[table]]` entries (catalog, experiments).

Both files fail the same ways — bad syntax, stray top-level keys, an entry that is not a
table, an id given twice — and must say so the same way: the file, the entry, the fix.
"""

from __future__ import annotations

import tomllib
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Protocol, TypeVar

from localbvi.errors import LocalbviError

__all__ = ["parse_entries"]


class _HasId(Protocol):
    @property
    def id(self) -> str: ...


T = TypeVar("T", bound=_HasId)


def _quoted(items: Iterable[str]) -> str:
    return ", ".join(f"'{item}'" for item in items)


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
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        # The message carries "(at line L, column C)".
        raise error(f"{path}: not valid TOML: {exc}; fix the syntax there") from None
    except UnicodeDecodeError as exc:
        raise error(f"{path}: not UTF-8 text ({exc}); save it as UTF-8") from None
    except OSError as exc:
        raise error(f"{path}: cannot read it: {exc.strerror or exc}") from None

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
