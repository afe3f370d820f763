"""A real HTTP server on 127.0.0.1 that speaks enough of the Hugging Face Hub protocol.

`huggingface_hub` and `localbvi.store` talk to it exactly as to huggingface.co (point
`HF_ENDPOINT` at `server.url`). It serves:

- `HEAD/GET /{repo}/resolve/{rev}/{path}`: `X-Repo-Commit`, `ETag` (the sha256, as the Hub
  sends for LFS files), `Content-Length`, `Range: bytes=N-` → 206 with `Content-Range`;
- `GET /api/models/{repo}[/revision/{rev}]`: `id`, `sha`, `siblings`;
- `GET /api/models/{repo}/tree/{rev}`: the file list with sizes and LFS sha256;
- 404 with `X-Error-Code: RepoNotFound | RevisionNotFound | EntryNotFound`, and 401 with
  `X-Error-Code: GatedRepo` for a gated repo without the right token.

It never sends `X-Xet-Hash`, so clients take the plain-HTTP path. It counts the body bytes it
sends and has knobs to drop the connection mid-body, corrupt bytes, throttle, or pause at an
offset (so a test can kill a client at a known point). Hostile knobs make it answer like a
malicious mirror: any `ETag` or `X-Repo-Commit` header, a redirect anywhere (`file://`
included), or an endless chunked body.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
import socket
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

__all__ = ["HubFile", "HubRepo", "HubServer", "sha256_of"]

_HASH_CACHE: dict[tuple[str, int, float], str] = {}


def sha256_of(source: bytes | Path) -> str:
    """sha256 of bytes or a file (files are hashed once per process)."""
    if isinstance(source, bytes):
        return hashlib.sha256(source).hexdigest()
    stat = source.stat()
    key = (str(source), stat.st_size, stat.st_mtime)
    if key not in _HASH_CACHE:
        h = hashlib.sha256()
        with source.open("rb") as f:
            while block := f.read(8 << 20):
                h.update(block)
        _HASH_CACHE[key] = h.hexdigest()
    return _HASH_CACHE[key]


@dataclass
class HubFile:
    path: str
    data: bytes | None = None
    source: Path | None = None
    sha256: str = ""
    size: int = 0

    def read(self, offset: int, n: int) -> bytes:
        if self.data is not None:
            return self.data[offset : offset + n]
        assert self.source is not None
        with self.source.open("rb") as f:
            f.seek(offset)
            return f.read(n)


@dataclass
class HubRepo:
    repo_id: str
    commit: str
    files: dict[str, HubFile] = field(default_factory=dict)
    gated: bool = False
    token: str = "hf_good_token"


class HubServer:
    """Start with `start()`, stop with `stop()`; `url` is the endpoint for `HF_ENDPOINT`."""

    def __init__(self) -> None:
        self.repos: dict[str, HubRepo] = {}
        self.lock = threading.Lock()
        self.bytes_served = 0
        self.requests: list[tuple[str, str, str | None]] = []
        self.auth_seen: list[str | None] = []
        """The `Authorization` header of each request, in order (None when absent)."""
        # Knobs (all off by default).
        self.drop_at: int | None = None
        """File offset at which a GET body stops and the connection is cut."""
        self.drop_times = 0
        """How many responses the drop applies to (then it switches itself off)."""
        self.corrupt_at: int | None = None
        """File offset of a byte sent flipped (every time) — a hash mismatch."""
        self.throttle_bps: float | None = None
        self.pause_at: int | None = None
        """File offset at which a GET body waits for `release` (once); `paused` is set then."""
        self.paused = threading.Event()
        self.release = threading.Event()
        # Hostile knobs (a malicious or broken mirror behind HF_ENDPOINT).
        self.etag_header: str | None = None
        """Sent verbatim as `ETag` on resolve answers instead of the quoted sha256."""
        self.commit_header: str | None = None
        """Sent verbatim as `X-Repo-Commit` on resolve answers instead of the commit."""
        self.size_header: str | None = None
        """Sent as `X-Linked-Size` on HEAD answers (the size a client believes)."""
        self.redirect: tuple[str, dict[str, str]] | None = None
        """HEAD and GET on resolve answer 302 to this Location, with these extra headers."""
        self.get_redirect: str | None = None
        """Only GET on resolve answers 302 to this Location (HEAD stays normal)."""
        self.endless = False
        """GET sends the file, then zeros forever, chunked, without Content-Length."""
        self.endless_cap = 256 << 20
        """Bytes after which an endless body gives up (so a broken client cannot hang a test)."""
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # --- content -------------------------------------------------------------------------

    def add_repo(
        self, repo_id: str, files: dict[str, bytes | Path], *, gated: bool = False
    ) -> HubRepo:
        commit = hashlib.sha1(repo_id.encode()).hexdigest()
        repo = HubRepo(repo_id, commit, gated=gated)
        for path, content in files.items():
            if isinstance(content, bytes):
                hub_file = HubFile(path, data=content, size=len(content))
            else:
                hub_file = HubFile(path, source=content, size=content.stat().st_size)
            hub_file.sha256 = sha256_of(content)
            repo.files[path] = hub_file
        self.repos[repo_id] = repo
        return repo

    def get_requests(self, method: str | None = None) -> list[tuple[str, str, str | None]]:
        with self.lock:
            return [r for r in self.requests if method is None or r[0] == method]

    def reset_counters(self) -> None:
        with self.lock:
            self.bytes_served = 0
            self.requests.clear()

    # --- lifecycle -----------------------------------------------------------------------

    @property
    def url(self) -> str:
        assert self._httpd is not None
        host, port = self._httpd.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> HubServer:
        server = self

        class Handler(_Handler):
            hub = server

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.05,), daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self.release.set()
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()


_RESOLVE = re.compile(r"^/(?P<repo>[^/]+/[^/]+)/resolve/(?P<rev>[^/]+)/(?P<path>.+)$")
_API_TREE = re.compile(r"^/api/models/(?P<repo>[^/]+/[^/]+)/tree/(?P<rev>[^/]+)(?:/(?P<path>.*))?$")
_API_INFO = re.compile(r"^/api/models/(?P<repo>[^/]+/[^/]+)(?:/revision/(?P<rev>[^/]+))?$")


class _Handler(BaseHTTPRequestHandler):
    hub: HubServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    # --- helpers -------------------------------------------------------------------------

    def _plain(self, status: int, headers: dict[str, str] | None = None, body: bytes = b"") -> None:
        self.send_response(status)
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _error(self, status: int, code: str, extra: dict[str, str] | None = None) -> None:
        headers = {"X-Error-Code": code, "X-Error-Message": code, **(extra or {})}
        self._plain(status, headers, json.dumps({"error": code}).encode())

    def _repo(self, repo_id: str, rev: str | None) -> HubRepo | None:
        repo = self.hub.repos.get(repo_id)
        if repo is None:
            self._error(404, "RepoNotFound")
            return None
        if repo.gated and self.headers.get("Authorization") != f"Bearer {repo.token}":
            self._error(401, "GatedRepo")
            return None
        if rev not in (None, "main", repo.commit):
            self._error(404, "RevisionNotFound")
            return None
        return repo

    # --- routes --------------------------------------------------------------------------

    def do_HEAD(self) -> None:
        self._route()

    def do_GET(self) -> None:
        self._route()

    def _route(self) -> None:
        path = unquote(urlsplit(self.path).path)
        with self.hub.lock:
            self.hub.requests.append((self.command, path, self.headers.get("Range")))
            self.hub.auth_seen.append(self.headers.get("Authorization"))
        if m := _RESOLVE.match(path):
            self._resolve(m["repo"], m["rev"], m["path"])
        elif m := _API_TREE.match(path):
            self._tree(m["repo"], m["rev"], m["path"] or "")
        elif m := _API_INFO.match(path):
            self._info(m["repo"], m["rev"])
        else:
            self._error(404, "RepoNotFound")

    def _info(self, repo_id: str, rev: str | None) -> None:
        repo = self._repo(repo_id, rev)
        if repo is None:
            return
        body = {
            "id": repo.repo_id,
            "modelId": repo.repo_id,
            "sha": repo.commit,
            "private": False,
            "gated": "manual" if repo.gated else False,
            "siblings": [{"rfilename": p} for p in repo.files],
        }
        self._plain(200, {"Content-Type": "application/json"}, json.dumps(body).encode())

    def _tree(self, repo_id: str, rev: str, prefix: str) -> None:
        repo = self._repo(repo_id, rev)
        if repo is None:
            return
        items = [
            {
                "type": "file",
                "path": f.path,
                "size": f.size,
                "oid": hashlib.sha1(f.sha256.encode()).hexdigest(),
                "lfs": {"oid": f.sha256, "size": f.size, "pointerSize": 134},
            }
            for f in repo.files.values()
            if f.path.startswith(prefix)
        ]
        self._plain(200, {"Content-Type": "application/json"}, json.dumps(items).encode())

    def _resolve(self, repo_id: str, rev: str, file_path: str) -> None:
        repo = self._repo(repo_id, rev)
        if repo is None:
            return
        hub_file = repo.files.get(file_path)
        if hub_file is None:
            self._error(404, "EntryNotFound", {"X-Repo-Commit": repo.commit})
            return
        hub = self.hub
        if hub.redirect is not None or (hub.get_redirect and self.command == "GET"):
            location, extra = hub.redirect or (hub.get_redirect or "", {})
            self._plain(302, {"Location": location, **extra})
            return
        start = 0
        status = 200
        headers = {
            "X-Repo-Commit": hub.commit_header or repo.commit,
            "ETag": hub.etag_header or f'"{hub_file.sha256}"',
            "Accept-Ranges": "bytes",
            "Content-Type": "application/octet-stream",
        }
        if hub.size_header is not None and self.command == "HEAD":
            headers["X-Linked-Size"] = hub.size_header
        if hub.endless and self.command == "GET":
            self._send_endless(hub_file, headers)
            return
        range_header = self.headers.get("Range")
        if range_header:
            m = re.fullmatch(r"bytes=(\d+)-(\d*)", range_header.strip())
            if m is None or int(m[1]) >= hub_file.size:
                self._plain(416, {"Content-Range": f"bytes */{hub_file.size}"})
                return
            start = int(m[1])
            status = 206
            headers["Content-Range"] = f"bytes {start}-{hub_file.size - 1}/{hub_file.size}"
        length = hub_file.size - start
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(length))
        self.end_headers()
        if self.command == "HEAD":
            return
        self._send_body(hub_file, start)

    def _send_body(self, hub_file: HubFile, start: int) -> None:
        hub = self.hub
        knobs = (
            hub.drop_at is not None and hub.drop_times > 0,
            hub.corrupt_at is not None,
            hub.throttle_bps is not None,
            hub.pause_at is not None,
        )
        if hub_file.source is not None and not any(knobs):
            with hub_file.source.open("rb") as f:
                sent = self.connection.sendfile(f, start, hub_file.size - start)
            with hub.lock:
                hub.bytes_served += sent
            return

        offset = start
        chunk = 256 * 1024 if hub.throttle_bps is None else 16 * 1024
        began = time.monotonic()
        while offset < hub_file.size:
            end = min(offset + chunk, hub_file.size)
            stop_here = None
            if hub.drop_at is not None and hub.drop_times > 0 and offset <= hub.drop_at < end:
                stop_here = "drop"
                end = hub.drop_at
            if hub.pause_at is not None and offset <= hub.pause_at < end:
                stop_here = "pause"
                end = hub.pause_at
            data = bytearray(hub_file.read(offset, end - offset))
            if hub.corrupt_at is not None and offset <= hub.corrupt_at < end:
                data[hub.corrupt_at - offset] ^= 0xFF
            try:
                self.wfile.write(data)
                self.wfile.flush()
            except OSError:
                return
            with hub.lock:
                hub.bytes_served += len(data)
            offset = end
            if stop_here == "drop":
                with hub.lock:
                    hub.drop_times -= 1
                self._cut()
                return
            if stop_here == "pause":
                hub.pause_at = None
                hub.paused.set()
                hub.release.wait(timeout=60)
                self._cut()
                return
            if hub.throttle_bps:
                ahead = (offset - start) / hub.throttle_bps - (time.monotonic() - began)
                if ahead > 0:
                    time.sleep(ahead)

    def _send_endless(self, hub_file: HubFile, headers: dict[str, str]) -> None:
        """200, chunked: the file's bytes, then zeros until the client hangs up (or the cap)."""
        self.send_response(200)
        for key, value in headers.items():
            self.send_header(key, value)
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        sent = 0
        body = hub_file.read(0, hub_file.size)
        zeros = bytes(256 * 1024)
        while sent < self.hub.endless_cap:
            block = body if sent == 0 else zeros
            try:
                self.wfile.write(b"%x\r\n%s\r\n" % (len(block), block))
                self.wfile.flush()
            except OSError:
                break
            sent += len(block)
            with self.hub.lock:
                self.hub.bytes_served += len(block)
        self._cut()

    def _cut(self) -> None:
        """Close the connection abruptly, mid-body, as a dropped network would."""
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)
