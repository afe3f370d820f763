"""One definition per setting: the CLI flags, the settings file's keys and the settings form's
fields all come from the fields of `Sampling`, `LoadConfig` and `NetworkSettings`."""

from __future__ import annotations

import argparse
import re
from dataclasses import dataclass
from pathlib import Path

import pytest
from textual.widgets import Input

from localbvi.cli import build_parser
from localbvi.cli import common as cli_common
from localbvi.engine.fake import FakeEngine
from localbvi.engine.types import LoadConfig, Sampling
from localbvi.fieldspec import spec, specs
from localbvi.settings import (
    SECTIONS,
    NetworkSettings,
    Settings,
    load_settings,
    render_settings,
)
from localbvi.tui.app import make_app
from localbvi.tui.screens.settings import SettingsScreen
from localbvi.tui.state import form_fields
from tests.helpers import SIZE, static_services, wait_until


def _defined(*classes: type) -> set[str]:
    return {s.name for cls in classes for s in specs(cls) if s.setting}


def _file_keys(text: str, table: str) -> set[str]:
    """The keys a new settings file shows under `[table]`, commented-out examples included."""
    section = text.split(f"\n[{table}]\n", 1)[1].split("\n[", 1)[0]
    return set(re.findall(r"^(?:# )?(\w+) = ", section, re.M))


def _subcommand(name: str) -> argparse.ArgumentParser:
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices[name]


def _flag_dests(parser: argparse.ArgumentParser, group_title: str) -> set[str]:
    group = next(g for g in parser._action_groups if (g.title or "").startswith(group_title))
    return {a.dest for a in group._group_actions}


def test_the_settings_file_has_exactly_the_defined_keys() -> None:
    text = render_settings(Settings())
    assert _file_keys(text, "sampling") == _defined(Sampling)
    assert _file_keys(text, "engine") == _defined(LoadConfig)
    assert _file_keys(text, "network") == _defined(NetworkSettings)
    assert {"temperature", "top_probs", "n_ctx", "cpu_extra_buffers"} <= _defined(
        Sampling, LoadConfig
    )
    for field in specs(Sampling):  # each key is explained by its field's help
        if field.setting:
            assert f"# {field.help[:40]}" in text


def test_the_cli_flags_are_the_defined_fields() -> None:
    complete = _subcommand("complete")
    sampling = _flag_dests(complete, "sampling")
    # Every sampling setting, plus --stop (a request's own value, not a setting).
    assert sampling == _defined(Sampling) | {"stop"}
    assert _flag_dests(complete, "loading") == _defined(LoadConfig)
    assert _flag_dests(_subcommand("compare"), "sampling") == _defined(Sampling) | {"stop"}
    # chat prints text only: no alternatives to report, so no --top-k-probs.
    chat = _flag_dests(_subcommand("chat"), "sampling")
    assert chat == (_defined(Sampling) - {"top_probs"}) | {"stop"}
    flags = {a.dest: a.option_strings[0] for a in complete._actions if a.option_strings}
    for field in specs(Sampling) + specs(LoadConfig):
        if field.flag:
            assert flags[field.name] == field.flag


async def test_the_settings_form_has_exactly_the_defined_fields() -> None:
    app = make_app(FakeEngine, model_ref=None, services=static_services())
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("ctrl+s")
        await wait_until(pilot, lambda: isinstance(app.screen, SettingsScreen))
        inputs = {w.id for w in app.screen.query(Input)} - {"system_prompt"}
        tooltips = {w.id: w.tooltip for w in app.screen.query(Input)}
    assert inputs == _defined(Sampling, LoadConfig, NetworkSettings)
    for _, field in form_fields():
        assert tooltips[field.name] == field.help


@dataclass(frozen=True)
class _WithMirostat(Sampling):
    mirostat: float = spec(
        0.0, "Mirostat target surprise.", lo=0, hi=10, label="Mirostat", flag="--mirostat"
    )


def test_a_field_added_to_the_definition_appears_in_the_file_the_flags_and_the_form(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setitem(SECTIONS, "sampling", _WithMirostat)
    monkeypatch.setattr(cli_common, "Sampling", _WithMirostat)

    path = tmp_path / "settings.toml"
    path.write_text("[sampling]\nmirostat = 5\n")
    assert load_settings(path).settings.sampling == _WithMirostat(mirostat=5.0)
    path.write_text("[sampling]\nmirostat = 11\n")
    problem = load_settings(path).problem or ""
    assert "'sampling.mirostat' is 11 but must be between 0 and 10" in problem
    text = render_settings(Settings(sampling=_WithMirostat()))
    assert "# Mirostat target surprise.\nmirostat = 0.0" in text

    parser = argparse.ArgumentParser()
    cli_common.add_sampling_flags(parser)
    assert parser.parse_args(["--mirostat", "3"]).mirostat == 3.0
    assert "mirostat" in _flag_dests(parser, "sampling")

    assert "mirostat" in {field.name for _, field in form_fields()}
