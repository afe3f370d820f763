"""The user's settings file: `settings.toml` in the config folder (or `$LOCALBVI_SETTINGS`).

A broken file must never stop the app from starting: `load_settings()` returns the defaults
(or every setting it could read) together with a message that names the line, the key and the
fix. The file is read through `localbvi.tomltables` (size and nesting bounded).

No save destroys what it could not read. `save_settings()` updates an existing file in place,
rewriting only the values that changed (tomlkit keeps comments, layout, unknown keys and
`[[remote]]` entries); a file it cannot read is left untouched and the settings go to
`settings.saved.toml` beside it. A new file gets each setting's docstring as a comment so it
explains itself. Every write is atomic: a temp file, fsync, rename.
"""

from __future__ import annotations

import ast
import dataclasses
import difflib
import inspect
import itertools
import math
import os
import re
import stat
import tempfile
import textwrap
import time
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomlkit
import tomlkit.items

from localbvi.engine.types import (
    KINDS,
    MODES,
    ExtraBuffers,
    GpuLayers,
    Kind,
    LoadConfig,
    Mode,
    Sampling,
)
from localbvi.errors import SettingsError, printable, shorten
from localbvi.paths import config_dir
from localbvi.tomltables import parse_toml, read_toml_text

__all__ = [
    "NUMBER_RANGES",
    "QUIT_KEY",
    "EngineSettings",
    "LoadedSettings",
    "NetworkSettings",
    "NumberRange",
    "RemoteServer",
    "SamplingSettings",
    "SavedSettings",
    "Settings",
    "load_settings",
    "save_settings",
    "save_target",
    "settings_path",
]


@dataclass(frozen=True)
class EngineSettings:
    """How models are loaded (the `[engine]` table). Changing these needs a reload."""

    n_ctx: int = 4096
    """Context window in tokens (prompt + reply). Larger costs memory."""
    n_threads: int | None = None
    """CPU threads for decoding; leave it out to let localbvi pick (the physical cores)."""
    n_gpu_layers: GpuLayers = "auto"
    """Layers to put on the GPU: "auto" offloads all where the build supports it, 0 for none."""
    cpu_extra_buffers: ExtraBuffers = "auto"
    """llama.cpp's CPU extra buffers (AMX, weight repacking): "auto" turns them off where they
    crash llama.cpp on this CPU (found once, then remembered), "on" or "off" to force."""


@dataclass(frozen=True)
class SamplingSettings:
    """Default sampling for new generations (the `[sampling]` table)."""

    temperature: float = 0.8
    """Randomness: 0 always picks the most likely token (same prompt, same answer)."""
    top_p: float = 0.95
    """Sample only from the most likely tokens whose probabilities add up to this (0-1)."""
    top_k: int = 40
    """Sample only from this many most likely tokens (0: no limit)."""
    min_p: float = 0.05
    """Drop tokens less likely than this fraction of the most likely one (0-1)."""
    repeat_penalty: float = 1.0
    """Above 1 discourages repeating recent tokens; 1 turns it off."""
    max_tokens: int = 256
    """Longest reply, in tokens."""
    seed: int | None = None
    """Sampling seed for reproducible runs; leave it out for a random one."""
    top_probs: int = 0
    """Alternatives (with probabilities) to show per token: 0 for none, at most 10."""


@dataclass(frozen=True)
class NetworkSettings:
    """How long localbvi waits for a server (the `[network]` table), in seconds."""

    connect_timeout: float = 10.0
    """Seconds a server may take to accept a connection."""
    first_byte_timeout: float = 60.0
    """Seconds a server may take to start answering: its headers and, in a reply, the first
    token (a long prompt is evaluated in this time)."""
    read_timeout: float = 30.0
    """Seconds a server may stay silent between two tokens of a reply (or take for the rest of
    any other answer) before localbvi gives up."""


