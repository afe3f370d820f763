"""Downloads into the shared Hugging Face cache: progress, resume across restarts, verification.

Files land in the standard cache layout (`models--org--repo/blobs/<etag>`, a
`snapshots/<commit>/<file>` symlink, `refs/<revision>`), so llama.cpp `-hf`, transformers and
`huggingface_hub.scan_cache_dir()` see what we fetch and we reuse what they fetched.

huggingface_hub 2.x deletes a partial file when a download fails, so a 5 GB model interrupted
at 90% starts again from zero. For plain-HTTP files we therefore do the GET ourselves, with
`Range`, into `blobs/<etag>.incomplete` (the name `scan_cache_dir` reports as an incomplete
download), and keep that file when interrupted; huggingface_hub gives us the metadata and the
cache conventions. Files in Xet storage (the HEAD answer carries `X-Xet-Hash`) go through
`hf_hub_download`, whose chunk cache makes a repeated download cheap.

huggingface_hub reads `HF_HUB_CACHE`, `HF_ENDPOINT` and `HF_HUB_OFFLINE` once, at import; we
read them at call time and pass them explicitly, so `--offline` and tests that change the
environment take effect.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import http.client
import os
import queue
import shutil
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Protocol

from localbvi.errors import DownloadError, GGUFError, OfflineError, RefError

__all__ = [
    "DownloadCancelledError",
    "Progress",
    "ProgressCallback",
    "cached_file",
    "download",
    "free_bytes",
    "hub_cache_dir",
    "hub_endpoint",
    "is_offline",
    "list_repo_files",
    "partial_size",
    "repo_folder",
]

DEFAULT_ENDPOINT = "https://huggingface.co"
CHUNK = 1 << 20
"""Bytes per read: large enough that Python overhead is negligible next to the copy."""
MAX_ATTEMPTS = 6
"""Connection drops tolerated within one call before asking the user to run it again."""
PROGRESS_INTERVAL_S = 0.1
TIMEOUT_S = 30.0


@dataclass(frozen=True)
class Progress:
    """One progress report for one file; `done` counts bytes already on disk from earlier runs."""

    file: str
    done: int
    total: int
    speed_bps: float
    eta_s: float | None

    @property
    def fraction(self) -> float:
        return self.done / self.total if self.total else 1.0


ProgressCallback = Callable[[Progress], None]


class DownloadCancelledError(DownloadError):
    """The download was cancelled; the partial file stays (not as a model) for a later resume."""


def _write_chunk(f: IO[bytes], data: memoryview) -> None:
    """Write one chunk. A module-level function so tests can simulate a full disk (ENOSPC)."""
    f.write(data)


# --- environment, read at call time -------------------------------------------------------


def _truthy(value: str | None) -> bool:
    return (value or "").strip().upper() in {"1", "ON", "YES", "TRUE"}


def is_offline() -> bool:
    """`HF_HUB_OFFLINE=1` (or `TRANSFORMERS_OFFLINE`, or the `--offline` flag which sets it)."""
    return _truthy(os.environ.get("HF_HUB_OFFLINE")) or _truthy(
        os.environ.get("TRANSFORMERS_OFFLINE")
    )


def hub_endpoint() -> str:
    """The Hub's address (`HF_ENDPOINT`, else huggingface.co)."""
    return (os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT).rstrip("/")


def hub_cache_dir() -> Path:
    """The shared HF cache, resolved the way huggingface_hub resolves it."""
    explicit = os.environ.get("HF_HUB_CACHE") or os.environ.get("HUGGINGFACE_HUB_CACHE")
    if explicit:
        return Path(explicit).expanduser()
    home = os.environ.get("HF_HOME")
    if home:
        return Path(home).expanduser() / "hub"
    xdg = os.environ.get("XDG_CACHE_HOME") or "~/.cache"
    return Path(xdg).expanduser() / "huggingface" / "hub"


def free_bytes(path: Path) -> int:
    """Free space where `path` would live (`LOCALBVI_FAKE_FREE_BYTES` overrides, for tests)."""
    fake = os.environ.get("LOCALBVI_FAKE_FREE_BYTES")
    if fake:
        return int(fake)
    for candidate in (path, *path.parents):
        try:
            return shutil.disk_usage(candidate).free
        except OSError:
            continue
    return 0


