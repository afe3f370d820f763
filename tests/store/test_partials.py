"""Interrupted downloads: listed with how far they got, resumed by `pull`, deleted by `rm`."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest
from ggufs import TINY_BASE, TINY_BASE_Q8
from hubserver import HubServer

from localbvi.cli import main
from localbvi.inspector import format_size
from localbvi.store.hub import DownloadCancelledError, Progress, download

REPO = "test/tiny-GGUF"


def _interrupt(filename: str, fraction: float, hub: HubServer) -> None:
    """Start a real download and cancel it once `fraction` of the file is on disk."""
    hub.throttle_bps = 8e6
    cancel = threading.Event()

    def on_progress(p: Progress) -> None:
        if p.done > p.total * fraction:
            cancel.set()

    with pytest.raises(DownloadCancelledError):
        download(REPO, filename, on_progress=on_progress, cancel=cancel)
    hub.throttle_bps = None


def _partial_rows(capsys: pytest.CaptureFixture[str]) -> list[dict[str, object]]:
    assert main(["models", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    return [row for row in rows if row["section"] == "partial"]


def _incomplete(hf_cache: Path) -> list[Path]:
    return sorted(hf_cache.rglob("*.incomplete"))


def test_interrupted_pull_is_listed_with_its_percentage_and_resumes(
    hub: HubServer, tiny_catalog: Path, hf_cache: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _interrupt("tiny-Q4_K_M.gguf", 0.3, hub)
    (partial,) = _incomplete(hf_cache)
    kept = partial.stat().st_size

    (row,) = _partial_rows(capsys)
    assert row["ref"] == "tiny:Q4_K_M"  # the catalog's name for the file
    assert row["size"] == kept and row["expected_size"] == len(TINY_BASE)
    assert row["percent"] == round(100 * kept / len(TINY_BASE), 1)
    assert row["resume"] == "localbvi pull tiny:Q4_K_M"
    assert 0 < float(str(row["percent"])) < 100

    assert main(["models"]) == 0
    out = capsys.readouterr().out
    section = out.split("interrupted downloads")[1]
    line = next(x for x in section.splitlines() if x.strip().startswith("tiny:Q4_K_M"))
    assert f"{row['percent']:.0f}% of 3.1 MB" in line
    assert "resume: localbvi pull tiny:Q4_K_M" in line

    served_before = hub.bytes_served
    assert main(["pull", "tiny:Q4_K_M"]) == 0
    capsys.readouterr()
    assert hub.bytes_served - served_before <= len(TINY_BASE) - kept + 1024  # resumed
    assert _partial_rows(capsys) == []
    assert _incomplete(hf_cache) == [] and list(hf_cache.rglob("*.incomplete.json")) == []


def test_rm_deletes_the_partial_files_of_a_model(
    hub: HubServer, tiny_catalog: Path, hf_cache: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["pull", "tiny:Q4_K_M"]) == 0
    _interrupt("tiny-Q8_0.gguf", 0.2, hub)
    (partial,) = _incomplete(hf_cache)
    kept = partial.stat().st_size
    capsys.readouterr()

    # Only half there: rm names it like any model and frees what the partial held.
    assert main(["rm", "test/tiny-GGUF:Q8_0"]) == 0
    assert f"freed {format_size(kept)}" in capsys.readouterr().out
    assert _incomplete(hf_cache) == []
    assert _partial_rows(capsys) == []
    # The complete model of the same repository is untouched.
    assert main(["models", "--json"]) == 0
    rows = {r["ref"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows["tiny:Q4_K_M"]["on_disk"] is True


def test_rm_of_the_last_model_takes_the_orphaned_partials(
    hub: HubServer, tiny_catalog: Path, hf_cache: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["pull", "tiny:Q4_K_M"]) == 0
    _interrupt("tiny-Q8_0.gguf", 0.2, hub)
    (partial,) = _incomplete(hf_cache)
    partial.with_name(partial.name + ".json").unlink()  # as if another tool left it
    kept = partial.stat().st_size
    capsys.readouterr()
    assert main(["rm", "tiny"]) == 0
    assert f"freed {format_size(len(TINY_BASE) + kept)}" in capsys.readouterr().out
    assert not (hf_cache / "models--test--tiny-GGUF").exists()


def test_a_partial_nobody_named_is_listed_and_removable_by_repo(
    hf_cache: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    blobs = hf_cache / "models--someone--model-GGUF" / "blobs"
    blobs.mkdir(parents=True)
    (blobs / ("c" * 64 + ".incomplete")).write_bytes(TINY_BASE_Q8[:1_500_000])

    (row,) = _partial_rows(capsys)
    assert row["ref"] == "someone/model-GGUF" and row["percent"] is None
    assert row["size"] == 1_500_000 and row["resume"] is None
    assert main(["models"]) == 0
    assert "1.5 MB kept (full size unknown)" in capsys.readouterr().out

    assert main(["rm", "someone/model-GGUF"]) == 0
    assert "freed 1.5 MB" in capsys.readouterr().out
    assert not (hf_cache / "models--someone--model-GGUF").exists()
    assert main(["rm", "someone/model-GGUF"]) == 1  # nothing left to delete
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "the cache has no GGUF" in err