@dataclass(frozen=True)
class RemoteServer:
    """A model served by llama-server or another OpenAI-compatible server (a `[[remote]]`)."""

    name: str
    """What localbvi calls this model (its model picker and `--model NAME` use it)."""
    base_url: str
    """The server's OpenAI-compatible address, e.g. "http://gpu-box:8080/v1"."""
    model: str | None = None
    """The model name to ask the server for; leave it out when it serves one model."""
    api_key_env: str | None = None
    """Name of the environment variable that holds the API key (never the key itself)."""
    kind: Kind = "instruct"
    """Either "base" (raw completion) or "instruct" (chat with the server's chat template)."""

    @property
    def ref(self) -> str:
        """The model reference `RemoteEngine.load` takes: `base_url[#model]`."""
        return f"{self.base_url}#{self.model}" if self.model else self.base_url

    def api_key(self) -> str | None:
        """The key from the environment variable named by `api_key_env`, if set."""
        if not self.api_key_env:
            return None
        return os.environ.get(self.api_key_env) or None


@dataclass(frozen=True)
class Settings:
    """Everything in `settings.toml`. Every field has a default: an empty file is valid."""

    model: str | None = None
    """Model the app opens with (a catalog id, a path, a Hub ref or a remote name)."""
    mode: Mode = "chat"
    """Mode the app opens in: "chat" (the chat template) or "completion" (raw text)."""
    theme: str = "textual-dark"
    """The app's colour theme (any Textual theme name)."""
    engine: EngineSettings = field(default_factory=EngineSettings)
    """How models are loaded."""
    sampling: SamplingSettings = field(default_factory=SamplingSettings)
    """Default sampling for new generations."""
    network: NetworkSettings = field(default_factory=NetworkSettings)
    """How long to wait for servers (remote models)."""
    keys: Mapping[str, str] = field(default_factory=dict)
    """Key-binding overrides: action id → key, e.g. "app.quit" = "ctrl+q"."""
    remote: tuple[RemoteServer, ...] = ()
    """Models served by other machines."""

    def to_load_config(self) -> LoadConfig:
        """The engine's load options from these settings."""
        return LoadConfig(
            n_ctx=self.engine.n_ctx,
            n_threads=self.engine.n_threads,
            n_gpu_layers=self.engine.n_gpu_layers,
            cpu_extra_buffers=self.engine.cpu_extra_buffers,
        )

    def to_sampling(self) -> Sampling:
        """The engine's sampling options from these settings."""
        s = self.sampling
        return Sampling(
            temperature=s.temperature,
            top_p=s.top_p,
            top_k=s.top_k,
            min_p=s.min_p,
            repeat_penalty=s.repeat_penalty,
            max_tokens=s.max_tokens,
            seed=s.seed,
            top_probs=s.top_probs,
        )

    def find_remote(self, name: str) -> RemoteServer | None:
        """The `[[remote]]` entry called `name`, if any."""
        return next((r for r in self.remote if r.name == name), None)


@dataclass(frozen=True)
class LoadedSettings:
    """What `load_settings` found: the settings to use and, if the file had problems, why."""

    settings: Settings
    problem: str | None
    """One line per problem (each names the fix), or None when the file was fine or absent."""
    path: Path


def settings_path() -> Path:
    """`$LOCALBVI_SETTINGS`, else `settings.toml` in the config folder."""
    override = os.environ.get("LOCALBVI_SETTINGS")
    return Path(override).expanduser() if override else config_dir() / "settings.toml"


# --- loading -------------------------------------------------------------------------------


