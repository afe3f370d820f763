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

Whatever the server (or a mirror set through `HF_ENDPOINT`) answers is untrusted: the ETag must
be a sha256 or git blob sha1 and the commit 40 hex digits before either names a file, every
path is checked to stay inside the cache, redirects go to http(s) only (and the token stays on
its host), and reading stops one byte past the announced size.

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
import re
import shutil
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import IO, Any, Protocol

from localbvi.errors import DownloadError, GGUFError, OfflineError, RefError, printable, shorten
from localbvi.store import partials

__all__ = [
    "REPO_RE",
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
MAX_REDIRECTS = 5
"""Redirects followed for one request (the Hub uses one: to its CDN)."""
MAX_NAME_BYTES = 255
"""Longest file or folder name most file systems accept."""
MAX_FILENAME_CHARS = 1000
"""Longest path inside a repository we accept (the Hub's own limit is lower in practice)."""

# The formats of the names a server gives us, checked before they touch the file system.
_SHA256_RE = re.compile(r"[0-9a-f]{64}")
_GIT_SHA1_RE = re.compile(r"[0-9a-f]{40}")
REPO_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,95}/[A-Za-z0-9][A-Za-z0-9._-]{0,95}")
"""A Hub repository id, `org/name` (96 characters each at most, as the Hub allows)."""
_SIZE_RE = re.compile(r"[0-9]{1,19}")


@dataclass(frozen=True)
class Progress:
    """One progress report for one file; `done` counts bytes already on disk from earlier runs.

    The report with `done == total` comes only after the file was checked; its `checked` says
    how ("sha256 verified, GGUF header read").
    """

    file: str
    done: int
    total: int
    speed_bps: float
    eta_s: float | None
    checked: str = ""

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


def _shown(text: str, limit: int = 80) -> str:
    """Untrusted text (a header, a name) as it may appear in a message: printable and short."""
    return shorten(printable(text), limit)


def _inside(path: Path, root: Path) -> Path:
    """`path`, after checking that it stays inside `root` once `..` and the like are resolved.

    Names from a server are validated before they get here; this is the last line, so a name
    we failed to foresee still cannot reach outside the cache. Symlinks the user made inside
    the cache (a repo folder on another disk) are respected: the check is on the path as
    written, made absolute and normalised.
    """
    real_root = os.path.normpath(os.path.abspath(root))
    real = os.path.normpath(os.path.abspath(path))
    if os.path.commonpath([real_root, real]) != real_root:
        raise DownloadError(
            f"refusing to write {_shown(str(path))}: it is outside the Hugging Face cache "
            f"{_shown(str(root))}"
        )
    return path


# --- what is already on disk --------------------------------------------------------------


def _snapshot_candidates(folder: Path, revision: str) -> list[Path]:
    """Snapshot folders to look in: the one `revision` points at first, then the newest."""
    snapshots = folder / "snapshots"
    ordered: list[Path] = []
    ref = folder / "refs" / revision
    commit = _read_ref(ref)
    if commit is not None:
        ordered.append(snapshots / commit)
    elif _GIT_SHA1_RE.fullmatch(revision) and (snapshots / revision).is_dir():
        ordered.append(snapshots / revision)
    if snapshots.is_dir():
        others = sorted(
            (p for p in snapshots.iterdir() if p.is_dir() and p not in ordered),
            key=lambda p: p.stat().st_mtime,
            reverse=True,
        )
        ordered.extend(others)
    return ordered


def _read_ref(ref: Path) -> str | None:
    """The commit a `refs/<revision>` file names, if it holds one (anything else is ignored)."""
    try:
        text = ref.read_text(encoding="ascii", errors="replace").strip()
    except (OSError, ValueError):
        return None
    return text if _GIT_SHA1_RE.fullmatch(text) else None