def repo_folder(repo: str, cache: Path | None = None) -> Path:
    """The cache folder of a model repo: `models--org--name`."""
    return (cache or hub_cache_dir()) / ("models--" + repo.replace("/", "--"))


def _mb(n_bytes: int) -> str:
    return f"{n_bytes / 1e6:,.1f} MB"


# --- what is already on disk --------------------------------------------------------------


def _snapshot_candidates(folder: Path, revision: str) -> list[Path]:
    """Snapshot folders to look in: the one `revision` points at first, then the newest."""
    snapshots = folder / "snapshots"
    ordered: list[Path] = []
    ref = folder / "refs" / revision
    if ref.is_file():
        ordered.append(snapshots / ref.read_text().strip())
    elif (snapshots / revision).is_dir():
        ordered.append(snapshots / revision)
    if snapshots.is_dir():
        others = sorted(
            (p for p in snapshots.iterdir() if p.is_dir() and p not in ordered),
            key=lambda p: p.stat().st_mtime,
            reverse=True,
        )
        ordered.extend(others)
    return ordered


def cached_file(repo: str, filename: str, revision: str = "main") -> Path | None:
    """The complete cached copy of `filename`, without touching the network, or None."""
    folder = repo_folder(repo)
    for snapshot in _snapshot_candidates(folder, revision):
        candidate = snapshot / filename
        if candidate.is_file():  # follows the symlink: a dangling link is not a file
            return candidate
    return None


def cached_files(repo: str, revision: str = "main") -> list[str]:
    """Every file name cached for `repo` (the `revision` snapshot first, then older ones)."""
    seen: dict[str, None] = {}
    for snapshot in _snapshot_candidates(repo_folder(repo), revision):
        for path in sorted(snapshot.rglob("*")):
            if path.is_file():
                seen.setdefault(path.relative_to(snapshot).as_posix(), None)
    return list(seen)


def partial_size(repo: str) -> int:
    """Bytes held by interrupted downloads of `repo` (kept so that a new pull resumes)."""
    blobs = repo_folder(repo) / "blobs"
    return sum(p.stat().st_size for p in blobs.glob("*.incomplete")) if blobs.is_dir() else 0


# --- talking to the Hub --------------------------------------------------------------------


def _token() -> str | None:
    return os.environ.get("HF_TOKEN") or os.environ.get("HUGGING_FACE_HUB_TOKEN") or None


def _status_and_code(exc: BaseException) -> tuple[int | None, str | None]:
    """HTTP status and the Hub's `X-Error-Code`, from urllib's or huggingface_hub's errors."""
    if isinstance(exc, urllib.error.HTTPError):
        return exc.code, exc.headers.get("X-Error-Code")
    response = getattr(exc, "response", None)
    status = getattr(response, "status_code", None)
    headers = getattr(response, "headers", None)
    code = headers.get("X-Error-Code") if headers is not None else None
    return (status if isinstance(status, int) else None), code


def _translate(exc: BaseException, repo: str, filename: str | None) -> DownloadError:
    """An HTTP or network error as a message that says what to do."""
    endpoint = hub_endpoint()
    what = f"{repo}/{filename}" if filename else repo
    status, code = _status_and_code(exc)
    if code == "GatedRepo" or (status in (401, 403) and code != "RepoNotFound"):
        token_hint = (
            "HF_TOKEN is set but has no access: check it is a read token of the account "
            "that accepted the licence"
            if _token()
            else "then create a read token at https://huggingface.co/settings/tokens and "
            "set HF_TOKEN to it"
        )
        return DownloadError(
            f"{repo} is gated: accept its licence at {endpoint}/{repo} while logged in, "
            f"{token_hint}"
        )
    if code == "EntryNotFound":
        return DownloadError(
            f"{repo} has no file '{filename}' on the Hub; check the name at "
            f"{endpoint}/{repo}/tree/main"
        )
    if code == "RevisionNotFound":
        return DownloadError(f"{repo} has no such revision; check the branch or commit")
    if code == "RepoNotFound" or status == 404:
        return DownloadError(
            f"repository {repo} was not found on {endpoint}: check the spelling "
            "(org/name); if it is private, set HF_TOKEN to a token that can read it"
        )
    if type(exc).__name__ == "OfflineModeIsEnabled":
        return OfflineError(f"{what} is not on disk and offline mode is on (HF_HUB_OFFLINE=1)")
    if status is not None:
        return DownloadError(
            f"the Hub answered {status} for {what}; try again later "
            "(see https://status.huggingface.co)"
        )
    return OfflineError(
        f"cannot reach {endpoint} ({type(exc).__name__}: {exc}): you seem to be offline, "
        f"and {what} is not on disk; connect and try again"
    )