class _Problems:
    """Collects problems so one bad key does not hide the next."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.lines: list[str] = []

    def add(self, message: str) -> None:
        self.lines.append(f"{self.path}: {message}")


_TYPE_WORDS: dict[str, str] = {
    "str": "a string in quotes",
    "int": "a whole number",
    "float": "a number",
    "bool": "true or false",
}


def _describe(value: object) -> str:
    if isinstance(value, bool):
        return f"the boolean {str(value).lower()}"
    if isinstance(value, str):
        return f'the string "{_echo(value)}"'
    if isinstance(value, int | float):
        return f"the number {value}"
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "a list"
    return type(value).__name__


def _echo(text: str, limit: int = 60) -> str:
    """Text from the file, fit to be quoted in a message (short, no terminal controls)."""
    return shorten(printable(text), limit)


def _unknown_key(problems: _Problems, key: str, where: str, known: list[str]) -> None:
    if len(problems.lines) > _MAX_PROBLEMS:  # only counted from here: skip the hint's cost
        problems.add(f"unknown setting '{where}{_echo(key)}'")
        return
    hint = difflib.get_close_matches(key, known, n=1)
    fix = f"did you mean '{hint[0]}'?" if hint else f"known: {', '.join(sorted(known))}"
    problems.add(f"unknown setting '{where}{_echo(key)}' ({fix}); remove it or fix the name")


def _check_field(cls: type[Any], name: str, value: object, where: str) -> tuple[bool, str]:
    """Whether `value` suits the field, else a sentence saying what it must be."""
    return _FIELD_CHECKS[cls][name](value, f"{where}{name}")


def _want(kind: str, value: object, key: str, example: str) -> tuple[bool, str]:
    ok = {
        "str": isinstance(value, str),
        "int": isinstance(value, int) and not isinstance(value, bool),
        "float": isinstance(value, int | float) and not isinstance(value, bool),
        "bool": isinstance(value, bool),
    }[kind]
    if ok and isinstance(value, str) and len(value) > _MAX_TEXT:
        return False, (
            f"'{key}' is {len(value)} characters long, more than any setting needs "
            f"({_MAX_TEXT}): write {example}"
        )
    if ok:
        return True, ""
    return False, f"'{key}' must be {_TYPE_WORDS[kind]}, not {_describe(value)}: write {example}"


_MAX_TEXT = 2000
"""Longest text value accepted (model references, URLs, names)."""

_THEME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]{0,63}")


def _theme(value: object, key: str) -> tuple[bool, str]:
    ok, why = _want("str", value, key, 'theme = "textual-dark"')
    if ok and not _THEME_RE.fullmatch(str(value)):
        return False, (
            f'\'{key}\' must be a theme name such as "nord" or "textual-light" (the command '
            f"palette's theme list shows them all), not {_describe(value)}"
        )
    return ok, why


@dataclass(frozen=True)
class NumberRange:
    """The values a numeric setting takes; the settings file and the CLI flags check these."""

    integer: bool
    lo: float | None = None
    hi: float | None = None
    example: int | float = 0
    """A sensible value, shown in messages."""
    optional: bool = False
    """Whether the setting may be left out (None: localbvi picks)."""

    def contains(self, value: float) -> bool:
        return not math.isnan(value) and (
            (self.lo is None or value >= self.lo) and (self.hi is None or value <= self.hi)
        )

    def span(self) -> str:
        """The range in words: "between 0 and 5", "at least 1"."""
        if self.lo is not None and self.hi is not None:
            return f"between {self.lo} and {self.hi}"
        return f"at least {self.lo}" if self.lo is not None else f"at most {self.hi}"


NUMBER_RANGES: dict[str, NumberRange] = {
    "engine.n_ctx": NumberRange(integer=True, lo=16, hi=1 << 22, example=4096),
    "engine.n_threads": NumberRange(integer=True, lo=1, example=4, optional=True),
    "sampling.temperature": NumberRange(integer=False, lo=0, hi=5, example=0.8),
    "sampling.top_p": NumberRange(integer=False, lo=0, hi=1, example=0.95),
    "sampling.top_k": NumberRange(integer=True, lo=0, example=40),
    "sampling.min_p": NumberRange(integer=False, lo=0, hi=1, example=0.05),
    "sampling.repeat_penalty": NumberRange(integer=False, lo=0, hi=5, example=1.0),
    "sampling.max_tokens": NumberRange(integer=True, lo=1, example=256),
    "sampling.seed": NumberRange(integer=True, lo=0, example=42, optional=True),
    "sampling.top_probs": NumberRange(integer=True, lo=0, hi=10, example=0),
    "network.connect_timeout": NumberRange(integer=False, lo=0.1, hi=3600, example=10.0),
    "network.first_byte_timeout": NumberRange(integer=False, lo=0.1, hi=86400, example=60.0),
    "network.read_timeout": NumberRange(integer=False, lo=0.1, hi=86400, example=30.0),
}
"""The numeric settings by "table.key": one definition for the file and the flags."""


def _number(value: object, key: str, allowed: NumberRange) -> tuple[bool, str]:
    name = key.rsplit(".", 1)[-1]
    kind = "int" if allowed.integer else "float"
    ok, why = _want(kind, value, key, f"{name} = {allowed.example}")
    if not ok:
        return ok, why
    assert isinstance(value, int | float)
    if not allowed.contains(value):
        return False, (
            f"'{key}' is {value} but must be {allowed.span()}: e.g. {name} = {allowed.example}"
        )
    return True, ""


def _choice(value: object, key: str, choices: tuple[str, ...]) -> tuple[bool, str]:
    if isinstance(value, str) and value in choices:
        return True, ""
    options = " or ".join(f'"{c}"' for c in choices)
    return False, f"'{key}' must be {options}, not {_describe(value)}"


def _optional_int(value: object, key: str, allowed: NumberRange) -> tuple[bool, str]:
    name = key.rsplit(".", 1)[-1]
    ok, why = _want("int", value, key, f"{name} = {allowed.example} (or leave it out)")
    if ok and isinstance(value, int) and not allowed.contains(value):
        return False, f"'{key}' is {value} but must be {allowed.span()} (or left out)"
    return ok, why


def _gpu_layers(value: object, key: str) -> tuple[bool, str]:
    if value == "auto" or (isinstance(value, int) and not isinstance(value, bool) and value >= -1):
        return True, ""
    return False, (
        f"'{key}' must be \"auto\", -1 (all layers), 0 (CPU only) or a layer count, "
        f"not {_describe(value)}"
    )


def _url(value: object, key: str) -> tuple[bool, str]:
    ok, why = _want("str", value, key, 'base_url = "http://HOST:8080/v1"')
    if ok and not re.match(r"^https?://[^/\s#]+", str(value)):
        return False, f"'{key}' must start with http:// or https://, e.g. \"http://HOST:8080/v1\""
    return ok, why


def _env_name(value: object, key: str) -> tuple[bool, str]:
    ok, why = _want("str", value, key, 'api_key_env = "MY_SERVER_KEY"')
    if ok and not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", str(value)):
        return False, (
            f"'{key}' must name an environment variable (like \"MY_SERVER_KEY\"), "
            "not hold the key itself"
        )
    return ok, why


_Check = Callable[[object, str], tuple[bool, str]]


def _ranged(name: str) -> _Check:
    allowed = NUMBER_RANGES[name]
    if allowed.optional:
        return lambda v, k: _optional_int(v, k, allowed)
    return lambda v, k: _number(v, k, allowed)


_FIELD_CHECKS: dict[type[Any], dict[str, _Check]] = {
    Settings: {
        "model": lambda v, k: _want("str", v, k, 'model = "gemma-3-270m"'),
        "mode": lambda v, k: _choice(v, k, MODES),
        "theme": _theme,
    },
    EngineSettings: {
        "n_ctx": _ranged("engine.n_ctx"),
        "n_threads": _ranged("engine.n_threads"),
        "n_gpu_layers": _gpu_layers,
        "cpu_extra_buffers": lambda v, k: _choice(v, k, ("auto", "on", "off")),
    },
    SamplingSettings: {
        "temperature": _ranged("sampling.temperature"),
        "top_p": _ranged("sampling.top_p"),
        "top_k": _ranged("sampling.top_k"),
        "min_p": _ranged("sampling.min_p"),
        "repeat_penalty": _ranged("sampling.repeat_penalty"),
        "max_tokens": _ranged("sampling.max_tokens"),
        "seed": _ranged("sampling.seed"),
        "top_probs": _ranged("sampling.top_probs"),
    },
    NetworkSettings: {
        "connect_timeout": _ranged("network.connect_timeout"),
        "first_byte_timeout": _ranged("network.first_byte_timeout"),
        "read_timeout": _ranged("network.read_timeout"),
    },
    RemoteServer: {
        "name": lambda v, k: _want("str", v, k, 'name = "big-model"'),
        "base_url": _url,
        "model": lambda v, k: _want("str", v, k, 'model = "MODEL-NAME"'),
        "api_key_env": _env_name,
        "kind": lambda v, k: _choice(v, k, KINDS),
    },
}


def _read_table(
    cls: type[Any], table: Mapping[str, Any], where: str, problems: _Problems
) -> dict[str, Any]:
    """The valid scalar fields of `cls` found in `table`; every bad one becomes a problem."""
    checks = _FIELD_CHECKS[cls]
    out: dict[str, Any] = {}
    for key, value in table.items():
        if key not in checks:
            _unknown_key(problems, key, where, list(checks))
            continue
        ok, why = _check_field(cls, key, value, where)
        if ok:
            out[key] = float(value) if _is_float_field(cls, key) else value
        else:
            problems.add(why)
    return out


def _is_float_field(cls: type[Any], name: str) -> bool:
    return next(f for f in dataclasses.fields(cls) if f.name == name).type == "float"


def _table(value: object, key: str, problems: _Problems) -> Mapping[str, Any] | None:
    if isinstance(value, dict):
        return value
    problems.add(f"'{key}' must be a table ([{key}] on its own line), not {_describe(value)}")
    return None


def _parse(data: Mapping[str, Any], problems: _Problems) -> Settings:
    top: dict[str, Any] = {}
    tables = ("engine", "sampling", "network", "keys", "remote")
    scalars = {k: v for k, v in data.items() if k not in tables}
    top.update(_read_table(Settings, scalars, "", problems))

    if "engine" in data and (t := _table(data["engine"], "engine", problems)) is not None:
        top["engine"] = EngineSettings(**_read_table(EngineSettings, t, "engine.", problems))
    if "sampling" in data and (t := _table(data["sampling"], "sampling", problems)) is not None:
        top["sampling"] = SamplingSettings(
            **_read_table(SamplingSettings, t, "sampling.", problems)
        )
    if "network" in data and (t := _table(data["network"], "network", problems)) is not None:
        top["network"] = NetworkSettings(**_read_table(NetworkSettings, t, "network.", problems))
    if "keys" in data and (t := _table(data["keys"], "keys", problems)) is not None:
        keys: dict[str, str] = {}
        for action, key in t.items():
            bound = _key_binding(action, key, problems)
            if bound is not None:
                keys[action] = bound
        top["keys"] = keys
    if "remote" in data:
        top["remote"] = _parse_remotes(data["remote"], problems)
    return Settings(**top)


QUIT_KEY = "ctrl+q"
"""Always quits the app. `[keys]` may add keys for quitting but never take this one away or
give it to another action: whatever the file says, a user can leave."""

_QUIT_ACTION = "app.quit"
_ACTION_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}")
# A Textual key: modifiers, then a key name ("f2", "question_mark") or one printable character.
_KEY_RE = re.compile(r"((ctrl|shift|alt|meta|super|hyper)\+)*([a-z0-9_]{2,32}|[!-~])", re.I)


def _key_binding(action: str, value: object, problems: _Problems) -> str | None:
    """The keys for `action` if the file's `value` is usable, else None and a problem."""
    where = f"keys.{_echo(action)}"
    if not _ACTION_RE.fullmatch(action):
        problems.add(f"'{where}' is not an action id: ids look like \"app.quit\" (F1 lists them)")
        return None
    example = 'e.g. "ctrl+t", "f2" or "ctrl+t,f2"'
    if not isinstance(value, str) or not value.strip():
        problems.add(f"'{where}' must be a key name in quotes, {example}, not {_describe(value)}")
        return None
    parts = [part.strip() for part in value.split(",")]
    if len(value) > 200 or not all(_KEY_RE.fullmatch(part) for part in parts):
        problems.add(f"'{where}' is {_describe(value)}, not a key name: write {example}")
        return None
    quits = QUIT_KEY in (part.lower() for part in parts)
    if quits and action != _QUIT_ACTION:
        problems.add(f"'{where}' cannot use {QUIT_KEY}: it always quits localbvi; pick another key")
        return None
    if action == _QUIT_ACTION and not quits:
        return ",".join([*parts, QUIT_KEY])  # the file's keys quit too
    return value


