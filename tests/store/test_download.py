"""Downloads from a real HTTP Hub stand-in: verification, progress, resume, errors, offline."""

from __future__ import annotations

import errno
import hashlib
import threading
from pathlib import Path
from typing import IO

import pytest
from ggufs import TINY_BASE
from hubserver import HubServer, sha256_of
from huggingface_hub import scan_cache_dir

from localbvi.errors import DownloadError, OfflineError
from localbvi.store import hub as hub_module
from localbvi.store.hub import DownloadCancelledError, Progress, download
from localbvi.store.library import list_local
from localbvi.store.refs import resolve

REPO = "test/tiny-GGUF"
FILE = "tiny-Q4_K_M.gguf"


def _files_in_cache(cache: Path) -> list[str]:
    """What huggingface_hub's own scanner sees as cached files (any repo, any revision)."""
    if not cache.exists():
        return []
    info = scan_cache_dir(cache)
    return [f.file_name for r in info.repos for rev in r.revisions for f in rev.files]


def _downloaded() -> list[str]:
    """Refs `list_local` shows, beyond the bundled demo model."""
    return [m.ref for m in list_local() if m.source != "demo"]


def _leftovers(cache: Path) -> list[Path]:
    return [p for p in cache.rglob("*") if p.is_file() and ".locks" not in p.parts]


def test_real_model_download_is_verified_and_visible_to_huggingface_hub(
    hub: HubServer, hf_cache: Path, gemma_base: Path
) -> None:
    hub.add_repo("google/gemma-test-GGUF", {"gemma-3-270m-Q4_K_M.gguf": gemma_base})
    events: list[Progress] = []
    path = download("google/gemma-test-GGUF", "gemma-3-270m-Q4_K_M.gguf", on_progress=events.append)

    assert sha256_of(path.resolve()) == sha256_of(gemma_base)
    assert path.is_symlink() and path.parent.parent.name == "snapshots"
    size = gemma_base.stat().st_size
    assert hub.bytes_served == size
    cached = scan_cache_dir(hf_cache)
    assert [r.repo_id for r in cached.repos] == ["google/gemma-test-GGUF"]
    assert next(iter(cached.repos)).size_on_disk == size
    dones = [e.done for e in events]
    assert dones == sorted(dones) and dones[-1] == size
    assert all(e.total == size for e in events)


def test_second_download_uses_the_cache(hub: HubServer) -> None:
    first = download(REPO, FILE)
    hub.reset_counters()
    assert download(REPO, FILE) == first
    assert hub.bytes_served == 0
    assert [m for m, _, _ in hub.get_requests()] == ["HEAD"]


def test_dropped_connection_is_resumed_within_the_call(hub: HubServer) -> None:
    hub.drop_at = len(TINY_BASE) // 2
    hub.drop_times = 1
    path = download(REPO, FILE)
    assert path.read_bytes() == TINY_BASE
    assert hub.bytes_served < 1.1 * len(TINY_BASE)
    assert any(r == f"bytes={len(TINY_BASE) // 2}-" for _, _, r in hub.get_requests("GET"))


