"""A hostile or broken mirror behind HF_ENDPOINT: `localbvi pull` refuses what it says.

Each case goes through the real CLI (`localbvi.cli.main`, or `python -m localbvi` in a
subprocess) against the loopback Hub stand-in answering like a malicious server: path-traversing
`ETag` / `X-Repo-Commit` headers, hashes that are not the Hub's, a redirect to `file://`, an
endless body. The user gets one readable line and exit code 1; nothing is written outside the
HF cache and nothing that was there before is deleted.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from ggufs import TINY_BASE, make_gguf
from hubserver import HubServer, sha256_of

from localbvi.cli import main

REPO = "test/tiny-GGUF"
FILE = "tiny-Q4_K_M.gguf"
REF = f"{REPO}/{FILE}"


def _tree(root: Path) -> dict[Path, bytes | None]:
    """Every path under `root` (symlinks not followed) with the bytes of small regular files."""
    seen: dict[Path, bytes | None] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            small = path.is_file() and not path.is_symlink() and path.stat().st_size < 1 << 16
            seen[path] = path.read_bytes() if small else None
    return seen


@pytest.fixture
def watched(
    tmp_path_factory: pytest.TempPathFactory, hf_cache: Path, isolated_home: Path
) -> Iterator[Path]:
    """Fails the test if anything outside the HF cache appears, changes or disappears.

    Walks the whole pytest temp tree (the isolated home, its HF cache, this test's tmp_path).
    A file planted where a traversing header would point (`home/x`, `home/y/FILE`) must survive.
    """
    root = tmp_path_factory.getbasetemp()
    planted = isolated_home / "y" / FILE
    planted.parent.mkdir(parents=True)
    planted.write_bytes(b"precious: not a model, must not be deleted")
    hf_cache.parent.mkdir(parents=True, exist_ok=True)  # HF_HOME exists on a used machine
    before = _tree(root)
    yield root
    after = _tree(root)
    outside = sorted(str(p) for p in set(after) - set(before) if not p.is_relative_to(hf_cache))
    assert outside == [], f"written outside the HF cache: {outside[:5]}"
    gone = sorted(str(p) for p in set(before) - set(after) if not p.is_relative_to(hf_cache))
    assert gone == [], "deleted outside the HF cache"
    changed = sorted(
        str(p) for p, data in before.items() if not p.is_relative_to(hf_cache) and after[p] != data
    )
    assert changed == [], "changed outside the HF cache"
    assert planted.read_bytes().startswith(b"precious")


def _pull_fails(capsys: pytest.CaptureFixture[str], *refs: str) -> str:
    """Run `localbvi pull REF…`: exit 1, one readable line on stderr, within 10 s."""
    start = time.monotonic()
    code = main(["pull", *refs])
    elapsed = time.monotonic() - start
    err = capsys.readouterr().err
    assert code == 1, err
    assert err.startswith("localbvi: error: ") and err.count("\n") == 1, err
    assert "Traceback" not in err and "internal error" not in err
    assert len(err) < 400, err
    assert elapsed < 10
    return err


def _cached_blobs(hf_cache: Path) -> list[Path]:
    """Files in the cache: blobs, partial downloads, snapshot links (not locks or notes)."""
    return [
        p
        for p in hf_cache.rglob("*")
        if p.is_file() and ".locks" not in p.parts and not p.name.endswith(".json")
    ]


def _git_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


# --- names taken from the server -----------------------------------------------------------


def test_path_traversing_etag_is_refused_and_writes_nothing_outside(
    hub: HubServer,
    hf_cache: Path,
    isolated_home: Path,
    watched: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    hub.etag_header = '"../../../../x"'
    err = _pull_fails(capsys, REF)
    assert hub.url in err and "ETag" in err
    assert not (isolated_home / "x").exists() and not (isolated_home / "x.lock").exists()
    assert hub.get_requests("GET") == []  # refused before a byte was fetched


def test_path_traversing_commit_is_refused_and_deletes_nothing(
    hub: HubServer,
    hf_cache: Path,
    isolated_home: Path,
    watched: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    hub.commit_header = "../../../../y"
    err = _pull_fails(capsys, REF)
    assert hub.url in err and "X-Repo-Commit" in err
    assert (isolated_home / "y" / FILE).read_bytes().startswith(b"precious")
    assert _cached_blobs(hf_cache) == []


def test_absolute_commit_is_refused(
    hub: HubServer, hf_cache: Path, watched: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    hub.commit_header = str(hf_cache.parent.parent / "y")
    assert "X-Repo-Commit" in _pull_fails(capsys, REF)


@pytest.mark.parametrize(
    "etag",
    [
        '"abc"',  # not a hash: nothing to verify the bytes against
        'W/"' + "0" * 63 + 'g"',
        '"' + "a" * 65 + '"',
        '"..\\\\..\\\\x"',
        '"' + "e" * 3000 + '"',
    ],
    ids=["not-a-hash", "non-hex", "65-hex", "backslashes", "3000-chars"],
)
def test_etag_that_is_not_a_hub_hash_is_refused(
    hub: HubServer, hf_cache: Path, watched: Path, capsys: pytest.CaptureFixture[str], etag: str
) -> None:
    hub.etag_header = etag
    hub.corrupt_at = 5000  # were the ETag accepted, corrupted bytes would be listed as usable
    err = _pull_fails(capsys, REF)
    assert "ETag" in err and hub.url in err
    assert _cached_blobs(hf_cache) == []
    capsys.readouterr()
    assert main(["models", "--json"]) == 0
    assert FILE not in capsys.readouterr().out


def test_long_commit_header_is_cut_in_the_message(
    hub: HubServer, hf_cache: Path, watched: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    hub.commit_header = "f" * 5000
    err = _pull_fails(capsys, REF)
    assert "…" in err and len(err) < 300


def test_absurd_size_header_is_refused(
    hub: HubServer, hf_cache: Path, watched: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    hub.size_header = "9" * 5000  # int() of this many digits raises ValueError
    err = _pull_fails(capsys, REF)
    assert "size" in err and len(err) < 300


def test_git_sha1_etag_is_verified_and_the_output_says_how(
    hub: HubServer, hf_cache: Path, watched: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    hub.etag_header = f'"{_git_sha1(TINY_BASE)}"'
    assert main(["pull", REF]) == 0
    err = capsys.readouterr().err
    assert "git sha1" in err and "GGUF header" in err
    blobs = [p for p in _cached_blobs(hf_cache) if "blobs" in p.parts]
    assert [p.name for p in blobs] == [_git_sha1(TINY_BASE)]


def test_git_sha1_etag_catches_corrupted_bytes(
    hub: HubServer, hf_cache: Path, watched: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    hub.etag_header = f'"{_git_sha1(TINY_BASE)}"'
    hub.corrupt_at = 5000
    err = _pull_fails(capsys, REF)
    assert "failed verification" in err
    assert _cached_blobs(hf_cache) == []


def test_sha256_download_says_it_was_verified(
    hub: HubServer, hf_cache: Path, watched: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["pull", REF]) == 0
    assert "sha256 verified" in capsys.readouterr().err


# --- redirects and bodies ------------------------------------------------------------------


@pytest.fixture
def secret(tmp_path: Path) -> Path:
    """A valid GGUF outside the cache that a hostile redirect points at."""
    path = tmp_path / "secret.gguf"
    path.write_bytes(make_gguf("secret", 64 << 10, seed=9))
    return path


def test_redirect_to_a_local_file_is_not_followed(
    hub: HubServer,
    hf_cache: Path,
    secret: Path,
    watched: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    commit = hub.repos[REPO].commit
    hub.redirect = (
        secret.as_uri(),
        {
            "X-Repo-Commit": commit,
            "X-Linked-Etag": f'"{sha256_of(secret)}"',
            "X-Linked-Size": str(secret.stat().st_size),
        },
    )
    err = _pull_fails(capsys, REF)
    assert "file://" in err and hub.url in err
    assert _cached_blobs(hf_cache) == []


def test_redirect_of_the_body_to_a_local_file_is_not_followed(
    hub: HubServer,
    hf_cache: Path,
    secret: Path,
    watched: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    hub.get_redirect = secret.as_uri()
    err = _pull_fails(capsys, REF)
    assert "file://" in err
    assert _cached_blobs(hf_cache) == []


def test_endless_redirects_stop(
    hub: HubServer, hf_cache: Path, watched: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    hub.get_redirect = f"{hub.url}/{REPO}/resolve/main/{FILE}"
    err = _pull_fails(capsys, REF)
    assert "redirect" in err
    assert len(hub.get_requests("GET")) <= 10
    assert _cached_blobs(hf_cache) == []


def test_endless_body_stops_at_the_announced_size(
    hub: HubServer, hf_cache: Path, watched: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    hub.endless = True
    err = _pull_fails(capsys, REF)
    assert "more than the" in err and "announced" in err
    assert _cached_blobs(hf_cache) == []  # the partial file is deleted too
    # The client stopped reading: the server could not push much past the file.
    assert hub.bytes_served < len(TINY_BASE) + (32 << 20)


@pytest.mark.slow
@pytest.mark.parametrize("knob", ["etag", "endless"])
def test_hostile_mirror_through_the_real_command(
    hub: HubServer, hf_cache: Path, isolated_home: Path, watched: Path, knob: str
) -> None:
    if knob == "etag":
        hub.etag_header = '"../../../../x"'
    else:
        hub.endless = True
    start = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "localbvi", "pull", REF],
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, "HOME": str(isolated_home)},
    )
    assert time.monotonic() - start < 10
    assert proc.returncode == 1
    assert proc.stderr.startswith("localbvi: error: ") and proc.stderr.count("\n") == 1
    assert "Traceback" not in proc.stderr
    assert _cached_blobs(hf_cache) == []


def test_endless_redirects_of_the_metadata_stop(
    hub: HubServer, hf_cache: Path, watched: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    hub.redirect = (f"{hub.url}/{REPO}/resolve/main/{FILE}", {})
    err = _pull_fails(capsys, REF)
    assert "too many redirects" in err
    assert len(hub.get_requests("HEAD")) <= 5
    assert _cached_blobs(hf_cache) == []


def test_token_is_not_sent_to_the_host_a_download_is_redirected_to(
    hub: HubServer,
    hf_cache: Path,
    watched: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    other = HubServer().start()
    try:
        other.add_repo(REPO, {FILE: TINY_BASE})
        monkeypatch.setenv("HF_TOKEN", "hf_secret_token")
        hub.get_redirect = f"{other.url}/{REPO}/resolve/main/{FILE}"
        assert main(["pull", REF]) == 0, capsys.readouterr().err
        assert "sha256 verified" in capsys.readouterr().err
        assert "Bearer hf_secret_token" in hub.auth_seen  # the Hub itself gets the token
        assert other.get_requests("GET") and other.auth_seen
        assert set(other.auth_seen) == {None}
    finally:
        other.stop()