def _hub_errors() -> tuple[type[BaseException], ...]:
    """What huggingface_hub raises for HTTP answers, offline mode and network failures."""
    import httpx2
    from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled

    return (HfHubHTTPError, OfflineModeIsEnabled, httpx2.TransportError, OSError)


def list_repo_files(repo: str, revision: str = "main") -> list[tuple[str, int | None]]:
    """(path, size) of every file in a Hub repo; network required."""
    from huggingface_hub import HfApi

    if is_offline():
        raise OfflineError(f"cannot list {repo}: offline mode is on (HF_HUB_OFFLINE=1)")
    api = HfApi(endpoint=hub_endpoint(), token=_token())
    try:
        tree = api.list_repo_tree(repo, revision=revision, recursive=True)
        return [(item.path, getattr(item, "size", None)) for item in tree if hasattr(item, "size")]
    except _hub_errors() as exc:
        raise _translate(exc, repo, None) from exc


@dataclass(frozen=True)
class _Remote:
    url: str
    etag: str
    commit: str
    size: int | None
    xet: bool
    same_host: bool


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """HEAD must see the Hub's redirect itself: its headers carry the LFS file's metadata."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


def _metadata(repo: str, filename: str, revision: str) -> _Remote:
    """HEAD the file like `huggingface_hub.get_hf_file_metadata`, with the standard library.

    Importing huggingface_hub and its HTTP stack costs ~0.5-1 s per process, a third of a
    253 MB download on loopback; it is imported only for Xet files and repo listings.
    """
    endpoint = hub_endpoint()
    url = (
        f"{endpoint}/{repo}/resolve/{urllib.parse.quote(revision, safe='')}/"
        f"{urllib.parse.quote(filename)}"
    )
    opener = urllib.request.build_opener(_NoRedirect)
    headers = _headers(with_auth=True)
    location = url
    for _hop in range(5):
        request = urllib.request.Request(location, headers=headers, method="HEAD")
        try:
            with opener.open(request, timeout=TIMEOUT_S) as response:
                answer = response.headers
                break
        except urllib.error.HTTPError as exc:
            target = exc.headers.get("Location")
            if exc.code in (301, 302, 303, 307, 308) and target:
                answer = exc.headers
                next_url = urllib.parse.urljoin(location, target)
                same = urllib.parse.urlsplit(next_url).netloc == urllib.parse.urlsplit(url).netloc
                if answer.get("X-Linked-Etag") or answer.get("X-Linked-Size") or not same:
                    location = next_url  # an LFS file on a CDN: GET it there, without auth
                    break
                location = next_url  # a renamed repo on the Hub itself: ask again there
                continue
            raise _translate(exc, repo, filename) from exc
        except (OSError, http.client.HTTPException) as exc:
            raise _translate(exc, repo, filename) from exc
    else:
        raise DownloadError(f"too many redirects for {repo}/{filename}; check HF_ENDPOINT")
    etag = answer.get("X-Linked-Etag") or answer.get("ETag")
    commit = answer.get("X-Repo-Commit")
    size = answer.get("X-Linked-Size") or answer.get("Content-Length")
    if not commit or not etag:
        raise DownloadError(
            f"{endpoint} did not answer like the Hugging Face Hub for {repo}/{filename} "
            "(no commit or ETag header); check HF_ENDPOINT and any proxy"
        )
    same_host = urllib.parse.urlsplit(location).netloc == urllib.parse.urlsplit(url).netloc
    return _Remote(
        url=location,
        etag=etag.removeprefix("W/").strip('"'),
        commit=commit,
        size=int(size) if size and size.isdigit() else None,
        xet=answer.get("X-Xet-Hash") is not None,
        same_host=same_host,
    )


def _headers(with_auth: bool) -> dict[str, str]:
    """What huggingface_hub sends (a user agent, the token), without importing it."""
    from localbvi import __version__

    headers = {
        "User-Agent": f"localbvi/{__version__}; hf_hub/compatible",
        "Accept-Encoding": "identity",
    }
    token = _token()
    if with_auth and token:
        headers["Authorization"] = f"Bearer {token}"
    return headers


# --- the download ---------------------------------------------------------------------------


def download(
    repo: str,
    filename: str,
    *,
    revision: str = "main",
    on_progress: ProgressCallback | None = None,
    cancel: threading.Event | None = None,
) -> Path:
    """Fetch `filename` of `repo` into the HF cache (or find it there) and return its path.

    Online, the Hub is asked for the current version first, like `hf_hub_download`; offline
    (`HF_HUB_OFFLINE=1`, or the Hub unreachable) the cached copy is returned if there is one.
    """
    path, _commit = fetch(repo, filename, revision=revision, on_progress=on_progress, cancel=cancel)
    return path


def fetch(
    repo: str,
    filename: str,
    *,
    revision: str = "main",
    on_progress: ProgressCallback | None = None,
    cancel: threading.Event | None = None,
) -> tuple[Path, str]:
    """`download`, also returning the commit, so split parts can all come from one commit."""
    _check_filename(filename)
    if is_offline():
        cached = cached_file(repo, filename, revision)
        if cached is not None:
            return cached, cached.parent.name
        raise OfflineError(
            f"{repo}/{filename} is not on disk and offline mode is on (HF_HUB_OFFLINE=1 or "
            "--offline); go online and pull it first"
        )
    try:
        remote = _metadata(repo, filename, revision)
    except OfflineError:
        cached = cached_file(repo, filename, revision)
        if cached is not None:  # the Hub is unreachable: the copy we have is what we use
            return cached, cached.parent.name
        raise

    folder = repo_folder(repo)
    pointer = folder / "snapshots" / remote.commit / filename
    blob = folder / "blobs" / remote.etag
    if pointer.is_file():
        _write_ref(folder, revision, remote.commit)
        return pointer, remote.commit
    if remote.xet:
        return _xet_download(repo, filename, remote, on_progress, cancel), remote.commit

    lock = folder.parent / ".locks" / folder.name / f"{remote.etag}.lock"
    lock.parent.mkdir(parents=True, exist_ok=True)
    (folder / "blobs").mkdir(parents=True, exist_ok=True)
    (folder / "snapshots").mkdir(parents=True, exist_ok=True)
    with _file_lock(lock):
        if not (blob.is_file() and (remote.size is None or blob.stat().st_size == remote.size)):
            incomplete = blob.with_name(blob.name + ".incomplete")
            _http_download(repo, remote, filename, incomplete, on_progress, cancel)
            _verify_gguf(incomplete, filename)
            os.replace(incomplete, blob)
        _link(blob, pointer)
        _write_ref(folder, revision, remote.commit)
    return pointer, remote.commit


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    """The lock `hf_hub_download` takes for the same blob (flock on the same file), so two
    processes never write one blob; where flock does not exist we go without."""
    try:
        import fcntl
    except ImportError:  # Windows: no advisory locks in the standard library
        yield
        return
    with path.open("a") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def _check_filename(filename: str) -> None:
    parts = filename.split("/")
    if not filename or filename.startswith("/") or "\\" in filename or ".." in parts or "" in parts:
        raise RefError(
            f"'{filename}' is not a file name inside a repository (no '..', no leading '/')"
        )


class _Hasher(Protocol):
    def update(self, data: bytes | memoryview, /) -> None: ...
    def hexdigest(self) -> str: ...


def _new_hasher(etag: str, size: int | None) -> _Hasher | None:
    """The hash the ETag is: sha256 for LFS files, git's blob sha1 for small ones."""
    if len(etag) == 64 and all(c in "0123456789abcdef" for c in etag):
        return hashlib.sha256()
    if len(etag) == 40 and size is not None:
        hasher = hashlib.sha1(usedforsecurity=False)
        hasher.update(f"blob {size}\0".encode())
        return hasher
    return None


