"""The Hub stand-in (`hubserver.HubServer`) plus the metadata API that search and pairing use.

On top of downloads and file trees it answers, like huggingface.co:

- `GET /api/models?search=&filter=&sort=downloads&limit=`: `[{id, author, downloads, tags}]`,
  a model matching when every word of `search` is in its id and `filter` is one of its tags;
- `GET /api/models/{repo}`: `id`, `author`, `sha`, `tags`, `cardData`, `gguf`, `downloads`,
  `gated` ("manual" or false), `siblings` — also for repos that hold no files (an original
  safetensors model is only metadata here).

Like the real Hub, metadata of a gated repo is public and only its files need the token;
`gate_metadata = True` makes metadata need it too (a private repo). Every request's
`Authorization` header is recorded in `auth_by_path`, every query string in `queries`. Knobs:
`raw_list` (bytes sent as the listing, for broken or oversized answers), `delay_s`,
`fail_status`.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import threading
import time
from dataclasses import dataclass, field
from http.server import ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from hubserver import _API_INFO, HubRepo, HubServer, _Handler

__all__ = ["HubApiServer", "ModelMeta"]


@dataclass
class ModelMeta:
    """What the model info and the listings say about one repo."""

    tags: list[str] = field(default_factory=list)
    card_data: dict[str, Any] = field(default_factory=dict)
    downloads: int = 0
    gguf: dict[str, Any] | None = None
    gated: bool = False


class HubApiServer(HubServer):
    def __init__(self) -> None:
        super().__init__()
        self.meta: dict[str, ModelMeta] = {}
        self.auth_by_path: list[tuple[str, str | None]] = []
        self.queries: list[dict[str, str]] = []
        self.gate_metadata = False
        self.raw_list: bytes | None = None
        self.delay_s = 0.0
        self.fail_status: int | None = None
        """Every `/api/` request answers this status (429 rate limit, 503 outage…)."""

    def add_model(
        self,
        repo_id: str,
        *,
        files: dict[str, bytes] | None = None,
        sizes: dict[str, int] | None = None,
        tags: list[str] | None = None,
        card_data: dict[str, Any] | None = None,
        downloads: int = 0,
        gguf: dict[str, Any] | None = None,
        gated: bool = False,
    ) -> ModelMeta:
        """A repo with metadata; `files` are served, `sizes` override what the tree says."""
        if files:
            repo = self.add_repo(repo_id, dict(files.items()), gated=gated)
            for path, size in (sizes or {}).items():
                repo.files[path].size = size
        meta = ModelMeta(list(tags or []), dict(card_data or {}), downloads, gguf, gated)
        self.meta[repo_id] = meta
        return meta

    def start(self) -> HubApiServer:
        server = self

        class Handler(_ApiHandler):
            hub = server

        self._httpd = _QuietServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.05,), daemon=True)
        self._thread.start()
        return self

    def auth_for(self, path_prefix: str) -> list[str | None]:
        """The Authorization headers of the requests whose path starts with `path_prefix`."""
        with self.lock:
            return [auth for path, auth in self.auth_by_path if path.startswith(path_prefix)]


class _QuietServer(ThreadingHTTPServer):
    """A client that hung up (a timeout test, a refused huge body) is no server error: no
    traceback on stderr, where it would land in a later test's captured output."""

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass


class _ApiHandler(_Handler):
    hub: HubApiServer

    def _route(self) -> None:
        split = urlsplit(self.path)
        path = unquote(split.path)
        query = {k: v[0] for k, v in parse_qs(split.query).items()}
        with self.hub.lock:
            self.hub.auth_by_path.append((path, self.headers.get("Authorization")))
            self.hub.queries.append({"path": path, **query})
        if self.hub.delay_s:
            time.sleep(self.hub.delay_s)
        if self.hub.fail_status is not None and path.startswith("/api/"):
            self._error(self.hub.fail_status, "Failure")
            return
        if path == "/api/models":
            self._list(query)
            return
        m = _API_INFO.match(path)
        if m and m["rev"] is None and m["repo"] in self.hub.meta:
            self._meta_info(m["repo"])
            return
        super()._route()

    def _json(self, body: object) -> None:
        self._plain(200, {"Content-Type": "application/json"}, json.dumps(body).encode())

    def _authorised(self, repo_id: str) -> bool:
        meta = self.hub.meta.get(repo_id)
        repo = self.hub.repos.get(repo_id)
        token = repo.token if repo is not None else "hf_good_token"
        gated = (meta is not None and meta.gated) or (repo is not None and repo.gated)
        return not gated or self.headers.get("Authorization") == f"Bearer {token}"

    def _repo(self, repo_id: str, rev: str | None) -> HubRepo | None:
        # Metadata of a gated repo is public on the Hub: only files need the token.
        repo = self.hub.repos.get(repo_id)
        metadata = self.path.startswith("/api/")
        if repo is not None and repo.gated and metadata and not self.hub.gate_metadata:
            if rev not in (None, "main", repo.commit):
                self._error(404, "RevisionNotFound")
                return None
            return repo
        return super()._repo(repo_id, rev)

    def _meta_info(self, repo_id: str) -> None:
        if self.hub.gate_metadata and not self._authorised(repo_id):
            self._error(401, "GatedRepo")
            return
        meta = self.hub.meta[repo_id]
        repo = self.hub.repos.get(repo_id)
        body: dict[str, Any] = {
            "id": repo_id,
            "modelId": repo_id,
            "author": repo_id.split("/")[0],
            "sha": repo.commit if repo else hashlib.sha1(repo_id.encode()).hexdigest(),
            "private": False,
            "gated": "manual" if meta.gated else False,
            "downloads": meta.downloads,
            "tags": meta.tags,
            "cardData": meta.card_data,
            "siblings": [{"rfilename": p} for p in (repo.files if repo else {})],
        }
        if meta.gguf is not None:
            body["gguf"] = meta.gguf
        self._json(body)

    def _list(self, query: dict[str, str]) -> None:
        if self.hub.raw_list is not None:
            with contextlib.suppress(OSError):  # a client refusing a huge body hangs up early
                self._plain(200, {"Content-Type": "application/json"}, self.hub.raw_list)
            return
        words = query.get("search", "").lower().split()
        wanted = query.get("filter")
        rows: list[dict[str, Any]] = [
            {
                "id": repo_id,
                "modelId": repo_id,
                "author": repo_id.split("/")[0],
                "downloads": meta.downloads,
                "tags": meta.tags,
                "private": False,
            }
            for repo_id, meta in self.hub.meta.items()
            if all(w in repo_id.lower() for w in words) and (wanted is None or wanted in meta.tags)
        ]
        if query.get("sort") == "downloads":
            rows.sort(key=lambda r: -int(r["downloads"]))
        limit = int(query.get("limit", "1000"))
        self._json(rows[:limit])
