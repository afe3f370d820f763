"""The user's settings file: `settings.toml` in the config folder (or `$LOCALBVI_SETTINGS`).

Every key is a field declared once with `localbvi.fieldspec.spec` (its default, range or
choices, and help): `[engine]` is `LoadConfig`, `[sampling]` is `Sampling`, `[network]` is
`NetworkSettings`; the checks and the comments of a new file come from those fields.

A broken file must never stop the app from starting: `load_settings()` returns the defaults
(or every setting it could read) together with a message that names the line, the key and the
fix. The file is read through `localbvi.tomltables` (size and nesting bounded).

No save destroys what it could not read. `save_settings()` updates an existing file in place,
rewriting only the values that changed (tomlkit keeps comments, layout, unknown keys and
`[[remote]]` entries); a file it cannot read is left untouched and the settings go to
`settings.saved.toml` beside it. A new file gets each setting's help as a comment so it
explains itself. Every write is atomic: a temp file, fsync, rename.
"""

from __future__ import annotations

import difflib
import os
import re
import stat
import tempfile
import textwrap
import time
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tomlkit
import tomlkit.items

from localbvi.engine.types import Kind, LoadConfig, Mode, Sampling
from localbvi.errors import SettingsError, printable, shorten
from localbvi.fieldspec import Spec, describe, required, spec, specs, toml_value
from localbvi.paths import config_dir
from localbvi.tomltables import parse_toml, read_toml_text

__all__ = [
    "QUIT_KEY",
    "SECTIONS",
    "LoadedSettings",
    "NetworkSettings",
    "RemoteServer",
    "SavedSettings",
    "Settings",
    "load_settings",
    "save_settings",
    "save_target",
    "setting_spec",
    "settings_path",
]


@dataclass(frozen=True)
class NetworkSettings:
    """How long localbvi waits for a server (the `[network]` table), in seconds."""

    connect_timeout: float = spec(
        10.0,
        "Seconds a server may take to accept a connection.",
        lo=0.1,
        hi=3600,
        label="Connect timeout",
    )
    first_byte_timeout: float = spec(
        60.0,
        "Seconds a server may take to start answering: its headers and, in a reply, the first "
        "token (a long prompt is evaluated in this time).",
        lo=0.1,
        hi=86400,
        label="First-byte timeout",
    )
    read_timeout: float = spec(
        30.0,
        "Seconds a server may stay silent between two tokens of a reply (or take for the rest "
        "of any other answer) before localbvi gives up.",
        lo=0.1,
        hi=86400,
        label="Read timeout",
    )


SECTIONS: dict[str, type[Any]] = {
    "engine": LoadConfig,
    "sampling": Sampling,
    "network": NetworkSettings,
}
"""The settings file's tables of plain values, each a class of `spec` fields."""


def setting_spec(key: str) -> Spec:
    """The field behind a settings key written "table.key", e.g. "sampling.top_p"."""
    table, name = key.split(".")
    return next(s for s in specs(SECTIONS[table]) if s.name == name and s.setting)


@dataclass(frozen=True)
class RemoteServer:
    """A model served by llama-server or another OpenAI-compatible server (a `[[remote]]`)."""

    name: str = required("What localbvi calls this model (its model picker and `--model NAME`).")
    base_url: str = required(
        'The server\'s OpenAI-compatible address, e.g. "http://gpu-box:8080/v1".',
        example="http://HOST:8080/v1",
        pattern=r"https?://[^/\s#]+.*",
        rule='start with http:// or https://, e.g. "http://HOST:8080/v1"',
    )
    model: str | None = spec(
        None,
        "The model name to ask the server for; leave it out when it serves one model.",
        example="MODEL-NAME",
    )
    api_key_env: str | None = spec(
        None,
        "Name of the environment variable that holds the API key (never the key itself).",
        example="MY_SERVER_KEY",
        pattern=r"[A-Za-z_][A-Za-z0-9_]*",
        rule='name an environment variable (like "MY_SERVER_KEY"), not hold the key itself',
    )
    kind: Kind = spec(
        "instruct",
        'Either "base" (raw completion) or "instruct" (chat with the server\'s chat template).',
    )

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

    model: str | None = spec(
        None,
        "Model the app opens with (a catalog id, a path, a Hub ref or a remote name).",
        example="gemma-3-270m",
    )
    mode: Mode = spec(
        "chat", 'Mode the app opens in: "chat" (the chat template) or "completion" (raw text).'
    )
    theme: str = spec(
        "textual-dark",
        "The app's colour theme (any Textual theme name).",
        pattern=r"[A-Za-z0-9][A-Za-z0-9_.+-]{0,63}",
        rule='be a theme name such as "nord" or "textual-light" (the command palette\'s theme '
        "list shows them all)",
    )
    engine: LoadConfig = spec(LoadConfig(), "How models are loaded.")
    sampling: Sampling = spec(Sampling(), "Default sampling for new generations.")
    network: NetworkSettings = spec(
        NetworkSettings(), "How long to wait for servers (remote models)."
    )
    keys: Mapping[str, str] = spec(
        {}, 'Key-binding overrides: action id → key, e.g. "app.quit" = "ctrl+q".', factory=dict
    )
    remote: tuple[RemoteServer, ...] = spec((), "Models served by other machines.")

    def to_load_config(self) -> LoadConfig:
        """The engine's load options (the `[engine]` table)."""
        return self.engine

    def to_sampling(self) -> Sampling:
        """The engine's sampling options (the `[sampling]` table)."""
        return self.sampling

    def find_remote(self, name: str) -> RemoteServer | None:
        """The `[[remote]]` entry called `name`, or whose ref or URL `name` is, if any."""
        return next((r for r in self.remote if name in (r.name, r.ref, r.base_url)), None)


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