def _hash_prefix(hasher: _Hasher | None, path: Path) -> None:
    if hasher is None or not path.exists():
        return
    with path.open("rb") as f:
        while block := f.read(8 * CHUNK):
            hasher.update(block)


class _Meter:
    """Turns byte counts into throttled `Progress` events (speed over this run only)."""

    def __init__(self, callback: ProgressCallback | None, file: str, total: int, done: int):
        self.callback = callback
        self.file = file
        self.total = total
        self.start_done = done
        self.start = time.monotonic()
        self.last = 0.0

    def update(self, done: int, *, force: bool = False) -> None:
        if self.callback is None:
            return
        now = time.monotonic()
        if not force and now - self.last < PROGRESS_INTERVAL_S:
            return
        self.last = now
        elapsed = now - self.start
        fetched = done - self.start_done
        speed = fetched / elapsed if elapsed > 0 and fetched > 0 else 0.0
        eta = (self.total - done) / speed if speed > 0 else None
        self.callback(Progress(self.file, done, self.total, speed, eta))


def _open(url: str, headers: dict[str, str]) -> http.client.HTTPResponse:
    request = urllib.request.Request(url, headers=headers)
    response: http.client.HTTPResponse = urllib.request.urlopen(request, timeout=TIMEOUT_S)
    return response


