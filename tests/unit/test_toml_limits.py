"""Hostile TOML files: settings.toml, a user models.toml and experiments.toml each answer a
deeply nested, huge or badly typed file with one readable message that names the file —
never a RecursionError, a stall or a traceback."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from localbvi.catalog import load_catalog, parse_catalog_file
from localbvi.errors import CatalogError, LocalbviError
from localbvi.lab.experiments import ExperimentError, load_experiments, parse_experiments_file
from localbvi.settings import Settings, load_settings
from localbvi.tomltables import MAX_TOML_BYTES, MAX_TOML_DEPTH

LEVELS = 10_000

CORPUS: dict[str, tuple[str, str]] = {
    # name: (file text, words the message must hold)
    "nested arrays": ("x = " + "[" * LEVELS + "]" * LEVELS + "\n", "nested more than"),
    "nested inline tables": ("x = " + "{a = " * LEVELS + "1" + "}" * LEVELS + "\n", "nested"),
    "nested table headers": ("[" + ".".join(["t"] * LEVELS) + "]\nk = 1\n", "nested"),
    "nested dotted keys": (".".join(["k"] * LEVELS) + " = 1\n", "nested"),
    "nested arrays on line 3": ("# a\n# b\nx = " + "[" * LEVELS + "]" * LEVELS, "from line 3"),
    "bad syntax": ('x = "unterminated\n', "line 1"),
    "not UTF-8": ("x = 1\n\udcff\n", "not UTF-8"),
}


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text.encode("utf-8", "surrogateescape"))


def _settings_message(path: Path) -> str:
    loaded = load_settings(path)
    assert loaded.settings == Settings()  # the defaults: the app still starts
    assert loaded.problem is not None
    return loaded.problem


def _catalog_message(path: Path) -> str:
    with pytest.raises(CatalogError) as caught:
        load_catalog(user=path)
    return str(caught.value)


def _experiments_message(path: Path) -> str:
    with pytest.raises(ExperimentError) as caught:
        load_experiments(user=path)
    return str(caught.value)


READERS: dict[str, Callable[[Path], str]] = {
    "settings.toml": _settings_message,
    "models.toml": _catalog_message,
    "experiments.toml": _experiments_message,
}


@pytest.mark.parametrize("case", list(CORPUS))
@pytest.mark.parametrize("name", list(READERS))
def test_a_hostile_file_gets_one_readable_message(tmp_path: Path, name: str, case: str) -> None:
    text, words = CORPUS[case]
    path = tmp_path / name
    _write(path, text)
    started = time.monotonic()
    message = READERS[name](path)
    assert time.monotonic() - started < 5
    assert str(path) in message
    assert words in message
    assert "RecursionError" not in message and "Traceback" not in message
    if "nested" in case:
        assert f"{MAX_TOML_DEPTH} levels" in message and "fix or remove" in message


@pytest.fixture(scope="module")
def huge_text(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 50 MB file of valid TOML (comments and one key), written once for the three readers."""
    path = tmp_path_factory.mktemp("huge") / "source.toml"
    line = b"# " + b"x" * 1021 + b"\n"  # 1 KiB
    with path.open("wb") as f:
        for _ in range(50 * 1024):
            f.write(line)
        f.write(b"x = 1\n")
    return path


@pytest.mark.parametrize("name", list(READERS))
def test_a_50_mb_file_is_refused_unread(tmp_path: Path, huge_text: Path, name: str) -> None:
    path = tmp_path / name
    os.link(huge_text, path)
    started = time.monotonic()
    message = READERS[name](path)
    assert time.monotonic() - started < 5
    assert str(path) in message
    assert "52.4 MB" in message and "not read" in message


@pytest.mark.parametrize("name", list(READERS))
def test_a_file_just_over_the_limit_is_refused_and_one_at_it_is_read(
    tmp_path: Path, name: str
) -> None:
    path = tmp_path / name
    _write(path, "#" * (MAX_TOML_BYTES - 1) + "\n")  # exactly the limit: read, no entries
    if name == "settings.toml":
        assert load_settings(path).problem is None
    elif name == "models.toml":
        assert len(load_catalog(user=path)) == len(load_catalog())
    else:
        assert len(load_experiments(user=path)) == len(load_experiments())
    _write(path, "#" * MAX_TOML_BYTES + "\n")
    assert "more than localbvi reads (1 MB)" in READERS[name](path)


@pytest.mark.parametrize("name", list(READERS))
def test_a_fifo_is_refused_without_blocking(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    os.mkfifo(path)  # opening it to read would wait for a writer forever
    if name == "settings.toml":
        message = _settings_message(path)
    else:
        parse = parse_catalog_file if name == "models.toml" else parse_experiments_file
        with pytest.raises(LocalbviError) as caught:
            parse(path)
        message = str(caught.value)
    assert f"{path}: not a regular file" in message


def _entry(**values: str) -> str:
    """A complete [[model]] entry with some values replaced (TOML source for each)."""
    keys = {
        "id": '"a"',
        "name": '"A"',
        "family": '"F"',
        "kind": '"base"',
        "sibling": '"a-it"',
        "repo": '"org/a-GGUF"',
        "params": '"1B"',
        "context_length": "2048",
        "license": '"mit"',
    } | values
    body = "".join(f"{key} = {value}\n" for key, value in keys.items())
    return f'[[model]]\n{body}[model.files]\nQ4_K_M = {{ file = "a.gguf", size = 1 }}\n'


BAD_TYPES = {
    "settings.toml": (
        'theme = 7\nmodel = "' + "m" * 5000 + '"\n[engine]\nn_ctx = [[1]]\n'
        '[sampling]\ntemperature = { a = 1 }\ntop_k = "x"\n[keys]\n"app.help" = [1]\n',
        [
            "'theme' must be a string in quotes, not the number 7",
            "'model' is 5000 characters long",
            "'engine.n_ctx' must be a whole number, not a list",
            "'sampling.temperature' must be a number, not a table",
            "'sampling.top_k' must be a whole number",
            "'keys.app.help' must be a key name in quotes",
        ],
    ),
    "models.toml": (_entry(family='["x"]'), ["'family' must be a non-empty string, not ['x']"]),
    "experiments.toml": ("experiment = 5\n", ["'experiment' must be a list of tables"]),
}


def _any_problem(name: str, path: Path) -> str:
    if name == "settings.toml":
        return load_settings(path).problem or ""  # what it could read still applies
    return READERS[name](path)


@pytest.mark.parametrize("name", list(READERS))
def test_bad_types_are_named_with_the_fix(tmp_path: Path, name: str) -> None:
    text, expected = BAD_TYPES[name]
    path = tmp_path / name
    _write(path, text)
    problem = _any_problem(name, path)
    assert str(path) in problem
    for words in expected:
        assert words in problem


def test_long_values_are_cut_in_catalog_messages(tmp_path: Path) -> None:
    path = tmp_path / "models.toml"
    _write(path, _entry(kind='"' + "k\\u001b[2J" * 50_000 + '"'))
    with pytest.raises(CatalogError) as caught:
        parse_catalog_file(path)
    message = str(caught.value)
    assert len(message) < 400 and "\x1b" not in message and "…" in message