def _parse_remotes(value: object, problems: _Problems) -> tuple[RemoteServer, ...]:
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        problems.add("'remote' must be a list of tables: write each as [[remote]] with its keys")
        return ()
    out: list[RemoteServer] = []
    names: set[str] = set()
    for i, entry in enumerate(value, start=1):
        where = f"remote[{i}]."
        before = len(problems.lines)
        fields = _read_table(RemoteServer, entry, where, problems)
        missing = [k for k in ("name", "base_url") if k not in entry]
        for k in missing:
            problems.add(f"'{where}{k}' is missing: every [[remote]] needs name and base_url")
        if len(problems.lines) > before:
            problems.add(f"the [[remote]] number {i} is skipped until that is fixed")
            continue
        if fields["name"] in names:
            problems.add(f"two [[remote]] entries are called '{fields['name']}': rename one")
            continue
        names.add(fields["name"])
        out.append(RemoteServer(**fields))
    return tuple(out)


def load_settings(path: Path | None = None) -> LoadedSettings:
    """Read the settings file; never raises for a bad file (defaults + a message instead)."""
    path = path or settings_path()
    problems = _Problems(path)
    try:
        text = read_toml_text(path, SettingsError)
        if text is None:
            return LoadedSettings(Settings(), None, path)
        data = parse_toml(text, path, SettingsError)
    except SettingsError as exc:
        # The message names the file, the line where it can and the fix.
        problem = (
            f"{exc}. Using the default settings; Save will not overwrite this file: it writes "
            f"{_sidecar(path).name} beside it"
        )
        return LoadedSettings(Settings(), problem, path)
    settings = _parse(data, problems)
    lines = problems.lines
    if len(lines) > _MAX_PROBLEMS:  # a file of thousands of stray keys: a readable message
        lines = [*lines[:_MAX_PROBLEMS], f"… and {len(lines) - _MAX_PROBLEMS} more problems"]
    if lines:
        lines.append(f"{path}: the settings above were ignored; everything else was applied")
    return LoadedSettings(settings, "\n".join(lines) or None, path)


