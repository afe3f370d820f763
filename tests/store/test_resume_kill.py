"""A download killed mid-way (a real process, SIGKILL) continues where it stopped."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from hubserver import HubServer, sha256_of
from huggingface_hub import scan_cache_dir

from localbvi.cli import main

REPO = "google/gemma-test-GGUF"
FILE = "gemma-3-270m-Q4_K_M.gguf"


@pytest.mark.slow
def test_killed_pull_resumes_and_refetches_little(
    hub: HubServer, gemma_base: Path, hf_cache: Path
) -> None:
    size = gemma_base.stat().st_size
    hub.add_repo(REPO, {FILE: gemma_base})
    hub.pause_at = size // 2
    child = subprocess.Popen(
        [sys.executable, "-m", "localbvi", "pull", f"{REPO}/{FILE}"],
        env=dict(os.environ),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        assert hub.paused.wait(timeout=60), "the child never reached half of the file"
        child.kill()
        child.wait(timeout=10)
    finally:
        if child.poll() is None:
            child.kill()
        hub.release.set()
    partial = scan_cache_dir(hf_cache).incomplete_files
    assert partial, "the killed download left nothing to resume from"
    kept = next(iter(partial)).size_on_disk
    assert 0 < kept <= size // 2

    assert main(["pull", f"{REPO}/{FILE}"]) == 0
    cached = scan_cache_dir(hf_cache)
    assert not cached.incomplete_files
    (repo,) = cached.repos
    (revision,) = repo.revisions
    (file,) = revision.files
    assert sha256_of(file.blob_path) == sha256_of(gemma_base)
    assert hub.bytes_served < 1.1 * size
