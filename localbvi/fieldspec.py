"""Fields defined once: each carries its default, range or choices, and help text.

A value class declares a field as `temperature: float = spec(0.8, "Randomness…", lo=0, hi=5)`.
`specs(cls)` lists the fields with what their annotations add (whole number or not, the
choices of a `Literal`, whether None is allowed), and from that one list come the settings
file's keys and their checks (`localbvi.settings`), the CLI flags (`localbvi.cli.common`) and
the app's settings form (`localbvi.tui.state`): a field added to the class appears in all.
"""

from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

from localbvi.errors import printable, shorten

__all__ = ["MAX_TEXT", "Spec", "describe", "required", "spec", "specs", "toml_value"]

T = TypeVar("T")

MAX_TEXT = 2000
"""Longest text value accepted (model references, URLs, names)."""


@dataclass(frozen=True)
class Spec:
    """One field: the values it takes and the words that explain it."""

    help: str
    label: str = ""
    """Its name in the app's settings form."""
    flag: str = ""
    """Its command-line flag, "" for none."""
    setting: bool = True
    """A key in the settings file and a field of the app's settings form."""
    lo: float | None = None
    hi: float | None = None
    example: object = None
    """A sensible value for messages and commented-out examples (default: the default)."""
    pattern: str = ""
    """A regular expression a text value must match in full."""
    rule: str = ""
    """What `pattern` asks for, in words: "start with http:// or https://"."""
    # Filled in by `specs` from the dataclass field and its annotation:
    name: str = ""
    default: Any = None
    kinds: tuple[type, ...] = ()
    """Of int, float, str, tuple."""
    choices: tuple[str, ...] = ()
    optional: bool = False
    """None is allowed: the key may be left out, the form field left empty."""

    @property
    def integer(self) -> bool:
        return int in self.kinds and float not in self.kinds

    @property
    def number(self) -> bool:
        return int in self.kinds or float in self.kinds

    def words(self) -> str:
        """What the value must be, in words: '"auto" or a whole number'."""
        kind = {int: "a whole number", float: "a number", str: "a string in quotes"}
        parts = [f'"{c}"' for c in self.choices]
        parts += [
            kind[k] for k in self.kinds if k in kind and not (k is int and float in self.kinds)
        ]
        return parts[0] if len(parts) == 1 else f"{', '.join(parts[:-1])} or {parts[-1]}"

    def span(self) -> str:
        """The range in words: "between 0 and 5", "at least 1" ("" when unbounded)."""
        lo, hi = _num(self.lo), _num(self.hi)
        if self.lo is not None and self.hi is not None:
            return f"between {lo} and {hi}"
        return f"at least {lo}" if self.lo is not None else f"at most {hi}" if hi else ""

    def contains(self, value: float) -> bool:
        return (
            math.isfinite(value)
            and (self.lo is None or value >= self.lo)
            and (self.hi is None or value <= self.hi)
        )

    def wanted(self) -> str:
        """The type and range in words: "a number between 0 and 5"."""
        return " ".join(p for p in (self.words(), self.span() if self.number else "") if p)

    def problem(self, value: object, key: str) -> str | None:
        """Why `value` (read from a TOML file as `key`) does not suit this field, else None."""
        name = key.rsplit(".", 1)[-1]
        example = f"{name} = {toml_value(self.example)}"
        left_out = " (or leave it out)" if self.optional else ""
        if isinstance(value, str) and value in self.choices:
            return None
        if not self._typed(value):
            return (
                f"'{key}' must be {self.words()}, not {describe(value)}: write {example}{left_out}"
            )
        if isinstance(value, int | float) and not self.contains(value):
            left_out = " (or left out)" if self.optional else ""
            return f"'{key}' is {value} but must be {self.span()}{left_out}: e.g. {example}"
        if isinstance(value, str) and len(value) > MAX_TEXT:
            return (
                f"'{key}' is {len(value)} characters long, more than any setting needs "
                f"({MAX_TEXT}): write {example}"
            )
        if isinstance(value, str) and self.pattern and not re.fullmatch(self.pattern, value, re.S):
            return f"'{key}' must {self.rule}"
        return None

    def _typed(self, value: object) -> bool:
        if isinstance(value, bool):
            return False
        if isinstance(value, int):
            return int in self.kinds or float in self.kinds
        if isinstance(value, float):
            return float in self.kinds
        return isinstance(value, str) and str in self.kinds

    def parse(self, text: str) -> Any:
        """The value typed on a command line or in a form field (empty: None where allowed).

        Raises ValueError whose message is `wanted()`, for the caller to frame.
        """
        text = text.strip()
        if text in self.choices or (str in self.kinds and not self.number):
            return text
        if not text and self.optional:
            return None
        try:
            value = int(text) if self.integer else float(text)
        except ValueError:
            raise ValueError(self.wanted()) from None
        if not self.contains(value):
            raise ValueError(self.wanted())
        return value

    def cast(self, value: Any) -> Any:
        """A whole number read for a decimal field becomes a float."""
        return float(value) if isinstance(value, int) and float in self.kinds else value


