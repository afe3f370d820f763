"""The Hub's metadata API: model info, model search, file trees, and whether the Hub answers.

Downloads live in `hub.py`; this module only reads JSON. It uses httpx2 — huggingface_hub's own
HTTP client, so nothing new to install — with `trust_env=True`, so `HTTPS_PROXY`, `NO_PROXY`
and `SSL_CERT_FILE` are obeyed as huggingface_hub obeys them. Every answer is bounded: short
timeouts, at most `MAX_JSON_BYTES` of body, a few redirects and pages. Every failure is a
`HubError` whose one line says what to do (offline? proxy? token?).

`HF_ENDPOINT`, `HF_HUB_OFFLINE` and the token (`auth.py`) are read at call time.
"""

from __future__ import annotations

import json
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from localbvi.errors import HubError
from localbvi.store import auth, hub
from localbvi.store.naming import guess_quant, split_parts, user_text

if TYPE_CHECKING:
    import httpx2

__all__ = [
    "MAX_JSON_BYTES",
    "HubApi",
    "HubNotFoundError",
    "ModelInfo",
    "QuantOption",
    "RepoSummary",
    "SearchResult",
    "hub_reachable",
    "is_repo_id",
    "quant_options",
    "search_gguf",
]

MAX_JSON_BYTES = 8 << 20
"""The largest JSON answer read (a big repo's file tree is ~1 MB)."""
MAX_ERROR_BYTES = 64 << 10
"""Bytes of an error answer read (only headers are used; the body is drained politely)."""
MAX_PAGES = 10
"""Pages of a paginated answer followed (`Link: <…>; rel="next"`)."""
CONNECT_TIMEOUT_S = 5.0
READ_TIMEOUT_S = 15.0
REACHABLE_TIMEOUT_S = 2.0
"""The app's online check: long enough for a slow proxy, short enough not to be noticed."""
MAX_LIMIT = 100
"""Most search results asked for at once."""
SEARCH_WORKERS = 4
"""Repositories whose details (gated flag, file tree) are fetched at once for a search."""


def is_repo_id(text: str) -> bool:
    """Whether `text` is a Hub model id (`org/name`), safe to put in a URL path."""
    return bool(hub.REPO_RE.fullmatch(text)) and ".." not in text


class HubNotFoundError(HubError):
    """The Hub has no such repository (or hides a private one from us)."""


# --- values --------------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelInfo:
    """What `GET /api/models/{repo}` says about one repository (only the fields we use)."""

    id: str
    author: str
    tags: tuple[str, ...] = ()
    card_base_models: tuple[str, ...] = ()
    """`cardData.base_model`: the card author's own claim (a string or a list on the Hub)."""
    gated: bool = False
    downloads: int = 0
    license: str | None = None
    context_length: int | None = None
    """From the Hub's `gguf` summary of a GGUF repo, when it has one."""
    params: int | None = None
    """`gguf.total`: parameters, when the Hub read them from the GGUF."""

    def tag_targets(self, relation: str) -> list[str]:
        """Repos named by `base_model:{relation}:ORG/NAME` tags (relation: quantized, finetune…)."""
        prefix = f"base_model:{relation}:"
        return [t[len(prefix) :] for t in self.tags if t.startswith(prefix)]

    @property
    def is_gguf(self) -> bool:
        return "gguf" in self.tags


@dataclass(frozen=True)
class RepoSummary:
    """One row of `GET /api/models?…` (a search or a filter)."""

    id: str
    author: str
    downloads: int = 0
    tags: tuple[str, ...] = ()
    gated: bool | None = None
    """None when the listing did not say (it usually does not)."""


@dataclass(frozen=True)
class QuantOption:
    """One downloadable quantization of a repo: a file, or all parts of a split file."""

    quant: str
    files: tuple[str, ...]
    size: int
    """Bytes of all parts together."""

    @property
    def file(self) -> str:
        """The file to name in a reference: the first part when split."""
        return self.files[0]