def _http_download(
    repo: str,
    remote: _Remote,
    filename: str,
    incomplete: Path,
    on_progress: ProgressCallback | None,
    cancel: threading.Event | None,
) -> None:
    """GET the file into `incomplete`, resuming from what an earlier run left there."""
    total = remote.size
    have = incomplete.stat().st_size if incomplete.exists() else 0
    if total is not None and have > total:
        incomplete.unlink()
        have = 0
    if total is not None:
        need = total - have
        free = free_bytes(incomplete.parent)
        if need > free:
            raise DownloadError(
                f"not enough disk space for {filename}: it needs {_mb(need)} more but "
                f"{incomplete.parent} has {_mb(free)} free; free some space (`localbvi rm` "
                "removes models) or point HF_HUB_CACHE at a bigger disk"
            )

    headers = _headers(with_auth=remote.same_host)
    meter = _Meter(on_progress, filename, total or 0, have)
    meter.update(have, force=True)
    attempts = 0
    digest: str | None = None
    try:
        with incomplete.open("ab") as f:
            sink = _Sink(f, incomplete, remote.etag, total)
            try:
                while total is None or have < total:
                    if cancel is not None and cancel.is_set():
                        raise DownloadCancelledError(
                            f"download of {filename} cancelled at {_mb(have)}; "
                            "pulling it again resumes from there"
                        )
                    request_headers = dict(headers)
                    if have:
                        request_headers["Range"] = f"bytes={have}-"
                    try:
                        with _open(remote.url, request_headers) as response:
                            if have and response.status != 206:
                                # The server ignored Range: start over, never append twice.
                                sink.restart()
                                have = 0
                            if total is None:
                                total = int(response.headers.get("Content-Length") or 0) + have
                                meter.total = total
                                sink.size = total
                            while not (cancel is not None and cancel.is_set()):
                                buffer = memoryview(bytearray(CHUNK))
                                n = response.readinto(buffer)
                                if not n:
                                    break
                                sink.put(buffer[:n])
                                have += n
                                meter.update(have)
                                attempts = 0
                    except urllib.error.HTTPError as exc:
                        if exc.code == 416 and have:  # our partial is not a prefix of this file
                            sink.restart()
                            have = 0
                            continue
                        raise _translate(exc, repo, filename) from exc
                    except (OSError, http.client.HTTPException) as exc:
                        if isinstance(exc, _WriteError):
                            raise
                        attempts += 1
                        if attempts >= MAX_ATTEMPTS:
                            raise DownloadError(
                                f"the connection kept dropping while downloading {filename} "
                                f"({_mb(have)} of {_mb(total or 0)} kept); run the same "
                                f"command again to resume ({type(exc).__name__}: {exc})"
                            ) from exc
                        time.sleep(min(0.2 * 2**attempts, 5.0))
                        continue
                    if cancel is not None and cancel.is_set():
                        continue  # raises at the top of the loop
                    if total is not None and have < total:
                        attempts += 1  # the body ended early: resume with Range
                        if attempts >= MAX_ATTEMPTS:
                            raise DownloadError(
                                f"the server kept closing the connection early for {filename}; "
                                "run the same command again to resume"
                            )
                        continue
                    break
            finally:
                digest = sink.finish()
    except _WriteError as exc:
        freed = incomplete.stat().st_size if incomplete.exists() else 0
        incomplete.unlink(missing_ok=True)
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise DownloadError(
                f"the disk filled up while downloading {filename} ({_mb(have)} of "
                f"{_mb(total or 0)}); the partial file was deleted ({_mb(freed)} freed). "
                f"Free at least {_mb(total or 0)} on {incomplete.parent} and try again"
            ) from exc
        raise DownloadError(
            f"cannot write {filename} to {incomplete.parent} ({exc.strerror}); the partial "
            "file was deleted. Check the disk and its permissions, then try again"
        ) from exc

    meter.update(have, force=True)
    if total is not None and have != total:
        incomplete.unlink(missing_ok=True)
        raise DownloadError(
            f"{filename}: the server sent {_mb(have)} but announced {_mb(total)}; the bytes "
            "were deleted, try again"
        )
    if digest is not None and digest != remote.etag:
        incomplete.unlink(missing_ok=True)
        raise DownloadError(
            f"{filename} failed verification: its hash is {digest[:12]}… but the Hub "
            f"says {remote.etag[:12]}…; the damaged bytes were deleted. Try again; if it "
            "repeats, a proxy or the disk is corrupting data"
        )