_MAX_PROBLEMS = 20
"""Problems listed by name; the rest are counted."""


# --- saving --------------------------------------------------------------------------------

_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")


def _toml_str(text: str) -> str:
    """A TOML basic string: escapes what TOML requires, keeps every other character as is."""
    out = ['"']
    for ch in text:
        code = ord(ch)
        if ch == '"':
            out.append('\\"')
        elif ch == "\\":
            out.append("\\\\")
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\t":
            out.append("\\t")
        elif code < 0x20 or code == 0x7F:
            out.append(f"\\u{code:04X}")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def _toml_key(key: str) -> str:
    return key if _BARE_KEY.match(key) else _toml_str(key)


def _toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise SettingsError(f"cannot save the number {value} in settings: use a finite one")
        return repr(value)
    if isinstance(value, str):
        return _toml_str(value)
    raise SettingsError(f"cannot save {_describe(value)} in settings")


def _field_docs(cls: type[Any]) -> dict[str, str]:
    """Each field's docstring (the string under it), read from the source for comments."""
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    except (OSError, TypeError, SyntaxError):
        return {}  # no source (a frozen app): the file is written without comments
    body = tree.body[0].body if tree.body and isinstance(tree.body[0], ast.ClassDef) else []
    docs: dict[str, str] = {}
    for node, after in itertools.pairwise(body):
        if (
            isinstance(node, ast.AnnAssign)
            and isinstance(node.target, ast.Name)
            and isinstance(after, ast.Expr)
            and isinstance(after.value, ast.Constant)
            and isinstance(after.value.value, str)
        ):
            docs[node.target.id] = " ".join(after.value.value.split())
    return docs