@dataclass(frozen=True)
class SearchResult:
    """A GGUF repo found by a search, with its quantizations."""

    repo: str
    downloads: int
    gated: bool | None
    quants: tuple[QuantOption, ...] = ()
    ram_fit: Mapping[str, str] = field(default_factory=dict)
    """Quant file → "fits" / "tight" / "won't fit" (localbvi.store.library.ram_fit)."""
    problem: str | None = None
    """Why the details are missing (the search itself worked), or None."""

    def ref(self, option: QuantOption) -> str:
        """What to give `localbvi pull`: `repo:QUANT` when that is unambiguous, else the file."""
        same = [q for q in self.quants if q.quant == option.quant]
        return f"{self.repo}:{option.quant}" if len(same) == 1 else f"{self.repo}/{option.file}"


# --- parsing untrusted JSON ----------------------------------------------------------------


def _str(value: object) -> str | None:
    return value if isinstance(value, str) else None


def _int(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0


def _strs(value: object, limit: int = 1000) -> tuple[str, ...]:
    if isinstance(value, str):
        return (value,)
    if isinstance(value, list):
        return tuple(v for v in value[:limit] if isinstance(v, str))
    return ()


def _gated(value: object) -> bool:
    """The Hub's `gated`: false, or "auto" / "manual" (the kind of approval)."""
    return value is True or (isinstance(value, str) and value.lower() not in ("", "false"))


def _author(repo: str, raw: Mapping[str, Any]) -> str:
    return _str(raw.get("author")) or repo.split("/", 1)[0]


def _parse_info(repo: str, raw: object) -> ModelInfo:
    if not isinstance(raw, dict):
        raise HubError(_bad_answer(f"model info of {repo}", "it is not a JSON object"))
    repo_id = _str(raw.get("id")) or _str(raw.get("modelId")) or repo
    if not is_repo_id(repo_id):
        repo_id = repo
    card = raw.get("cardData")
    card = card if isinstance(card, dict) else {}
    gguf = raw.get("gguf")
    gguf = gguf if isinstance(gguf, dict) else {}
    tags = _strs(raw.get("tags"))
    license_ = _str(card.get("license")) or next(
        (t.removeprefix("license:") for t in tags if t.startswith("license:")), None
    )
    return ModelInfo(
        id=repo_id,
        author=_author(repo_id, raw),
        tags=tags,
        card_base_models=_strs(card.get("base_model"), 20),
        gated=_gated(raw.get("gated")),
        downloads=_int(raw.get("downloads")),
        license=license_,
        context_length=_int(gguf.get("context_length")) or None,
        params=_int(gguf.get("total")) or None,
    )


def _parse_listing(raw: object, what: str) -> list[RepoSummary]:
    if not isinstance(raw, list):
        raise HubError(_bad_answer(what, "it is not a JSON list"))
    out: list[RepoSummary] = []
    for item in raw:
        if not isinstance(item, dict):
            continue
        repo = _str(item.get("id")) or _str(item.get("modelId"))
        if repo is None or not is_repo_id(repo):
            continue  # a name we could not safely use in a URL or a message
        gated = item.get("gated")
        out.append(
            RepoSummary(
                id=repo,
                author=_author(repo, item),
                downloads=_int(item.get("downloads")),
                tags=_strs(item.get("tags")),
                gated=None if gated is None else _gated(gated),
            )
        )
    return out


def _parse_tree(raw: object, what: str) -> list[tuple[str, int]]:
    if not isinstance(raw, list):
        raise HubError(_bad_answer(what, "it is not a JSON list"))
    files: list[tuple[str, int]] = []
    for item in raw:
        if not isinstance(item, dict) or item.get("type") != "file":
            continue
        path = _str(item.get("path"))
        if path is None or hub.filename_problem(path) is not None:
            continue
        files.append((path, _int(item.get("size"))))
    return files


def quant_options(files: Sequence[tuple[str, int]]) -> list[QuantOption]:
    """The GGUF quantizations in a file list, split files joined, smallest first.

    Vision projectors (`mmproj-*.gguf`) are not models; names without a recognisable quant
    are listed under "?" so nothing downloadable is hidden.
    """
    sizes = dict(files)
    groups: dict[str, list[str]] = {}
    for path, _size in files:
        name = path.rsplit("/", 1)[-1]
        if not name.lower().endswith(".gguf") or "mmproj" in name.lower():
            continue
        first = split_parts(path)[0]
        groups.setdefault(first, []).append(path)
    options = [
        QuantOption(
            quant=guess_quant(first) or "?",
            files=tuple(sorted(parts)),
            size=sum(sizes.get(p, 0) for p in parts),
        )
        for first, parts in groups.items()
    ]
    return sorted(options, key=lambda o: (o.size, o.file))


# --- errors --------------------------------------------------------------------------------


def _bad_answer(what: str, problem: str) -> str:
    return (
        f"{user_text(hub.hub_endpoint())} did not answer like the Hugging Face Hub for {what}: "
        f"{problem}; check HF_ENDPOINT and any proxy"
    )


def _http_problem(status: int, code: str | None, what: str, repo: str | None) -> HubError:
    endpoint = user_text(hub.hub_endpoint())
    if code == "RepoNotFound" or (status == 404 and repo is not None):
        return HubNotFoundError(
            f"{repo or what} was not found on {endpoint}: check the spelling (org/name); "
            f"if it is private, {auth.LOGIN_HINT}"
        )
    if code == "GatedRepo" or status in (401, 403):
        return HubError(f"the Hub refused {what} ({status}): {auth.token_hint()}")
    if status == 429:
        return HubError(
            f"the Hub is limiting requests ({status} for {what}): wait a minute and try "
            "again; logged-in users get a higher limit (`hf auth login`)"
        )
    if status in (407,):
        return HubError(f"the proxy asks for credentials ({status}): put them in HTTPS_PROXY")
    if status in (502, 504):
        return HubError(
            f"a gateway between you and {endpoint} failed ({status} for {what}): "
            "check your proxy, or try again later"
        )
    if status >= 500:
        return HubError(
            f"the Hub answered {status} for {what}: try again later "
            "(see https://status.huggingface.co)"
        )
    return HubError(f"the Hub answered {status} for {what}; check HF_ENDPOINT and any proxy")


def _network_problem(exc: Exception, what: str) -> HubError:
    import httpx2

    endpoint = user_text(hub.hub_endpoint())
    detail = user_text(f"{type(exc).__name__}: {exc}", 100)
    if isinstance(exc, httpx2.ProxyError):
        return HubError(
            f"the proxy failed while asking {endpoint} for {what} ({detail}): check "
            "HTTPS_PROXY / HTTP_PROXY, or unset them if you need no proxy"
        )
    if isinstance(exc, httpx2.TimeoutException):
        return HubError(
            f"{endpoint} did not answer in time for {what} ({detail}): check your connection "
            "or proxy (HTTPS_PROXY), then try again"
        )
    if isinstance(exc, httpx2.TooManyRedirects):
        return HubError(f"too many redirects asking {endpoint} for {what}; check HF_ENDPOINT")
    if isinstance(exc, (httpx2.UnsupportedProtocol, httpx2.InvalidURL)):
        return HubError(
            f"{endpoint} sent us to an address we do not follow for {what} ({detail}); "
            "check HF_ENDPOINT"
        )
    proxy = _proxy_for(hub.hub_endpoint())
    if proxy is not None:
        return HubError(
            f"cannot reach {endpoint} for {what} through the proxy {user_text(proxy, 60)} "
            f"({detail}): check that proxy (HTTPS_PROXY / HTTP_PROXY), or list the Hub's host "
            "in NO_PROXY if it needs none"
        )
    return HubError(
        f"cannot reach {endpoint} for {what} ({detail}): you seem to be offline; connect, or "
        "set HTTPS_PROXY if you are behind a proxy, then try again"
    )


def _proxy_for(url: str) -> str | None:
    """The proxy the environment names for `url` (as httpx reads it), without credentials."""
    try:
        parts = urllib.parse.urlsplit(url)
        proxies = urllib.request.getproxies_environment()
        proxy = proxies.get(parts.scheme) or proxies.get("all")
        # Undocumented but present on every CPython: NO_PROXY as urllib (and httpx) read it.
        bypass = getattr(urllib.request, "proxy_bypass_environment", None)
        if not proxy or (bypass is not None and bypass(parts.hostname or "", proxies)):
            return None
        shown = urllib.parse.urlsplit(proxy)
        return f"{shown.scheme}://{shown.hostname}" + (f":{shown.port}" if shown.port else "")
    except ValueError:
        return None


def _checked_endpoint() -> str:
    endpoint = hub.hub_endpoint()
    try:
        parts = urllib.parse.urlsplit(endpoint)
        ok = parts.scheme in ("http", "https") and bool(parts.hostname)
        _ = parts.port
    except ValueError:
        ok = False
    if not ok:
        raise HubError(
            f"HF_ENDPOINT is {user_text(endpoint)!r}, not an http(s) address like "
            f"{hub.DEFAULT_ENDPOINT}; fix or unset it"
        )
    return endpoint


# --- the client ------------------------------------------------------------------------------


def _headers() -> dict[str, str]:
    from localbvi import __version__

    headers = {"User-Agent": f"localbvi/{__version__}; hf_hub/compatible"}
    token = auth.hub_token()
    if token:
        headers["Authorization"] = f"Bearer {token}"
    return headers


class HubApi:
    """A short-lived client for the Hub's JSON API; use it as a context manager."""

    def __init__(self, *, timeout_s: float = READ_TIMEOUT_S) -> None:
        import httpx2

        if hub.is_offline():
            raise HubError(
                "this needs the Hugging Face Hub but offline mode is on (HF_HUB_OFFLINE=1 or "
                "--offline); go online and try again"
            )
        self.endpoint = _checked_endpoint()
        self._client = httpx2.Client(
            headers=_headers(),
            timeout=httpx2.Timeout(timeout_s, connect=min(CONNECT_TIMEOUT_S, timeout_s)),
            follow_redirects=True,  # the Hub redirects renamed repos; httpx drops the token
            max_redirects=hub.MAX_REDIRECTS,  # when a redirect leaves the host
            trust_env=True,
        )

    def __enter__(self) -> HubApi:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._client.close()

    # --- requests ----------------------------------------------------------------------------

    def _get_json(
        self,
        path: str,
        what: str,
        *,
        params: Mapping[str, str] | None = None,
        repo: str | None = None,
        url: str | None = None,
    ) -> tuple[Any, str | None]:
        """GET one JSON answer (at most MAX_JSON_BYTES) and the `rel="next"` link, if any."""
        import httpx2

        target = url or f"{self.endpoint}{path}"
        try:
            with self._client.stream("GET", target, params=params) as response:
                if response.status_code >= 400:
                    code = response.headers.get("X-Error-Code")
                    _read_capped(response, MAX_ERROR_BYTES, what, quiet=True)
                    raise _http_problem(response.status_code, code, what, repo)
                if response.status_code != 200:
                    raise HubError(_bad_answer(what, f"status {response.status_code}"))
                body = _read_capped(response, MAX_JSON_BYTES, what)
                next_url = response.links.get("next", {}).get("url")
        except httpx2.HTTPError as exc:
            raise _network_problem(exc, what) from exc
        except httpx2.InvalidURL as exc:
            raise _network_problem(exc, what) from exc
        try:
            data = json.loads(body)
        except (ValueError, RecursionError) as exc:
            raise HubError(_bad_answer(what, "the answer is not JSON")) from exc
        if next_url is not None and _netloc(next_url) != _netloc(self.endpoint):
            next_url = None  # pages come from the Hub itself, never from elsewhere
        return data, next_url

    def model_info(self, repo: str) -> ModelInfo:
        """Tags, card data, gated flag and download count of one model repo."""
        _check_repo(repo)
        data, _ = self._get_json(f"/api/models/{repo}", f"model info of {repo}", repo=repo)
        return _parse_info(repo, data)

    def list_models(
        self,
        *,
        search: str | None = None,
        filter: str | None = None,
        sort: str = "downloads",
        limit: int = 20,
    ) -> list[RepoSummary]:
        """`GET /api/models?search=…&filter=…&sort=…&limit=…`, most downloaded first."""
        # Like huggingface_hub's list_models: the Hub sorts descending by default.
        params = {"sort": sort, "limit": str(max(1, min(limit, MAX_LIMIT)))}
        if search:
            params["search"] = search
        if filter:
            params["filter"] = filter
        what = "a model search" if search else f"models tagged {user_text(str(filter))}"
        data, _ = self._get_json("/api/models", what, params=params)
        rows = _parse_listing(data, what)
        return sorted(rows, key=lambda r: -r.downloads)[: max(1, min(limit, MAX_LIMIT))]

    def tree(self, repo: str, revision: str = "main") -> list[tuple[str, int]]:
        """(path, size) of every file of `repo`, following at most MAX_PAGES pages."""
        _check_repo(repo)
        what = f"the file list of {repo}"
        files: list[tuple[str, int]] = []
        rev = urllib.parse.quote(revision, safe="")
        url: str | None = None
        for _page in range(MAX_PAGES):
            data, url = self._get_json(
                f"/api/models/{repo}/tree/{rev}",
                what,
                params=None if url else {"recursive": "true"},
                repo=repo,
                url=url,
            )
            files.extend(_parse_tree(data, what))
            if url is None:
                break
        return files


def _netloc(url: str) -> str:
    try:
        return urllib.parse.urlsplit(url).netloc.lower()
    except ValueError:
        return ""


def _check_repo(repo: str) -> None:
    if not is_repo_id(repo):
        raise HubError(f"'{user_text(repo)}' is not a Hub repository name (org/name)")


def _read_capped(response: httpx2.Response, cap: int, what: str, *, quiet: bool = False) -> bytes:
    declared = response.headers.get("Content-Length", "")
    if declared.isdigit() and int(declared) > cap and not quiet:
        size = f"{int(declared) / 1e6:,.1f} MB"
        raise HubError(_bad_answer(what, f"the answer is {size}, over the {cap >> 20} MB limit"))
    chunks: list[bytes] = []
    total = 0
    for chunk in response.iter_bytes():
        total += len(chunk)
        if total > cap:
            if quiet:
                break
            raise HubError(_bad_answer(what, f"the answer is over the {cap >> 20} MB limit"))
        chunks.append(chunk)
    return b"".join(chunks)


# --- search ----------------------------------------------------------------------------------


def search_gguf(text: str, *, limit: int = 10, n_ctx: int = 4096) -> list[SearchResult]:
    """GGUF repos matching `text`, most downloaded first, each with its quants and RAM fit."""
    from localbvi.store.library import available_memory, ram_fit

    with HubApi() as api:
        rows = api.list_models(search=text, filter="gguf", limit=limit)
        avail = available_memory()

        def details(row: RepoSummary) -> SearchResult:
            problems: list[str] = []
            gated = row.gated
            if gated is None:  # the listing did not say: ask the repo itself
                try:
                    gated = api.model_info(row.id).gated
                except HubError as exc:
                    problems.append(str(exc))
            options: list[QuantOption] = []
            try:
                options = quant_options(api.tree(row.id))
            except HubError as exc:
                problems.append(str(exc))
            fits = {o.file: ram_fit(o.size, n_ctx, available=avail) for o in options}
            return SearchResult(
                repo=row.id,
                downloads=row.downloads,
                gated=gated,
                quants=tuple(options),
                ram_fit=fits,
                problem="; ".join(problems) or None,
            )

        with ThreadPoolExecutor(max_workers=SEARCH_WORKERS) as pool:
            return list(pool.map(details, rows))


# --- the app's online check ------------------------------------------------------------------


def hub_reachable(timeout_s: float = REACHABLE_TIMEOUT_S) -> bool:
    """Whether the Hub (or `HF_ENDPOINT`) answers HTTP, through any configured proxy.

    A raw TCP connect says "online" behind a proxy that will refuse us and "offline" on a
    network where only the proxy is reachable; a real request through httpx (which reads
    `HTTPS_PROXY`/`NO_PROXY`) answers the question the app asks. Any answer below 500 counts:
    even a 404 proves the Hub is there.
    """
    import httpx2

    if hub.is_offline():
        return False
    try:
        endpoint = _checked_endpoint()
    except HubError:
        return False
    try:
        with httpx2.Client(
            headers=_headers(),
            timeout=httpx2.Timeout(timeout_s),
            follow_redirects=False,
            trust_env=True,
        ) as client:
            response = client.head(f"{endpoint}/api/models", params={"limit": "1"})
    except (httpx2.HTTPError, httpx2.InvalidURL, ValueError):
        return False
    return response.status_code < 500
