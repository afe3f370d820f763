"""Experiments: prompts that show how a base model and its instruct sibling differ.

The bundled `localbvi/data/experiments.toml` is merged with the user's
`<config_dir>/experiments.toml` (same id: the user's entry replaces the bundled one; new ids
come after). Users write these files by hand, so every problem becomes an `ExperimentError`
that names the file, the entry and the fix.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from importlib import resources
from pathlib import Path
from types import MappingProxyType
from typing import Any

from localbvi import paths
from localbvi.engine.types import Message, Sampling
from localbvi.errors import LocalbviError
from localbvi.tomltables import parse_entries

__all__ = [
    "Experiment",
    "ExperimentError",
    "Experiments",
    "bundled_experiments_path",
    "load_experiments",
    "parse_experiments_file",
    "user_experiments_path",
]

_REQUIRED = ("id", "title", "what_to_look_for", "prompt")
_OPTIONAL = ("base_prompt", "system", "sampling")
_KEYS = _REQUIRED + _OPTIONAL
_SAMPLING_KEYS = ("max_tokens", "temperature", "stop")
_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


class ExperimentError(LocalbviError):
    """An experiments file is malformed, or an experiment id is unknown."""


@dataclass(frozen=True)
class Experiment:
    """One prompt to run on both sides of the compare view, with what to look for."""

    id: str
    title: str
    what_to_look_for: str
    prompt: str
    """The instruct model's user message (and the base model's text without base_prompt)."""
    base_prompt: str | None = None
    """What the base model continues, when it differs (few-shot framing, a bare line)."""
    system: str | None = None
    """A system message for the instruct side."""
    sampling: Mapping[str, Any] = field(default_factory=dict, hash=False)
    """Overrides of the user's sampling: max_tokens, temperature, stop."""
    source: Path | None = None

    @property
    def raw_prompt(self) -> str:
        """The text the base side continues."""
        return self.base_prompt if self.base_prompt is not None else self.prompt

    def messages(self) -> list[Message]:
        """The instruct side's conversation."""
        out = [Message("system", self.system)] if self.system else []
        out.append(Message("user", self.prompt))
        return out

    def apply(self, sampling: Sampling) -> Sampling:
        """`sampling` with this experiment's overrides (stop strings as a tuple)."""
        values = dict(self.sampling)
        if "stop" in values:
            values["stop"] = tuple(values["stop"])
        return replace(sampling, **values)


class Experiments:
    """All experiments by id, in file order."""

    def __init__(self, items: Mapping[str, Experiment]) -> None:
        self.items: Mapping[str, Experiment] = MappingProxyType(dict(items))

    def __iter__(self) -> Iterator[Experiment]:
        return iter(self.items.values())

    def __len__(self) -> int:
        return len(self.items)

    def get(self, id: str) -> Experiment:
        """The experiment `id`; an unknown id is a user error with close matches."""
        found = self.items.get(id)
        if found is not None:
            return found
        close = difflib.get_close_matches(id, list(self.items), n=3, cutoff=0.5)
        hint = f" (did you mean {' or '.join(repr(c) for c in close)}?)" if close else ""
        raise ExperimentError(
            f"no experiment named {id!r}{hint}; run `localbvi experiments` to list them"
        )


def bundled_experiments_path() -> Path:
    """The experiments shipped with localbvi."""
    return Path(str(resources.files("localbvi.data").joinpath("experiments.toml")))


def user_experiments_path() -> Path:
    """The user's experiments, merged over the bundled ones."""
    return paths.config_dir() / "experiments.toml"


def load_experiments(bundled: Path | None = None, user: Path | None = None) -> Experiments:
    """Bundled experiments with the user's merged over them (a missing user file is normal)."""
    merged = {e.id: e for e in parse_experiments_file(bundled or bundled_experiments_path())}
    user_path = user if user is not None else user_experiments_path()
    if user_path.is_file():
        for experiment in parse_experiments_file(user_path):
            merged[experiment.id] = experiment
    return Experiments(merged)


def parse_experiments_file(path: Path) -> list[Experiment]:
    """Read and validate one experiments file."""
    return parse_entries(path, "experiment", _parse_entry, ExperimentError, "this file")


def _parse_entry(path: Path, index: int, raw: dict[str, Any]) -> Experiment:
    raw_id = raw.get("id")
    label = f"experiment {raw_id!r}" if isinstance(raw_id, str) and raw_id else f"entry {index}"

    def fail(problem: str) -> ExperimentError:
        return ExperimentError(f"{path}: {label}: {problem}")

    for key in raw:
        if key not in _KEYS:
            close = difflib.get_close_matches(key, _KEYS, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise fail(
                f"unknown key {key!r}{hint}; fix its spelling or remove it "
                f"(known keys: {', '.join(_KEYS)})"
            )
    missing = [key for key in _REQUIRED if key not in raw]
    if missing:
        raise fail(f"missing {', '.join(repr(m) for m in missing)}; add it")

    def text(key: str, *, optional: bool = False) -> str | None:
        if optional and key not in raw:
            return None
        value = raw[key]
        if not isinstance(value, str) or not value.strip():
            raise fail(f"{key!r} must be a non-empty string, not {value!r}")
        return value

    id_ = text("id")
    assert id_ is not None
    if not _ID_RE.fullmatch(id_):
        raise fail("the id may only hold letters, digits, '.', '_' and '-'; rename it")
    return Experiment(
        id=id_,
        title=str(text("title")).strip(),
        what_to_look_for=" ".join(str(text("what_to_look_for")).split()),
        prompt=str(text("prompt")),
        base_prompt=text("base_prompt", optional=True),
        system=text("system", optional=True),
        sampling=MappingProxyType(_parse_sampling(raw.get("sampling", {}), fail)),
        source=path,
    )


def _parse_sampling(raw: Any, fail: Any) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise fail("'sampling' must be a table: write [experiment.sampling] below the entry")
    out: dict[str, Any] = {}
    for key, value in raw.items():
        if key not in _SAMPLING_KEYS:
            raise fail(
                f"unknown sampling key {key!r}; the experiment may set {', '.join(_SAMPLING_KEYS)}"
            )
        if key == "max_tokens":
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise fail(f"'sampling.max_tokens' must be a whole number above 0, not {value!r}")
        elif key == "temperature":
            if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
                raise fail(f"'sampling.temperature' must be a number ≥ 0, not {value!r}")
            value = float(value)
        elif key == "stop" and (
            not isinstance(value, list) or not all(isinstance(s, str) and s for s in value)
        ):
            raise fail(f"'sampling.stop' must be a list of non-empty strings, not {value!r}")
        out[key] = value
    return out