def _echo(text: str, limit: int = 60) -> str:
    """Text from the file, fit to be quoted in a message (short, no terminal controls)."""
    return shorten(printable(text), limit)


def _scalars(cls: type[Any]) -> dict[str, Spec]:
    """The fields of `cls` a settings file may set, by name."""
    return {s.name: s for s in specs(cls) if s.setting and not _is_table(s)}


def _is_table(s: Spec) -> bool:
    return s.name in ("keys", "remote") or s.name in SECTIONS


def _read_table(
    cls: type[Any], table: Mapping[str, Any], where: str, problems: _Problems
) -> dict[str, Any]:
    """The valid values for `cls` found in `table`; every bad one becomes a problem."""
    known = _scalars(cls)
    out: dict[str, Any] = {}
    for key, value in table.items():
        if key not in known:
            if len(problems.lines) > _MAX_PROBLEMS:  # only counted from here: skip the hint
                problems.add(f"unknown setting '{where}{_echo(key)}'")
                continue
            hint = difflib.get_close_matches(key, list(known), n=1)
            fix = f"did you mean '{hint[0]}'?" if hint else f"known: {', '.join(sorted(known))}"
            problems.add(
                f"unknown setting '{where}{_echo(key)}' ({fix}); remove it or fix the name"
            )
        elif (why := known[key].problem(value, f"{where}{key}")) is not None:
            problems.add(why)
        else:
            out[key] = known[key].cast(value)
    return out


def _parse(data: Mapping[str, Any], problems: _Problems) -> Settings:
    scalars = {k: v for k, v in data.items() if k not in (*SECTIONS, "keys", "remote")}
    top: dict[str, Any] = _read_table(Settings, scalars, "", problems)
    for name, cls in SECTIONS.items():
        if name in data and (t := _table(data[name], name, problems)) is not None:
            top[name] = cls(**_read_table(cls, t, f"{name}.", problems))
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


def _table(value: object, key: str, problems: _Problems) -> Mapping[str, Any] | None:
    if isinstance(value, dict):
        return value
    problems.add(f"'{key}' must be a table ([{key}] on its own line), not {describe(value)}")
    return None


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
        problems.add(f"'{where}' must be a key name in quotes, {example}, not {describe(value)}")
        return None
    parts = [part.strip() for part in value.split(",")]
    if len(value) > 200 or not all(_KEY_RE.fullmatch(part) for part in parts):
        problems.add(f"'{where}' is {describe(value)}, not a key name: write {example}")
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


def _toml_key(key: str) -> str:
    return key if _BARE_KEY.match(key) else toml_value(key)


def _comment(text: str) -> list[str]:
    return [f"# {line}" for line in textwrap.wrap(text, 96)] if text else []


def _scalar_lines(obj: Any) -> list[str]:
    lines: list[str] = []
    for s in _scalars(type(obj)).values():
        lines += _comment(s.help)
        value = getattr(obj, s.name)
        if value is None:  # shown commented out, so uncommenting gives valid TOML
            lines.append(f"# {s.name} = {toml_value(s.example)}")
        else:
            lines.append(f"{s.name} = {toml_value(value)}")
    return lines


def render_settings(settings: Settings) -> str:
    """The commented TOML text `save_settings` writes (also what a settings screen can show)."""
    lines = [
        "# localbvi settings. Every setting is optional: delete a line to get its default.",
        "# If this file has a mistake, localbvi says which line and starts with the defaults.",
        "",
        *_scalar_lines(settings),
    ]
    docs = {s.name: s.help for s in specs(Settings)}
    for name in SECTIONS:
        lines += ["", *_comment(docs[name]), f"[{name}]", *_scalar_lines(getattr(settings, name))]
    lines += ["", *_comment(docs["keys"]), "[keys]"]
    lines += [f"{_toml_key(k)} = {toml_value(v)}" for k, v in sorted(settings.keys.items())]
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
        lines += ["", *_comment(docs["remote"]), "[[remote]]", *_scalar_lines(remote)]
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
    for s in _scalars(Settings).values():
        _set(document, s.name, getattr(before, s.name), getattr(after, s.name), "")
    for name, cls in SECTIONS.items():
        old, new = getattr(before, name), getattr(after, name)
        if old == new:
            continue
        table = _table_in(document, name)
        for s in _scalars(cls).values():
            _set(table, s.name, getattr(old, s.name), getattr(new, s.name), s.help)
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
            for name in _scalars(RemoteServer):
                if (value := getattr(remote, name)) is not None:
                    entry[name] = value
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
    if key in table or not _plain_table(table):
        table[key] = new
        return
    # A new key goes after the table's last value, above the blank lines that end it, with
    # its help as a comment.
    body = table.value.body
    blank = []
    while body and body[-1][0] is None and isinstance(body[-1][1], tomlkit.items.Whitespace):
        blank.append(body.pop()[1])
    for line in textwrap.wrap(doc, 96):
        table.add(tomlkit.comment(line))
    table[key] = new
    for item in reversed(blank):
        table.add(item)


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