# Shown commented out for settings that are unset (None), so uncommenting gives valid TOML.
_EXAMPLES = {
    "model": '"gemma-3-270m"',
    "n_threads": "4",
    "seed": "42",
    "api_key_env": '"MY_SERVER_KEY"',
}


def _comment(text: str) -> list[str]:
    return [f"# {line}" for line in textwrap.wrap(text, 96)] if text else []


def _scalar_lines(obj: Any, skip: tuple[str, ...] = ()) -> list[str]:
    docs = _field_docs(type(obj))
    lines: list[str] = []
    for f in dataclasses.fields(obj):
        if f.name in skip:
            continue
        lines += _comment(docs.get(f.name, ""))
        value = getattr(obj, f.name)
        if value is None:
            lines.append(f"# {f.name} = {_EXAMPLES.get(f.name, '')}")
        else:
            lines.append(f"{f.name} = {_toml_value(value)}")
    return lines


def render_settings(settings: Settings) -> str:
    """The commented TOML text `save_settings` writes (also what a settings screen can show)."""
    lines = [
        "# localbvi settings. Every setting is optional: delete a line to get its default.",
        "# If this file has a mistake, localbvi says which line and starts with the defaults.",
        "",
    ]
    lines += _scalar_lines(settings, skip=("engine", "sampling", "network", "keys", "remote"))
    docs = _field_docs(Settings)
    for name in ("engine", "sampling", "network"):
        lines += ["", *_comment(docs.get(name, "")), f"[{name}]"]
        lines += _scalar_lines(getattr(settings, name))
    lines += ["", *_comment(docs.get("keys", "")), "[keys]"]
    lines += [f"{_toml_key(k)} = {_toml_str(v)}" for k, v in sorted(settings.keys.items())]
    if not settings.remote:
        lines += [
            "",
            "# A model on a bigger machine running llama-server (or any OpenAI-compatible server):",
            "# [[remote]]",
            '# name = "big-model"',
            '# base_url = "http://gpu-box:8080/v1"',
            '# kind = "instruct"',
        ]
    for remote in settings.remote:
        lines += ["", *_comment(docs.get("remote", "")), "[[remote]]", *_scalar_lines(remote)]
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class SavedSettings:
    """Where `save_settings` wrote (or would write), and why when it is not the settings file."""

    path: Path
    note: str | None = None
    """A sentence for the user when the settings file was left untouched (it could not be
    read, or not updated without losing something) and `path` is a new file beside it."""


