"""The settings file: what a user who edits `settings.toml` by hand gets back."""

from __future__ import annotations

import tomllib
from dataclasses import replace
from pathlib import Path

import pytest

from localbvi.engine.types import LoadConfig, Sampling
from localbvi.settings import (
    RemoteServer,
    Settings,
    load_settings,
    save_settings,
    settings_path,
)


def _full_settings() -> Settings:
    return Settings(
        model="gemma-3-270m",
        mode="completion",
        theme="nord",
        engine=LoadConfig(n_ctx=2048, n_threads=2, n_gpu_layers=0),
        sampling=Sampling(temperature=0.0, top_k=1, seed=7, top_probs=5, max_tokens=64),
        keys={"app.quit": "ctrl+q", "chat.cancel": "escape"},
        remote=(
            RemoteServer("big", "http://gpu-box:8080/v1", model="llama-70b", api_key_env="BOX_KEY"),
            RemoteServer("base-70b", "https://example.test/v1", kind="base"),
        ),
    )


def test_missing_file_gives_defaults_without_a_problem() -> None:
    loaded = load_settings()
    assert loaded.settings == Settings()
    assert loaded.problem is None
    assert loaded.path == settings_path()


def test_default_path_is_in_the_config_dir(isolated_home: Path) -> None:
    assert settings_path() == isolated_home / "config" / "settings.toml"


def test_env_variable_moves_the_settings_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    elsewhere = tmp_path / "elsewhere.toml"
    elsewhere.write_text('mode = "completion"\n')
    monkeypatch.setenv("LOCALBVI_SETTINGS", str(elsewhere))
    assert settings_path() == elsewhere
    assert load_settings().settings.mode == "completion"
    assert save_settings(Settings(theme="nord")).path == elsewhere
    assert 'theme = "nord"' in elsewhere.read_text()


def test_round_trip_keeps_every_setting() -> None:
    settings = _full_settings()
    path = save_settings(settings).path
    loaded = load_settings()
    assert loaded.problem is None
    assert loaded.settings == settings
    assert loaded.path == path


def test_saved_file_is_commented_and_valid_toml() -> None:
    path = save_settings(Settings()).path
    text = path.read_text()
    assert "# Context window in tokens" in text  # the field's docstring
    assert "# n_threads = 4" in text  # unset: shown as an example to uncomment
    assert "# [[remote]]" in text  # how to add a server, when none is configured
    assert tomllib.loads(text)["engine"]["n_ctx"] == 4096
    assert load_settings().settings == Settings()


def test_save_replaces_atomically_and_leaves_no_temp_files() -> None:
    path = save_settings(Settings(theme="a")).path
    save_settings(Settings(theme="b"))
    assert load_settings().settings.theme == "b"
    assert sorted(p.name for p in path.parent.iterdir()) == ["settings.toml"]


def test_strings_with_quotes_and_controls_survive() -> None:
    settings = Settings(model='odd "name" \\ with\ttab\x7f', keys={"chat.send": "ctrl+j"})
    save_settings(settings)  # a new file
    assert load_settings().settings == settings
    changed = replace(settings, model="other 'one' \"x\"\x01", keys={"app.help": "f2"})
    save_settings(changed)  # the same file, updated in place
    assert load_settings().settings == changed


def test_broken_toml_names_line_and_column_and_uses_defaults() -> None:
    path = settings_path()
    path.parent.mkdir(parents=True)
    path.write_text('mode = "completion"\ntheme = "nord\n')
    loaded = load_settings()
    assert loaded.settings == Settings()
    assert loaded.problem is not None
    assert "line 2" in loaded.problem and "column" in loaded.problem
    assert str(path) in loaded.problem
    assert "default settings" in loaded.problem


def test_unknown_key_is_named_with_a_suggestion_and_the_rest_applies() -> None:
    path = settings_path()
    path.parent.mkdir(parents=True)
    path.write_text('theme = "nord"\n[sampling]\ntemprature = 0.2\ntop_k = 5\n')
    loaded = load_settings()
    assert loaded.problem is not None
    assert "unknown setting 'sampling.temprature'" in loaded.problem
    assert "did you mean 'temperature'" in loaded.problem
    assert loaded.settings.theme == "nord"
    assert loaded.settings.sampling.top_k == 5
    assert loaded.settings.sampling.temperature == Sampling().temperature


def test_wrong_types_say_how_to_write_the_value() -> None:
    path = settings_path()
    path.parent.mkdir(parents=True)
    path.write_text(
        '[engine]\nn_ctx = "4096"\nn_gpu_layers = "all"\n'
        "[sampling]\ntop_p = 3\n"
        '[[remote]]\nname = "box"\nbase_url = "gpu-box:8080"\n'
    )
    loaded = load_settings()
    problem = loaded.problem or ""
    assert "'engine.n_ctx' must be a whole number, not the string \"4096\": write n_ctx = 4096" in (
        problem
    )
    assert "'engine.n_gpu_layers' must be \"auto\"" in problem
    assert "'sampling.top_p' is 3 but must be between 0 and 1" in problem
    assert "must start with http:// or https://" in problem
    assert loaded.settings.engine == LoadConfig()
    assert loaded.settings.remote == ()


def test_whole_numbers_are_accepted_for_decimal_settings() -> None:
    path = settings_path()
    path.parent.mkdir(parents=True)
    path.write_text("[sampling]\ntemperature = 1\n")
    loaded = load_settings()
    assert loaded.problem is None
    assert loaded.settings.sampling.temperature == 1.0


def test_to_load_config_and_to_sampling() -> None:
    settings = _full_settings()
    assert settings.to_load_config() == LoadConfig(n_ctx=2048, n_threads=2, n_gpu_layers=0)
    sampling = settings.to_sampling()
    assert isinstance(sampling, Sampling)
    assert (sampling.temperature, sampling.top_k, sampling.seed, sampling.top_probs) == (
        0.0,
        1,
        7,
        5,
    )
    assert sampling.max_tokens == 64


def test_remote_entries_give_refs_and_keys_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    settings = _full_settings()
    big = settings.find_remote("big")
    assert big is not None
    assert big.ref == "http://gpu-box:8080/v1#llama-70b"
    assert big.api_key() is None
    monkeypatch.setenv("BOX_KEY", "secret")
    assert big.api_key() == "secret"
    assert settings.find_remote("nope") is None


def test_api_key_in_place_of_a_variable_name_is_refused() -> None:
    path = settings_path()
    path.parent.mkdir(parents=True)
    path.write_text('[[remote]]\nname = "a"\nbase_url = "http://h/v1"\napi_key_env = "sk-12 34"\n')
    loaded = load_settings()
    assert "not hold the key itself" in (loaded.problem or "")
    assert loaded.settings.remote == ()


def test_thousands_of_stray_keys_give_a_short_message() -> None:
    path = settings_path()
    path.parent.mkdir(parents=True)
    path.write_text('theme = "nord"\n' + "".join(f"stray{i} = {i}\n" for i in range(20_000)))
    loaded = load_settings()
    problem = loaded.problem or ""
    assert loaded.settings.theme == "nord"
    assert "unknown setting 'stray0'" in problem and "unknown setting 'stray19'" in problem
    assert "… and 19980 more problems" in problem
    assert len(problem.splitlines()) == 22 and len(problem) < 10_000