def test_connection_that_keeps_dropping_is_resumed_by_the_next_call(
    hub: HubServer, hf_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(hub_module, "MAX_ATTEMPTS", 2)
    monkeypatch.setattr(hub_module.time, "sleep", lambda s: None)
    hub.drop_at = len(TINY_BASE) // 2
    hub.drop_times = 10
    with pytest.raises(DownloadError, match="run the same command again to resume"):
        download(REPO, FILE)
    assert _files_in_cache(hf_cache) == []  # nothing that looks like a model
    assert scan_cache_dir(hf_cache).incomplete_files  # but the partial is kept

    hub.drop_times = 0
    path = download(REPO, FILE)
    assert path.read_bytes() == TINY_BASE
    assert hub.bytes_served < 1.1 * len(TINY_BASE)


def test_corrupted_bytes_fail_verification_and_leave_nothing(
    hub: HubServer, hf_cache: Path
) -> None:
    hub.corrupt_at = 1000
    with pytest.raises(DownloadError, match="failed verification") as err:
        download(REPO, FILE)
    assert "deleted" in str(err.value)
    assert _leftovers(hf_cache) == []
    assert _downloaded() == []


def test_cancel_leaves_no_model_and_the_next_pull_resumes(hub: HubServer, hf_cache: Path) -> None:
    hub.throttle_bps = 8e6
    cancel = threading.Event()

    def on_progress(p: Progress) -> None:
        if p.done > p.total * 0.3:
            cancel.set()

    with pytest.raises(DownloadCancelledError, match="resumes"):
        download(REPO, FILE, on_progress=on_progress, cancel=cancel)
    assert _files_in_cache(hf_cache) == []
    assert _downloaded() == []
    partial = scan_cache_dir(hf_cache).incomplete_files
    assert partial and 0 < next(iter(partial)).size_on_disk < len(TINY_BASE)

    hub.throttle_bps = None
    events: list[Progress] = []
    path = download(REPO, FILE, on_progress=events.append)
    assert path.read_bytes() == TINY_BASE
    assert hub.bytes_served < 1.1 * len(TINY_BASE)
    assert events[0].done > 0  # progress starts from what was kept


def test_missing_repo(hub: HubServer) -> None:
    with pytest.raises(DownloadError, match="repository nobody/nothing was not found"):
        download("nobody/nothing", FILE)


def test_missing_file(hub: HubServer) -> None:
    with pytest.raises(DownloadError, match=r"has no file 'nope\.gguf'") as err:
        download(REPO, "nope.gguf")
    assert f"{hub.url}/{REPO}/tree/main" in str(err.value)


def test_gated_repo_says_how_to_get_access(hub: HubServer, monkeypatch: pytest.MonkeyPatch) -> None:
    repo = hub.add_repo("meta/gated-GGUF", {FILE: TINY_BASE}, gated=True)
    with pytest.raises(DownloadError) as err:
        download("meta/gated-GGUF", FILE)
    message = str(err.value)
    assert "gated" in message and f"{hub.url}/meta/gated-GGUF" in message
    assert "HF_TOKEN" in message

    monkeypatch.setenv("HF_TOKEN", repo.token)
    assert download("meta/gated-GGUF", FILE).read_bytes() == TINY_BASE


def test_not_enough_disk_space_is_refused_before_downloading(
    hub: HubServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LOCALBVI_FAKE_FREE_BYTES", "1000")
    with pytest.raises(DownloadError, match="not enough disk space") as err:
        download(REPO, FILE)
    assert "HF_HUB_CACHE" in str(err.value)
    assert hub.get_requests("GET") == []


def test_disk_full_mid_write_frees_the_space(
    hub: HubServer, hf_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    written = [0]

    def full_disk(f: IO[bytes], data: memoryview) -> None:
        if written[0] > len(TINY_BASE) // 3:
            raise OSError(errno.ENOSPC, "No space left on device")
        f.write(data)
        written[0] += len(data)

    monkeypatch.setattr(hub_module, "_write_chunk", full_disk)
    with pytest.raises(DownloadError, match="disk filled up") as err:
        download(REPO, FILE)
    assert "freed" in str(err.value)
    assert _leftovers(hf_cache) == []


def test_a_file_that_is_not_gguf_is_rejected(hub: HubServer, hf_cache: Path) -> None:
    hub.add_repo("test/broken-GGUF", {"broken-Q4_K_M.gguf": b"<html>not a model</html>"})
    with pytest.raises(DownloadError, match="not a usable GGUF"):
        download("test/broken-GGUF", "broken-Q4_K_M.gguf")
    assert _leftovers(hf_cache) == []


def test_offline_mode_never_touches_the_network(
    hub: HubServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = download(REPO, FILE)
    hub.reset_counters()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert download(REPO, FILE) == path
    assert resolve(f"{REPO}:Q4_K_M").path == path
    assert resolve(f"{REPO}/{FILE}").path == path
    with pytest.raises(OfflineError, match="offline") as err:
        resolve("test/tiny-it-GGUF:Q4_K_M")
    assert f"{REPO}/{FILE}" in str(err.value)  # says what is on disk
    assert hub.get_requests() == []


def test_unreachable_hub_falls_back_to_the_cache(
    hub: HubServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = download(REPO, FILE)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens there
    assert download(REPO, FILE) == path
    with pytest.raises(OfflineError, match="cannot reach"):
        download("test/tiny-it-GGUF", "tiny-it-Q4_K_M.gguf")


def test_git_sha1_etag_is_checked_for_small_files(hub: HubServer) -> None:
    # Small non-LFS files carry git's blob sha1 as ETag; huggingface_hub's layout is the same.
    data = TINY_BASE[:100_000]
    repo = hub.add_repo("test/plain", {"notes.txt": data})
    git_sha1 = hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()
    repo.files["notes.txt"].sha256 = git_sha1
    assert download("test/plain", "notes.txt").read_bytes() == data