class _KeepIt(Exception):
    """The file cannot be rewritten without losing what it holds; the message says why."""


def save_settings(settings: Settings, path: Path | None = None) -> SavedSettings:
    """Write `settings` without ever losing what the settings file holds.

    An existing file is updated in place: only values that differ from the file's are
    rewritten, so comments, layout, unknown keys, `[[remote]]` entries and bad values the
    user did not change all stay. A file that cannot be read (bad syntax, too large, not
    UTF-8...) is never overwritten: the settings go to `settings.saved.toml` beside it (a
    timestamped name if that one is unreadable too) and the result's `note` says so.
    Raises SettingsError only when nothing could be written.
    """
    path = _real_path(path or settings_path())
    try:
        return SavedSettings(_write_atomic(path, _updated_text(path, settings)))
    except _KeepIt as exc:
        reason = str(exc)
    side = _sidecar(path)
    try:
        text = _updated_text(side, settings)
    except _KeepIt:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        side = path.with_name(f"{path.stem}.saved-{stamp}{path.suffix or '.toml'}")
        text = render_settings(settings)
    _write_atomic(side, text)
    return SavedSettings(side, _kept_note(path, reason, side))


def save_target(path: Path | None = None) -> SavedSettings:
    """Where `save_settings` would write, with its note (for a settings screen to show)."""
    path = _real_path(path or settings_path())
    try:
        _readable(path)
    except _KeepIt as exc:
        return SavedSettings(_sidecar(path), _kept_note(path, str(exc), _sidecar(path)))
    return SavedSettings(path)


def _kept_note(path: Path, reason: str, side: Path) -> str:
    return (
        f"{path.name} is left exactly as it is ({reason}); the settings go to {side} "
        f"instead: fix {path.name} or replace it with that file"
    )


def _real_path(path: Path) -> Path:
    # A settings file linked from a dotfiles folder stays a link: write where it points.
    return path.resolve() if path.is_symlink() else path


def _sidecar(path: Path) -> Path:
    return path.with_name(f"{path.stem}.saved{path.suffix or '.toml'}")


def _readable(path: Path) -> tuple[str, dict[str, Any]] | None:
    """The file's text and data, None when it does not exist; _KeepIt when unreadable."""
    try:
        text = read_toml_text(path, SettingsError)
        if text is None:
            return None
        data = parse_toml(text, path, SettingsError)
    except SettingsError as exc:
        message = str(exc)
        prefix = f"{path}: "
        raise _KeepIt(message[len(prefix) :] if message.startswith(prefix) else message) from None
    if len(text) > _MAX_EDIT_CHARS:
        raise _KeepIt(
            f"it is {len(text) // 1000} kB, more than localbvi edits in place "
            f"({_MAX_EDIT_CHARS // 1000} kB)"
        )
    return text, data


_MAX_EDIT_CHARS = 64_000
"""Largest file updated in place. The style-keeping rewrite (tomlkit) takes about a second
per 64 kB on the 2-core project machine, on the UI thread; a settings file is 2-3 kB."""