def _num(value: float | None) -> str:
    return str(int(value)) if value is not None and value == int(value) else str(value)


def spec(default: T, help: str, *, factory: Callable[[], T] | None = None, **kw: Any) -> T:
    """A dataclass field with its `Spec` (the keyword arguments are `Spec`'s)."""
    meta = {"spec": Spec(help=help, **kw)}
    if factory is not None:
        return dataclasses.field(default_factory=factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def required(help: str, **kw: Any) -> Any:
    """A dataclass field without a default, with its `Spec`."""
    return dataclasses.field(metadata={"spec": Spec(help=help, **kw)})


def specs(cls: type[Any]) -> tuple[Spec, ...]:
    """The fields of dataclass `cls` declared with `spec`, completed from their annotations."""
    if cls not in _SPECS:
        _SPECS[cls] = _specs(cls)
    return _SPECS[cls]


_SPECS: dict[type[Any], tuple[Spec, ...]] = {}


def _specs(cls: type[Any]) -> tuple[Spec, ...]:
    hints = typing.get_type_hints(cls)
    out = []
    for f in dataclasses.fields(cls):
        if "spec" not in f.metadata:
            continue
        args = _flatten(hints[f.name])
        default = f.default if f.default is not dataclasses.MISSING else None
        meta: Spec = f.metadata["spec"]
        out.append(
            dataclasses.replace(
                meta,
                name=f.name,
                default=default,
                example=default if meta.example is None else meta.example,
                kinds=tuple(a for a in (int, float, str, tuple) if a in args),
                choices=tuple(a for a in args if isinstance(a, str)),
                optional=type(None) in args,
            )
        )
    return tuple(out)


def _flatten(hint: Any) -> list[Any]:
    """The members of a union, a Literal's values, a generic's origin."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return [a for arg in typing.get_args(hint) for a in _flatten(arg)]
    if origin is Literal:
        return list(typing.get_args(hint))
    return [origin or hint]


def describe(value: object) -> str:
    """A value read from a file, in words that are safe to show."""
    if isinstance(value, bool):
        return f"the boolean {str(value).lower()}"
    if isinstance(value, str):
        return f'the string "{shorten(printable(value), 60)}"'
    if isinstance(value, int | float):
        return f"the number {value}"
    if isinstance(value, dict | list):
        return "a table" if isinstance(value, dict) else "a list"
    return type(value).__name__


def toml_value(value: object) -> str:
    """`value` written as TOML (a basic string keeps every character TOML allows as is)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    text = str(value)
    escapes = {'"': '\\"', "\\": "\\\\", "\n": "\\n", "\t": "\\t"}
    body = "".join(
        escapes.get(ch) or (f"\\u{ord(ch):04X}" if ord(ch) < 0x20 or ord(ch) == 0x7F else ch)
        for ch in text
    )
    return f'"{body}"'
