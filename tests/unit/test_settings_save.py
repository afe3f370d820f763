"""Saving settings never loses what the user's file holds: comments, unknown keys, servers,
values the form does not show — and never a file localbvi could not read."""

from __future__ import annotations

import difflib
import os
import stat
from dataclasses import replace
from pathlib import Path

import pytest

from localbvi.settings import (
    RemoteServer,
    Settings,
    load_settings,
    save_settings,
    save_target,
    settings_path,
)

HAND_WRITTEN = """\
# My localbvi setup — tuned for the laptop.
theme = "nord"   # easier on the eyes
my_own_note = "kept by localbvi?"

[engine]
# small context: 8 GB of RAM
n_ctx = 2048

[sampling]
temperature = 0.3  # fairly focused
temprature = 9     # a typo localbvi reports; still mine
top_k = 20

[keys]
"app.help" = "f2"

[[remote]]
name = "gpu-box"
base_url = "http://gpu-box:8080/v1"  # the desktop upstairs

[[remote]]
name = "broken"
base_url = "not a url"
"""


def _write(text: str | bytes, path: Path | None = None) -> Path:
    path = path or settings_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text.encode() if isinstance(text, str) else text)
    return path


def _edited(settings: Settings) -> Settings:
    """What the settings screen does: new sampling and engine values, the rest as loaded."""
    return replace(
        settings,
        sampling=replace(settings.sampling, top_k=7, seed=42),
        engine=replace(settings.engine, n_threads=3),
    )


def test_saving_a_commented_file_changes_only_the_edited_values() -> None:
    path = _write(HAND_WRITTEN)
    loaded = load_settings()
    assert loaded.settings.find_remote("gpu-box") is not None
    assert "temprature" in (loaded.problem or "")  # reported at load, kept on save

    saved = save_settings(_edited(loaded.settings))

    assert saved.path == path and saved.note is None
    text = path.read_text()
    changes = [
        line
        for line in difflib.ndiff(HAND_WRITTEN.splitlines(), text.splitlines())
        if line[:2] in ("- ", "+ ")
    ]
    assert [c for c in changes if c.startswith("- ")] == ["- top_k = 20"]
    added = [c[2:] for c in changes if c.startswith("+ ")]
    assert "top_k = 7" in added and "n_threads = 3" in added and "seed = 42" in added
    # Every comment, unknown key and both [[remote]] entries are still there, as written.
    for line in HAND_WRITTEN.splitlines():
        if line != "top_k = 20":
            assert line in text.splitlines()
    again = load_settings()
    assert again.settings == _edited(loaded.settings)


def test_clearing_a_value_removes_only_its_line() -> None:
    path = _write("# keep me\n[sampling]\n# my seed\nseed = 7\ntop_k = 3 # three\n")
    loaded = load_settings().settings
    save_settings(replace(loaded, sampling=replace(loaded.sampling, seed=None)))
    assert path.read_text() == "# keep me\n[sampling]\n# my seed\ntop_k = 3 # three\n"


def test_unchanged_settings_leave_the_file_byte_for_byte() -> None:
    path = _write(HAND_WRITTEN)
    save_settings(load_settings().settings)
    assert path.read_text() == HAND_WRITTEN


def test_a_bad_value_the_form_did_not_change_stays_in_the_file() -> None:
    path = _write('[sampling]\ntemperature = "hot"\n')
    loaded = load_settings().settings  # temperature: the default, with a problem
    save_settings(replace(loaded, sampling=replace(loaded.sampling, top_k=5)))
    text = path.read_text()
    assert 'temperature = "hot"' in text and "top_k = 5" in text


BROKEN = {
    "bad syntax": b'theme = "nord"\n[sampling\n[[remote]]\nname = "box"\n',
    "not UTF-8": b'theme = "nord"\n# caf\xe9\n',
    "nested too deep": b"x = " + b"[" * 5000 + b"]" * 5000 + b"\n",
    "too large": b"# " + b"x" * 1_100_000 + b"\n",
}