def _updated_text(path: Path, settings: Settings) -> str:
    """The text to write at `path`: its own with the changed values, or a new commented file.

    Raises _KeepIt when the file there cannot be updated without losing something.
    """
    found = _readable(path)
    if found is None:
        return render_settings(settings)
    text, data = found
    before = _parse(data, _Problems(path))
    if before == settings:
        return text
    try:
        document = tomlkit.parse(text)
        _merge(document, before, settings)
        out = document.as_string()
        if "\r\n" in text:  # what tomlkit added ends in \n: keep the file's line ends
            out = re.sub(r"(?<!\r)\n", "\r\n", out)
    except _KeepIt:
        raise
    except Exception as exc:  # tomlkit on an unusual layout; the fallback loses nothing
        raise _KeepIt(f"its layout cannot be edited in place ({type(exc).__name__})") from None
    # The written file must read back as exactly these settings, or it is not written.
    try:
        after = _parse(tomllib.loads(out), _Problems(path))
    except tomllib.TOMLDecodeError:
        after = None
    if after != settings:
        raise _KeepIt("its layout cannot be edited in place")
    return out


def _merge(document: Any, before: Settings, after: Settings) -> None:
    """Write into the tomlkit `document` each value where `after` differs from `before`."""
    for name in ("model", "mode", "theme"):
        _set(document, name, getattr(before, name), getattr(after, name), "")
    for name in ("engine", "sampling", "network"):
        old, new = getattr(before, name), getattr(after, name)
        if old == new:
            continue
        table = _table_in(document, name)
        docs = _field_docs(type(new))
        for f in dataclasses.fields(new):
            _set(table, f.name, getattr(old, f.name), getattr(new, f.name), docs.get(f.name, ""))
    if before.keys != after.keys:
        table = _table_in(document, "keys")
        for action in set(before.keys) - set(after.keys):
            table.pop(action, None)
        for action, key in after.keys.items():
            _set(table, action, before.keys.get(action), key, "")
    if before.remote != after.remote:
        # Only reached when the app edits servers (it does not yet): entries the loader
        # skipped as invalid would be dropped here.
        document.pop("remote", None)
        servers = tomlkit.aot()
        for remote in after.remote:
            entry = tomlkit.table()
            for f in dataclasses.fields(remote):
                if (value := getattr(remote, f.name)) is not None:
                    entry[f.name] = value
            servers.append(entry)
        if after.remote:
            document["remote"] = servers


def _table_in(document: Any, name: str) -> Any:
    if name not in document:
        document[name] = tomlkit.table()
    table = document[name]
    if not isinstance(table, tomlkit.items.Table | tomlkit.items.InlineTable):
        raise _KeepIt(f"its '{name}' is not a table")
    return table


def _set(table: Any, key: str, old: object, new: object, doc: str) -> None:
    if old == new:
        return  # what the file says stays, even a value the loader could not use
    if new is None:
        table.pop(key, None)
        return
    if key not in table and doc and _plain_table(table):
        for line in textwrap.wrap(doc, 96):
            table.add(tomlkit.comment(line))
    table[key] = new


def _plain_table(table: Any) -> bool:
    """A `[table]` holding only values: a comment added to it lands above the new key (in
    one with sub-tables it would land below them, so none is added there)."""
    return isinstance(table, tomlkit.items.Table) and not any(
        isinstance(value, tomlkit.items.Table | tomlkit.items.AoT) for value in table.values()
    )


def _write_atomic(path: Path, text: str) -> Path:
    """Write `text` to `path` through a temp file beside it, fsynced, then renamed over it."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            mode: int | None = stat.S_IMODE(os.stat(path).st_mode)
        except FileNotFoundError:
            mode = None
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}-", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as f:
                f.write(text)
                f.flush()
                if mode is not None:
                    os.fchmod(f.fileno(), mode)  # keep the user's permissions
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        _fsync_folder(path.parent)
    except OSError as exc:
        raise SettingsError(
            f"cannot write the settings to {path} ({exc.strerror or exc}): "
            "check that the folder is writable or set LOCALBVI_SETTINGS to another file"
        ) from exc
    return path


def _fsync_folder(folder: Path) -> None:
    """Make the rename itself durable (POSIX); a no-op where folders cannot be opened."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
