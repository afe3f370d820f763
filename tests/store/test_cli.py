"""`localbvi pull / models / rm / import` through `localbvi.cli.main`: exit codes and output."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from ggufs import TINY_BASE, make_gguf
from hubserver import HubServer

from localbvi.cli import main


def test_pull_prints_one_line_per_file_when_not_a_terminal(
    hub: HubServer, tiny_catalog: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["pull", "tiny", "test/tiny-GGUF:Q8_0"]) == 0
    out, err = capsys.readouterr()
    assert err.count("\n") == 2 and "tiny-Q4_K_M.gguf" in err and "tiny-Q8_0.gguf" in err
    assert "\r" not in err
    assert "tiny: " in out and "memory: fits" in out


def test_pull_of_a_missing_repo_fails_with_one_line(
    hub: HubServer, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["pull", "nobody/nothing:Q4_K_M"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("localbvi: error: ") and err.count("\n") == 1
    assert "not found" in err


def test_offline_flag_blocks_the_network(
    hub: HubServer, tiny_catalog: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--offline", "pull", "tiny"]) == 1
    assert "offline" in capsys.readouterr().err
    assert hub.get_requests() == []


def test_models_json_marks_what_is_downloaded(
    hub: HubServer, tiny_catalog: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["pull", "tiny"]) == 0
    capsys.readouterr()
    assert main(["models", "--json"]) == 0
    rows = {row["ref"]: row for row in json.loads(capsys.readouterr().out)}
    assert rows["tiny:Q4_K_M"]["on_disk"] is True
    assert rows["tiny:Q4_K_M"]["size"] == len(TINY_BASE)
    assert rows["tiny:Q4_K_M"]["ram_fit"] in ("fits", "tight", "won't fit")
    assert rows["tiny-it:Q4_K_M"]["on_disk"] is False
    assert rows["tiny-it:Q4_K_M"]["pair"] == "tiny"


def test_models_table_lists_imported_files(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = tmp_path / "mine-Q8_0.gguf"
    model.write_bytes(make_gguf("Mine", 5000))
    assert main(["import", str(model)]) == 0
    assert f"use it as {model}" in capsys.readouterr().out
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert "other models on disk:" in out and str(model) in out


def test_rm_says_how_much_was_freed(
    hub: HubServer, tiny_catalog: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["pull", "tiny"]) == 0
    capsys.readouterr()
    assert main(["rm", "tiny"]) == 0
    assert "freed 3.1 MB" in capsys.readouterr().out
    assert main(["rm", "tiny"]) == 1
    assert "not on disk" in capsys.readouterr().err