@pytest.mark.parametrize("case", list(BROKEN))
def test_a_file_that_could_not_be_read_is_never_overwritten(case: str) -> None:
    original = BROKEN[case]
    path = _write(original)
    loaded = load_settings()
    assert loaded.settings == Settings() and loaded.problem is not None
    assert "Save will not overwrite this file" in loaded.problem
    assert "settings.saved.toml" in loaded.problem

    assert save_target().path == path.with_name("settings.saved.toml")
    saved = save_settings(_edited(loaded.settings))

    assert path.read_bytes() == original
    assert saved.path == path.with_name("settings.saved.toml")
    assert saved.note is not None
    assert "settings.toml is left exactly as it is" in saved.note and str(saved.path) in saved.note
    assert load_settings(saved.path).settings == _edited(Settings())
    # Saving again updates that same file; the broken one is still untouched.
    second = save_settings(Settings(theme="nord"))
    assert second.path == saved.path and load_settings(saved.path).settings.theme == "nord"
    assert path.read_bytes() == original


def test_when_the_saved_file_is_broken_too_a_timestamped_one_is_written() -> None:
    path = _write(BROKEN["bad syntax"])
    beside = _write(b"theme = [\n", path.with_name("settings.saved.toml"))
    saved = save_settings(Settings(theme="nord"))
    assert path.read_bytes() == BROKEN["bad syntax"] and beside.read_bytes() == b"theme = [\n"
    assert saved.path.name.startswith("settings.saved-") and saved.path.suffix == ".toml"
    assert saved.note is not None and str(saved.path) in saved.note
    assert load_settings(saved.path).settings.theme == "nord"


def test_a_layout_that_cannot_take_the_values_is_left_alone() -> None:
    path = _write("engine = 5  # not a table\n")
    saved = save_settings(_edited(load_settings().settings))
    assert path.read_text() == "engine = 5  # not a table\n"
    assert saved.note is not None and "its 'engine' is not a table" in saved.note
    assert load_settings(saved.path).settings.engine.n_threads == 3


def test_inline_and_dotted_tables_are_updated_where_they_are() -> None:
    path = _write("engine.n_ctx = 2048\nsampling = { top_k = 3 }\n")
    saved = save_settings(_edited(load_settings().settings))
    assert saved.path == path and saved.note is None
    settings = load_settings().settings
    assert (settings.engine.n_ctx, settings.engine.n_threads) == (2048, 3)
    assert (settings.sampling.top_k, settings.sampling.seed) == (7, 42)
    assert "sampling = {" in path.read_text()


def test_windows_line_endings_stay_windows_line_endings() -> None:
    path = _write(b'theme = "nord"\r\n# mine\r\n[engine]\r\nn_ctx = 1024\r\n')
    save_settings(_edited(load_settings().settings))
    raw = path.read_bytes()
    assert b"# mine\r\n" in raw and raw.count(b"\n") == raw.count(b"\r\n")
    assert load_settings().settings.engine.n_threads == 3


def test_permissions_and_a_symlinked_file_are_kept(tmp_path: Path) -> None:
    real = _write(HAND_WRITTEN, tmp_path / "dotfiles" / "localbvi.toml")
    os.chmod(real, 0o640)
    link = settings_path()
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(real)

    saved = save_settings(_edited(load_settings().settings))

    assert saved.path == real
    assert link.is_symlink() and "top_k = 7" in real.read_text()
    assert stat.S_IMODE(real.stat().st_mode) == 0o640
    assert sorted(p.name for p in real.parent.iterdir()) == ["localbvi.toml"]  # no temp left


def test_servers_changed_in_code_replace_the_remote_entries() -> None:
    path = _write('theme = "nord"\n# servers:\n[[remote]]\nname = "a"\nbase_url = "http://a/v1"\n')
    loaded = load_settings().settings
    server = RemoteServer("b", "http://b/v1", kind="base")
    save_settings(replace(loaded, remote=(server,)))
    assert load_settings().settings.remote == (server,)
    assert "# servers:" in path.read_text()


def test_save_target_names_the_file_a_save_would_write() -> None:
    assert save_target() == save_target(settings_path())
    assert save_target().path == settings_path() and save_target().note is None
    _write("[broken\n")
    target = save_target()
    assert target.path.name == "settings.saved.toml"
    assert target.note is not None and "not valid TOML" in target.note


def test_a_file_too_large_to_edit_in_place_is_left_alone() -> None:
    text = 'theme = "nord"\n' + "# a long note\n" * 5000  # 70 kB: read, not rewritten
    path = _write(text)
    assert load_settings().settings.theme == "nord"
    saved = save_settings(_edited(load_settings().settings))
    assert path.read_text() == text
    assert saved.note is not None and "more than localbvi edits in place (64 kB)" in saved.note
    assert load_settings(saved.path).settings == _edited(load_settings().settings)