class _Sink:
    """Writes chunks to the partial file while other threads hash and flush them to disk.

    hashlib and fdatasync release the GIL, so on two cores hashing and disk writeback overlap
    with receiving instead of adding to it (sha256 alone costs ~1 s/GB here).
    """

    SYNC_EVERY = 64 << 20
    """Bytes between background fdatasync calls, so the final fsync has little left to do."""

    def __init__(self, f: IO[bytes], path: Path, etag: str, size: int | None) -> None:
        self.f = f
        self.path = path
        self.etag = etag
        self.size = size
        self.hasher = _new_hasher(etag, size)
        _hash_prefix(self.hasher, path)
        self.queue: queue.Queue[memoryview | None] = queue.Queue(maxsize=64)
        self.hash_thread = threading.Thread(target=self._hash_loop, daemon=True)
        self.hash_thread.start()
        self.unsynced = 0
        self.sync_wanted = threading.Event()
        self.sync_error: OSError | None = None
        self.closing = False
        self.sync_thread = threading.Thread(target=self._sync_loop, daemon=True)
        self.sync_thread.start()

    def _hash_loop(self) -> None:
        while (chunk := self.queue.get()) is not None:
            if self.hasher is not None:
                self.hasher.update(chunk)

    def _sync_loop(self) -> None:
        while True:
            self.sync_wanted.wait()
            self.sync_wanted.clear()
            if self.closing:
                return
            try:
                os.fdatasync(self.f.fileno())
            except OSError as exc:
                self.sync_error = exc

    def put(self, chunk: memoryview) -> None:
        if self.sync_error is not None:
            raise _WriteError(self.sync_error.errno, self.sync_error.strerror)
        try:
            _write_chunk(self.f, chunk)
        except OSError as exc:
            raise _WriteError(exc.errno, exc.strerror) from exc
        self.queue.put(chunk)
        self.unsynced += len(chunk)
        if self.unsynced >= self.SYNC_EVERY:
            self.unsynced = 0
            try:
                self.f.flush()
            except OSError as exc:
                raise _WriteError(exc.errno, exc.strerror) from exc
            self.sync_wanted.set()

    def restart(self) -> None:
        """Drop what was written (the server would not resume): hash from zero again."""
        self.queue.put(None)
        self.hash_thread.join()
        self.f.truncate(0)
        self.hasher = _new_hasher(self.etag, self.size)
        self.hash_thread = threading.Thread(target=self._hash_loop, daemon=True)
        self.hash_thread.start()

    def finish(self) -> str | None:
        """Stop the helpers, make the bytes durable, and return the hash of the whole file."""
        self.queue.put(None)
        self.hash_thread.join()
        self.closing = True
        self.sync_wanted.set()
        self.sync_thread.join()
        try:
            self.f.flush()
            os.fsync(self.f.fileno())  # a rename after a crash must never expose a torn blob
        except OSError as exc:
            raise _WriteError(exc.errno, exc.strerror) from exc
        if self.sync_error is not None:
            raise _WriteError(self.sync_error.errno, self.sync_error.strerror)
        return self.hasher.hexdigest() if self.hasher is not None else None