def cached_file(repo: str, filename: str, revision: str = "main") -> Path | None:
    """The complete cached copy of `filename`, without touching the network, or None."""
    if filename_problem(filename) is not None or not REPO_RE.fullmatch(repo):
        return None
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
    """The token huggingface_hub would use: HF_TOKEN, else the `hf auth login` file."""
    from localbvi.store.auth import hub_token

    return hub_token()


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
    endpoint = _shown(hub_endpoint())
    what = f"{repo}/{_shown(filename)}" if filename else repo
    status, code = _status_and_code(exc)
    if code == "GatedRepo" or (status in (401, 403) and code != "RepoNotFound"):
        from localbvi.store.auth import token_hint

        return DownloadError(
            f"{repo} is gated: accept its licence at {endpoint}/{repo} while logged in; "
            f"{token_hint()}"
        )
    if code == "EntryNotFound":
        return DownloadError(
            f"{repo} has no file '{_shown(filename or '')}' on the Hub; check the name at "
            f"{endpoint}/{repo}/tree/main"
        )
    if code == "RevisionNotFound":
        return DownloadError(f"{repo} has no such revision; check the branch or commit")
    if code == "RepoNotFound" or status == 404:
        return DownloadError(
            f"repository {repo} was not found on {endpoint}: check the spelling "
            "(org/name); if it is private, log in with `hf auth login` (or set HF_TOKEN)"
        )
    if type(exc).__name__ == "OfflineModeIsEnabled":
        return OfflineError(f"{what} is not on disk and offline mode is on (HF_HUB_OFFLINE=1)")
    if status is not None:
        return DownloadError(
            f"the Hub answered {status} for {what}; try again later "
            "(see https://status.huggingface.co)"
        )
    return OfflineError(
        f"cannot reach {endpoint} ({type(exc).__name__}: {_shown(str(exc))}): you seem to be "
        f"offline, and {what} is not on disk; connect and try again"
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
    """The file's sha256 (LFS files) or git blob sha1 (small files), lower-case hex."""
    commit: str
    size: int
    xet: bool
    same_host: bool


def _http_only_opener(*, redirects: bool) -> urllib.request.OpenerDirector:
    """An opener for http(s) only: no `file://`, `ftp://` or `data:` handler to be sent to."""
    opener = urllib.request.OpenerDirector()
    handlers: list[urllib.request.BaseHandler] = [
        urllib.request.ProxyHandler(),
        urllib.request.UnknownHandler(),
        urllib.request.HTTPHandler(),
        urllib.request.HTTPSHandler(),
        urllib.request.HTTPDefaultErrorHandler(),
        _HttpRedirect() if redirects else _NoRedirect(),
        urllib.request.HTTPErrorProcessor(),
    ]
    for handler in handlers:
        opener.add_handler(handler)
    return opener


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """HEAD must see the Hub's redirect itself: its headers carry the LFS file's metadata."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


class _BadRedirectError(Exception):
    """A server redirected a download to something other than an http(s) URL."""

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.url = url


class _HttpRedirect(urllib.request.HTTPRedirectHandler):
    """Redirects for the body: http(s) only, a few at most, the token kept on its own host."""

    max_redirections = MAX_REDIRECTS

    def redirect_request(
        self,
        req: urllib.request.Request,
        fp: IO[bytes],
        code: int,
        msg: str,
        headers: Any,
        newurl: str,
    ) -> urllib.request.Request | None:
        if _scheme(newurl) not in ("http", "https"):
            raise _BadRedirectError(newurl)
        new = super().redirect_request(req, fp, code, msg, headers, newurl)
        if new is not None and _netloc(newurl) != _netloc(req.full_url):
            new.remove_header("Authorization")  # the Hub token never goes to another host
        return new

    def http_error_302(
        self, req: urllib.request.Request, fp: IO[bytes], code: int, msg: str, headers: Any
    ) -> Any:
        # The base class refuses some schemes itself with a bare HTTPError: say which, here.
        target = headers.get("Location") or headers.get("URI")
        if target:
            try:
                newurl = urllib.parse.urljoin(req.full_url, target)
            except ValueError:
                newurl = target
            if _scheme(newurl) not in ("http", "https"):
                raise _BadRedirectError(newurl)
        return super().http_error_302(req, fp, code, msg, headers)

    http_error_301 = http_error_303 = http_error_307 = http_error_308 = http_error_302


def _scheme(url: str) -> str:
    try:
        return urllib.parse.urlsplit(url).scheme.lower()
    except ValueError:
        return ""


def _netloc(url: str) -> str:
    try:
        return urllib.parse.urlsplit(url).netloc.lower()
    except ValueError:
        return ""


def _checked_endpoint() -> str:
    """HF_ENDPOINT, refused with a readable error unless it is an http(s) address."""
    endpoint = hub_endpoint()
    try:
        parts = urllib.parse.urlsplit(endpoint)
        ok = parts.scheme in ("http", "https") and bool(parts.hostname)
        _ = parts.port  # a port that is not a number raises ValueError
    except ValueError:
        ok = False
    if not ok:
        raise DownloadError(
            f"HF_ENDPOINT is {_shown(endpoint)!r}, not an http(s) address like "
            f"{DEFAULT_ENDPOINT}; fix or unset it"
        )
    return endpoint


def _bad_answer(endpoint: str, what: str, problem: str) -> DownloadError:
    return DownloadError(
        f"{_shown(endpoint)} did not answer like the Hugging Face Hub for {what}: {problem}; "
        "nothing was written. Check HF_ENDPOINT and any proxy"
    )


def _checked_etag(raw: str, endpoint: str, what: str) -> str:
    """The Hub's ETag is the file's sha256 (LFS) or git blob sha1; anything else is refused.

    It becomes a file name in the cache (`blobs/<etag>`), so this check is what keeps a
    server from choosing where we write.
    """
    etag = raw.strip().removeprefix("W/").strip('"').lower()
    if _SHA256_RE.fullmatch(etag) or _GIT_SHA1_RE.fullmatch(etag):
        return etag
    raise _bad_answer(
        endpoint, what, f"its ETag {_shown(raw, 60)!r} is not a sha256 or git sha1 hash"
    )


def _checked_commit(raw: str, endpoint: str, what: str) -> str:
    commit = raw.strip().lower()
    if _GIT_SHA1_RE.fullmatch(commit):
        return commit
    raise _bad_answer(
        endpoint, what, f"its X-Repo-Commit {_shown(raw, 60)!r} is not a 40-digit commit hash"
    )


def _checked_size(raw: str | None, endpoint: str, what: str) -> int:
    size = (raw or "").strip()
    if _SIZE_RE.fullmatch(size):
        return int(size)
    problem = (
        f"the file size {_shown(size, 40)!r} is not a number of bytes"
        if size
        else "it did not say the file's size"
    )
    raise _bad_answer(endpoint, what, problem)


def _metadata(repo: str, filename: str, revision: str) -> _Remote:
    """HEAD the file like `huggingface_hub.get_hf_file_metadata`, with the standard library.

    Importing huggingface_hub and its HTTP stack costs ~0.5-1 s per process, a third of a
    253 MB download on loopback; it is imported only for Xet files and repo listings.
    Every name the answer gives (ETag, commit) and every redirect is checked here.
    """
    endpoint = _checked_endpoint()
    what = f"{repo}/{_shown(filename)}"
    url = (
        f"{endpoint}/{repo}/resolve/{urllib.parse.quote(revision, safe='')}/"
        f"{urllib.parse.quote(filename)}"
    )
    opener = _http_only_opener(redirects=False)
    headers = _headers(with_auth=True)
    location = url
    for _hop in range(MAX_REDIRECTS):
        request = urllib.request.Request(location, headers=headers, method="HEAD")
        try:
            with opener.open(request, timeout=TIMEOUT_S) as response:
                answer = response.headers
                break
        except urllib.error.HTTPError as exc:
            target = exc.headers.get("Location")
            if exc.code in (301, 302, 303, 307, 308) and target:
                answer = exc.headers
                try:
                    next_url = urllib.parse.urljoin(location, target)
                except ValueError:
                    next_url = target
                scheme = _scheme(next_url)
                if scheme not in ("http", "https"):
                    raise _bad_answer(
                        endpoint,
                        what,
                        f"it redirected to {_shown(next_url, 60)!r}, "
                        f"{'a ' + scheme + ':// address' if scheme else 'not a URL'}; "
                        "only http(s) redirects are followed",
                    ) from None
                same = _netloc(next_url) == _netloc(url)
                if answer.get("X-Linked-Etag") or answer.get("X-Linked-Size") or not same:
                    location = next_url  # an LFS file on a CDN: GET it there, without auth
                    break
                location = next_url  # a renamed repo on the Hub itself: ask again there
                continue
            raise _translate(exc, repo, filename) from exc
        except (OSError, http.client.HTTPException) as exc:
            raise _translate(exc, repo, filename) from exc
    else:
        raise DownloadError(
            f"too many redirects for {what} (more than {MAX_REDIRECTS}); check HF_ENDPOINT"
        )
    etag = answer.get("X-Linked-Etag") or answer.get("ETag")
    commit = answer.get("X-Repo-Commit")
    if not commit or not etag:
        raise DownloadError(
            f"{_shown(endpoint)} did not answer like the Hugging Face Hub for {what} "
            "(no commit or ETag header); check HF_ENDPOINT and any proxy"
        )
    return _Remote(
        url=location,
        etag=_checked_etag(etag, endpoint, what),
        commit=_checked_commit(commit, endpoint, what),
        size=_checked_size(
            answer.get("X-Linked-Size") or answer.get("Content-Length"), endpoint, what
        ),
        xet=answer.get("X-Xet-Hash") is not None,
        same_host=_netloc(location) == _netloc(url),
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
    _check_repo(repo)
    _check_filename(filename)
    _check_revision(revision)
    if is_offline():
        cached = cached_file(repo, filename, revision)
        if cached is not None:
            return cached, cached.parent.name
        raise OfflineError(
            f"{repo}/{_shown(filename)} is not on disk and offline mode is on (HF_HUB_OFFLINE=1 or "
            "--offline); go online and pull it first"
        )
    try:
        remote = _metadata(repo, filename, revision)
    except OfflineError:
        cached = cached_file(repo, filename, revision)
        if cached is not None:  # the Hub is unreachable: the copy we have is what we use
            return cached, cached.parent.name
        raise

    cache = hub_cache_dir()
    folder = _inside(repo_folder(repo, cache), cache)
    pointer = _inside(folder / "snapshots" / remote.commit / filename, cache)
    blob = _inside(folder / "blobs" / remote.etag, cache)
    if pointer.is_file():
        _write_ref(folder, revision, remote.commit)
        return pointer, remote.commit
    if remote.xet:
        return _xet_download(repo, filename, remote, on_progress, cancel), remote.commit

    lock = _inside(folder.parent / ".locks" / folder.name / f"{remote.etag}.lock", cache)
    lock.parent.mkdir(parents=True, exist_ok=True)
    (folder / "blobs").mkdir(parents=True, exist_ok=True)
    (folder / "snapshots").mkdir(parents=True, exist_ok=True)
    with _file_lock(lock):
        if not (blob.is_file() and blob.stat().st_size == remote.size):
            incomplete = blob.with_name(blob.name + ".incomplete")
            partials.remember(incomplete, filename, remote.size)  # names it in `models`
            meter = _Meter(on_progress, filename, remote.size, 0)
            try:
                checked = _http_download(repo, remote, filename, incomplete, meter, cancel)
                checked += _verify_gguf(incomplete, filename)
            finally:
                with contextlib.suppress(OSError):
                    if incomplete.stat().st_size == 0:  # a refusal before any byte came
                        incomplete.unlink()
                if not incomplete.exists():  # refused, or bad bytes deleted: nothing to resume
                    partials.forget(incomplete)
            os.replace(incomplete, blob)
            partials.forget(incomplete)
            meter.finish(checked)
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


def filename_problem(filename: str) -> str | None:
    """What makes `filename` unusable as a path inside a repository (and the cache), or None."""
    if not filename:
        return "it is empty"
    if len(filename) > MAX_FILENAME_CHARS:
        return f"it is {len(filename):,} characters long (at most {MAX_FILENAME_CHARS:,})"
    if any(ord(c) < 32 or ord(c) == 127 for c in filename):
        return "it contains control characters"
    if filename.startswith("/") or "\\" in filename or re.match(r"[A-Za-z]:", filename):
        return "it is absolute or has backslashes"
    parts = filename.split("/")
    if any(part in ("", ".", "..") for part in parts):
        return "it has '..', '.' or empty parts"
    if any(len(part.encode("utf-8", "surrogatepass")) > MAX_NAME_BYTES for part in parts):
        return f"a name in it is longer than {MAX_NAME_BYTES} bytes, the file system's limit"
    return None


def _check_filename(filename: str) -> None:
    problem = filename_problem(filename)
    if problem is not None:
        raise RefError(f"'{_shown(filename)}' is not a file name inside a repository: {problem}")


def _check_repo(repo: str) -> None:
    if not REPO_RE.fullmatch(repo):
        raise RefError(f"'{_shown(repo)}' is not a Hub repository name (org/name)")


def _check_revision(revision: str) -> None:
    parts = revision.split("/")
    if (
        not revision
        or len(revision) > MAX_NAME_BYTES
        or any(ord(c) < 32 for c in revision)
        or "\\" in revision
        or any(part in ("", ".", "..") for part in parts)
    ):
        raise RefError(f"'{_shown(revision)}' is not a branch, tag or commit name")


class _Hasher(Protocol):
    def update(self, data: bytes | memoryview, /) -> None: ...
    def hexdigest(self) -> str: ...


def _new_hasher(etag: str, size: int | None) -> _Hasher | None:
    """The hash the ETag is: sha256 for LFS files, git's blob sha1 for small ones."""
    if _SHA256_RE.fullmatch(etag):
        return hashlib.sha256()
    if _GIT_SHA1_RE.fullmatch(etag) and size is not None:
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
    """Turns byte counts into throttled `Progress` events (speed over this run only).

    The event that says a file is complete comes from `finish`, after it was checked: a
    progress bar at 100 % means a usable file.
    """

    def __init__(self, callback: ProgressCallback | None, file: str, total: int, done: int):
        self.callback = callback
        self.file = file
        self.total = total
        self.start_done = done
        self.start = time.monotonic()
        self.last = 0.0

    def update(self, done: int, *, force: bool = False) -> None:
        if self.callback is None or done >= self.total:
            return
        now = time.monotonic()
        if not force and now - self.last < PROGRESS_INTERVAL_S:
            return
        self.last = now
        self.callback(self._progress(done, now))

    def finish(self, checked: str) -> None:
        if self.callback is not None:
            self.callback(replace(self._progress(self.total, time.monotonic()), checked=checked))

    def _progress(self, done: int, now: float) -> Progress:
        elapsed = now - self.start
        fetched = done - self.start_done
        speed = fetched / elapsed if elapsed > 0 and fetched > 0 else 0.0
        eta = (self.total - done) / speed if speed > 0 else None
        return Progress(self.file, done, self.total, speed, eta)


def _open(url: str, headers: dict[str, str]) -> http.client.HTTPResponse:
    if _scheme(url) not in ("http", "https"):
        raise _BadRedirectError(url)
    request = urllib.request.Request(url, headers=headers)
    response: http.client.HTTPResponse = _http_only_opener(redirects=True).open(
        request, timeout=TIMEOUT_S
    )
    return response


class _TooLongError(Exception):
    """The server sent more bytes than it announced (a broken or hostile server)."""


def _http_download(
    repo: str,
    remote: _Remote,
    filename: str,
    incomplete: Path,
    meter: _Meter,
    cancel: threading.Event | None,
) -> str:
    """GET the file into `incomplete`, resuming from what an earlier run left there.

    Returns how the bytes were checked. Reading stops one byte past the announced size: a
    server that sends more (an endless body) fails the download instead of filling the disk.
    """
    name = _shown(filename)
    total = remote.size
    have = incomplete.stat().st_size if incomplete.exists() else 0
    if have > total:
        incomplete.unlink()
        have = 0
    need = total - have
    free = free_bytes(incomplete.parent)
    if need > free:
        raise DownloadError(
            f"not enough disk space for {name}: it needs {_mb(need)} more but "
            f"{incomplete.parent} has {_mb(free)} free; free some space (`localbvi rm` "
            "removes models) or point HF_HUB_CACHE at a bigger disk"
        )

    headers = _headers(with_auth=remote.same_host)
    meter.start_done = have
    meter.update(have, force=True)
    attempts = 0
    digest: str | None = None
    try:
        with incomplete.open("ab") as f:
            sink = _Sink(f, incomplete, remote.etag, total)
            try:
                while have < total:
                    if cancel is not None and cancel.is_set():
                        raise DownloadCancelledError(
                            f"download of {name} cancelled at {_mb(have)}; "
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
                            while not (cancel is not None and cancel.is_set()):
                                # One byte more than announced is enough to know it lies.
                                want = min(CHUNK, total + 1 - have)
                                buffer = memoryview(bytearray(want))
                                n = response.readinto(buffer)
                                if not n:
                                    break
                                if have + n > total:
                                    raise _TooLongError
                                sink.put(buffer[:n])
                                have += n
                                meter.update(have)
                                attempts = 0
                    except urllib.error.HTTPError as exc:
                        if exc.code == 416 and have:  # our partial is not a prefix of this file
                            sink.restart()
                            have = 0
                            continue
                        if 300 <= exc.code < 400:
                            raise DownloadError(
                                f"the download of {name} was redirected too often (more "
                                f"than {MAX_REDIRECTS} times); check HF_ENDPOINT and any proxy"
                            ) from exc
                        raise _translate(exc, repo, filename) from exc
                    except (OSError, http.client.HTTPException) as exc:
                        if isinstance(exc, _WriteError):
                            raise
                        attempts += 1
                        if attempts >= MAX_ATTEMPTS:
                            raise DownloadError(
                                f"the connection kept dropping while downloading {name} "
                                f"({_mb(have)} of {_mb(total)} kept); run the same "
                                f"command again to resume ({type(exc).__name__}: "
                                f"{_shown(str(exc))})"
                            ) from exc
                        time.sleep(min(0.2 * 2**attempts, 5.0))
                        continue
                    if cancel is not None and cancel.is_set():
                        continue  # raises at the top of the loop
                    if have < total:
                        attempts += 1  # the body ended early: resume with Range
                        if attempts >= MAX_ATTEMPTS:
                            raise DownloadError(
                                f"the server kept closing the connection early for {name}; "
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
                f"the disk filled up while downloading {name} ({_mb(have)} of "
                f"{_mb(total)}); the partial file was deleted ({_mb(freed)} freed). "
                f"Free at least {_mb(total)} on {incomplete.parent} and try again"
            ) from exc
        raise DownloadError(
            f"cannot write {name} to {incomplete.parent} ({exc.strerror}); the partial "
            "file was deleted. Check the disk and its permissions, then try again"
        ) from exc
    except _TooLongError:
        incomplete.unlink(missing_ok=True)
        raise DownloadError(
            f"{_shown(hub_endpoint())} sent more than the {_mb(total)} it announced for "
            f"{name}; the download was stopped and the partial file deleted. Check "
            "HF_ENDPOINT and any proxy, then try again"
        ) from None
    except _BadRedirectError as exc:
        scheme = _scheme(exc.url)
        raise _bad_answer(
            hub_endpoint(),
            f"{repo}/{name}",
            f"the download was redirected to {_shown(exc.url, 60)!r}"
            f"{', a ' + scheme + ':// address' if scheme else ''}; only http(s) is followed",
        ) from None

    if have != total:
        incomplete.unlink(missing_ok=True)
        raise DownloadError(
            f"{name}: the server sent {_mb(have)} but announced {_mb(total)}; the bytes "
            "were deleted, try again"
        )
    if digest is None:  # cannot happen: the ETag was checked to be one of the two hashes
        incomplete.unlink(missing_ok=True)
        raise DownloadError(f"{name} could not be verified; the bytes were deleted")
    if digest != remote.etag:
        incomplete.unlink(missing_ok=True)
        raise DownloadError(
            f"{name} failed verification: its hash is {digest[:12]}… but the Hub "
            f"says {remote.etag[:12]}…; the damaged bytes were deleted. Try again; if it "
            "repeats, a proxy or the disk is corrupting data"
        )
    if _SHA256_RE.fullmatch(remote.etag):
        return "sha256 verified"
    # The Hub gives a git blob sha1 instead of a sha256 for files kept outside LFS.
    return "no sha256 from the Hub: git sha1 and size verified"


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


def _verify_gguf(path: Path, filename: str) -> str:
    """The inspector must read a .gguf before we call it ready; else the bytes go.

    Returns what was checked, to append to the verification note.
    """
    if not filename.endswith(".gguf"):
        return ""
    from localbvi.inspector import inspect_gguf

    try:
        inspect_gguf(path)
    except GGUFError as exc:
        path.unlink(missing_ok=True)
        raise DownloadError(
            f"{_shown(filename)} downloaded but is not a usable GGUF file "
            f"({_shown(str(exc), 120)}); it was deleted. Check that the repository holds "
            "GGUF models"
        ) from exc
    return ", GGUF header read"


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
    ref = _inside(folder / "refs" / revision, folder)
    if _read_ref(ref) == commit:
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

    meter = _Meter(on_progress, filename, remote.size, 0)
    total = remote.size
    folder = repo_folder(repo)
    if total and total > free_bytes(folder.parent):
        raise DownloadError(
            f"not enough disk space for {_shown(filename)}: it needs {_mb(total)} but "
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
            tqdm_class=_tqdm_for(meter, cancel, filename),
        )
    except _hub_errors() as exc:
        raise _translate(exc, repo, filename) from exc
    except ValueError as exc:  # e.g. its own check that the snapshot path stays in the cache
        raise _bad_answer(
            hub_endpoint(), f"{repo}/{_shown(filename)}", _shown(str(exc), 100)
        ) from exc
    # huggingface_hub HEADs the file again and names the blob after that answer's ETag:
    # refuse to use a file a second, different answer put outside the cache.
    pointer = _inside(Path(str(path)), hub_cache_dir())
    try:
        checked = _verify_gguf(pointer.resolve(), filename)
    except DownloadError:
        pointer.unlink(missing_ok=True)
        raise
    _write_ref(folder, "main", remote.commit)
    meter.finish("fetched and checked by huggingface_hub (Xet)" + checked)
    return pointer


def _tqdm_for(meter: _Meter, cancel: threading.Event | None, filename: str) -> Any:
    """A silent tqdm class that forwards byte counts as `Progress` and honours `cancel`."""
    from huggingface_hub.utils import tqdm as hf_tqdm  # type: ignore[attr-defined]

    class _Bar(hf_tqdm):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            kwargs["disable"] = True
            super().__init__(*args, **kwargs)  # type: ignore[no-untyped-call]
            self._done = 0

        def update(self, n: float | None = 1) -> bool | None:
            if cancel is not None and cancel.is_set():
                raise DownloadCancelledError(f"download of {_shown(filename)} cancelled")
            self._done += int(n or 0)
            meter.update(self._done)
            return None

    return _Bar