class _WriteError(OSError):
    """Marks an OSError raised by the disk, not the network."""


def _verify_gguf(path: Path, filename: str) -> None:
    """The inspector must read a .gguf before we call it ready; else the bytes go."""
    if not filename.endswith(".gguf"):
        return
    from localbvi.inspector import inspect_gguf

    try:
        inspect_gguf(path)
    except GGUFError as exc:
        path.unlink(missing_ok=True)
        raise DownloadError(
            f"{filename} downloaded but is not a usable GGUF file ({exc}); it was deleted. "
            "Check that the repository holds GGUF models"
        ) from exc


def _link(blob: Path, pointer: Path) -> None:
    """The snapshot entry: a relative symlink like huggingface_hub's, or a copy without them."""
    pointer.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileNotFoundError):
        pointer.unlink()
    try:
        os.symlink(os.path.relpath(blob, pointer.parent), pointer)
    except OSError:
        shutil.copyfile(blob, pointer)


def _write_ref(folder: Path, revision: str, commit: str) -> None:
    if revision == commit:
        return
    ref = folder / "refs" / revision
    if ref.is_file() and ref.read_text().strip() == commit:
        return
    ref.parent.mkdir(parents=True, exist_ok=True)
    tmp = ref.with_name(f"{ref.name}.{os.getpid()}.tmp")
    tmp.write_text(commit)
    os.replace(tmp, ref)


# --- Xet storage (the real Hub) ----------------------------------------------------------


def _xet_download(
    repo: str,
    filename: str,
    remote: _Remote,
    on_progress: ProgressCallback | None,
    cancel: threading.Event | None,
) -> Path:
    """Delegate to `hf_hub_download`: hf_xet resumes from its chunk cache after a failure."""
    from huggingface_hub import hf_hub_download

    total = remote.size or 0
    folder = repo_folder(repo)
    if total and total > free_bytes(folder.parent):
        raise DownloadError(
            f"not enough disk space for {filename}: it needs {_mb(total)} but "
            f"{folder.parent} has {_mb(free_bytes(folder.parent))} free"
        )
    try:
        path = hf_hub_download(
            repo,
            filename,
            revision=remote.commit,
            cache_dir=str(hub_cache_dir()),
            endpoint=hub_endpoint(),
            token=_token(),
            tqdm_class=_tqdm_for(on_progress, cancel, filename, total),
        )
    except _hub_errors() as exc:
        raise _translate(exc, repo, filename) from exc
    pointer = Path(str(path))
    try:
        _verify_gguf(pointer.resolve(), filename)
    except DownloadError:
        pointer.unlink(missing_ok=True)
        raise
    _write_ref(folder, "main", remote.commit)
    return pointer


def _tqdm_for(
    on_progress: ProgressCallback | None,
    cancel: threading.Event | None,
    filename: str,
    total: int,
) -> Any:
    """A silent tqdm class that forwards byte counts as `Progress` and honours `cancel`."""
    from huggingface_hub.utils import tqdm as hf_tqdm  # type: ignore[attr-defined]

    meter = _Meter(on_progress, filename, total, 0)

    class _Bar(hf_tqdm):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            kwargs["disable"] = True
            super().__init__(*args, **kwargs)  # type: ignore[no-untyped-call]
            self._done = 0

        def update(self, n: float | None = 1) -> bool | None:
            if cancel is not None and cancel.is_set():
                raise DownloadCancelledError(f"download of {filename} cancelled")
            self._done += int(n or 0)
            meter.update(self._done)
            return None

    return _Bar
