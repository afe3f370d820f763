"""What the app asks of the domain layer (catalog, store, downloads), behind one small interface.

The app only talks to `Services`; `StoreServices` adapts the real catalog and store modules,
imported lazily so the first screen never waits on huggingface_hub. Tests and benchmarks use
`StaticServices` with a fixed list of models.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol

from localbvi.engine.types import KINDS, Kind
from localbvi.errors import DownloadError, LocalbviError, RefError
from localbvi.settings import RemoteServer
from localbvi.tui.state import ModelChoice

__all__ = [
    "Resolved",
    "Services",
    "StaticServices",
    "StoreServices",
    "TransferProgress",
    "all_models",
    "format_size",
    "remote_choices",
    "search_hub",
]


@dataclass(frozen=True)
class TransferProgress:
    """How far a download is (bytes), as the store reports it."""

    file: str
    done: int
    total: int
    speed_bps: float = 0.0
    eta_s: float | None = None


@dataclass(frozen=True)
class Resolved:
    """A reference made concrete: a local file and what the catalog knows about it."""

    path: str
    display_name: str
    kind: Kind | None
    chat_template: str | None = None


ProgressCallback = Callable[[TransferProgress], None]


class Services(Protocol):
    """The domain calls the app makes. All may block: call them from thread workers."""

    def catalog_pairs(self, n_ctx: int) -> list[tuple[ModelChoice, ModelChoice]]:
        """(base, instruct) pairs of the catalog, with download state and RAM fit."""
        ...

    def local_models(self, n_ctx: int) -> list[ModelChoice]:
        """Models on disk (HF cache, demo model, imported files)."""
        ...

    def resolve(
        self, ref: str, *, download: bool, on_progress: ProgressCallback, cancel: threading.Event
    ) -> Resolved:
        """A local file for `ref`, downloading it when allowed. Raises LocalbviError."""
        ...

    def is_online(self) -> bool:
        """Whether the model Hub can be reached (False when offline mode is on)."""
        ...


def format_size(n_bytes: int) -> str:
    """Bytes in the unit people read ("253 MB", "4.1 GB")."""
    if n_bytes <= 0:
        return "?"
    size = float(n_bytes)
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:.0f} {unit}" if unit in ("B", "KB", "MB") else f"{size:.1f} {unit}"
        size /= 1000
    return f"{size:.1f} TB"  # pragma: no cover


def remote_choices(servers: Sequence[RemoteServer]) -> list[ModelChoice]:
    """The settings file's `[[remote]]` models as picker rows (loaded by name)."""
    return [
        ModelChoice(
            ref=server.name,
            display_name=server.name,
            kind=server.kind,
            quant=server.model or "",
            source="remote",
        )
        for server in servers
    ]


def all_models(
    services: Services, n_ctx: int, remote: Sequence[RemoteServer] = ()
) -> list[ModelChoice]:
    """Catalog, on-disk and remote models in one list, a downloaded catalog entry once."""
    local = services.local_models(n_ctx)
    by_ref = {m.ref: m for m in local}
    out: list[ModelChoice] = []
    seen_paths: set[str] = set()
    for base, instruct in services.catalog_pairs(n_ctx):
        for choice in (base, instruct):
            found = by_ref.get(choice.ref)
            if found is not None and found.path:
                choice = replace(choice, path=found.path)
            if choice.path:
                seen_paths.add(choice.path)
            out.append(choice)
    out.extend(m for m in local if m.path not in seen_paths)
    out.extend(remote_choices(remote))
    return out


def search_hub(text: str, n_ctx: int, limit: int = 20) -> tuple[list[ModelChoice], int]:
    """GGUF files on the Hub matching `text` as picker rows (one per quantization), and the
    number of repositories found. Blocks on the network: call it from a thread worker."""
    from localbvi.store.hubapi import search_gguf

    results = search_gguf(text, limit=limit, n_ctx=n_ctx)
    rows = [
        ModelChoice(
            ref=result.ref(option),
            display_name=result.repo,
            kind=None,
            quant=option.quant,
            size=option.size,
            ram_fit=result.ram_fit.get(option.file, ""),
            gated=bool(result.gated),
            source="hub",
        )
        for result in results
        for option in result.quants
    ]
    return rows, len(results)


def hub_reachable(timeout_s: float = 2.0) -> bool:
    """Whether the Hub (or `HF_ENDPOINT`) answers an HTTP request, through any proxy set in
    the environment (a raw TCP connect misjudges networks where only a proxy gets out)."""
    from localbvi.store.hubapi import hub_reachable as ask_hub

    return ask_hub(timeout_s)


class StoreServices:
    """`Services` over the real catalog and store modules (imported on first use)."""

    def catalog_pairs(self, n_ctx: int) -> list[tuple[ModelChoice, ModelChoice]]:
        try:
            from localbvi.catalog import load_catalog
        except ImportError:
            return []
        catalog = load_catalog()
        pairs: list[tuple[ModelChoice, ModelChoice]] = []
        for base, instruct in catalog.pairs():
            pairs.append((self._from_entry(base, n_ctx), self._from_entry(instruct, n_ctx)))
        return pairs

    def _from_entry(self, entry: Any, n_ctx: int) -> ModelChoice:
        quant_file = entry.file_for(None)
        return ModelChoice(
            ref=f"{entry.id}:{quant_file.quant}",
            display_name=entry.name,
            kind=entry.kind,
            quant=quant_file.quant,
            size=quant_file.size,
            ram_fit=_ram_fit(quant_file.size, n_ctx),
            gated=entry.gated,
            source="catalog",
            chat_template=entry.chat_template,
        )

    def local_models(self, n_ctx: int) -> list[ModelChoice]:
        try:
            from localbvi.store import library
        except ImportError:
            return []
        out: list[ModelChoice] = []
        for model in library.list_local():
            entry = getattr(model, "entry", None)
            out.append(
                ModelChoice(
                    ref=str(model.ref),
                    display_name=str(model.display_name),
                    kind=getattr(entry, "kind", None),
                    quant=str(model.quant or ""),
                    size=int(model.size or 0),
                    path=str(model.path),
                    ram_fit=_ram_fit(int(model.size or 0), n_ctx),
                    gated=bool(getattr(entry, "gated", False)),
                    source=str(model.source),
                    chat_template=getattr(entry, "chat_template", None),
                )
            )
        return out

    def resolve(
        self, ref: str, *, download: bool, on_progress: ProgressCallback, cancel: threading.Event
    ) -> Resolved:
        try:
            from localbvi.store import refs
        except ImportError:
            return _resolve_path(ref)

        def progress(p: Any) -> None:
            on_progress(
                TransferProgress(
                    file=str(p.file),
                    done=int(p.done),
                    total=int(p.total or 0),
                    speed_bps=float(p.speed_bps or 0.0),
                    eta_s=p.eta_s,
                )
            )

        resolved = refs.resolve(ref, download=download, on_progress=progress, cancel=cancel)
        entry = getattr(resolved, "entry", None)
        kind = getattr(resolved, "kind", None) or getattr(entry, "kind", None)
        return Resolved(
            path=str(resolved.path),
            display_name=str(resolved.display_name),
            kind=kind if kind in KINDS else None,
            chat_template=getattr(entry, "chat_template", None),
        )

    def is_online(self) -> bool:
        return hub_reachable()


def _ram_fit(size: int, n_ctx: int) -> str:
    try:
        from localbvi.store import library
    except ImportError:
        return ""
    try:
        return str(library.ram_fit(size, n_ctx))
    except LocalbviError:
        return ""


def _resolve_path(ref: str) -> Resolved:
    path = Path(ref).expanduser()
    if not path.is_file():
        raise RefError(f"no model file at {ref}: give the path of a .gguf file")
    return Resolved(path=str(path), display_name=path.name, kind=None)


class StaticServices:
    """`Services` over fixed lists, with simulated downloads, for tests and benchmarks.

    `downloads` maps a ref to the file its download produces; a download takes
    `download_s` seconds in `steps` progress updates and honours `cancel`.
    """

    def __init__(
        self,
        *,
        pairs: Sequence[tuple[ModelChoice, ModelChoice]] = (),
        local: Sequence[ModelChoice] = (),
        downloads: dict[str, str] | None = None,
        online: bool = True,
        download_s: float = 0.2,
        steps: int = 10,
    ) -> None:
        self.pairs = list(pairs)
        self.local = list(local)
        self.downloads = dict(downloads or {})
        self.online = online
        self.download_s = download_s
        self.steps = steps
        self.resolved: list[str] = []

    def catalog_pairs(self, n_ctx: int) -> list[tuple[ModelChoice, ModelChoice]]:
        return list(self.pairs)

    def local_models(self, n_ctx: int) -> list[ModelChoice]:
        return list(self.local)

    def resolve(
        self, ref: str, *, download: bool, on_progress: ProgressCallback, cancel: threading.Event
    ) -> Resolved:
        self.resolved.append(ref)
        models = [m for pair in self.pairs for m in pair] + self.local
        known = {m.ref: m for m in models} | {m.path: m for m in models if m.path}
        choice = known.get(ref)
        if choice is not None and choice.path:
            return Resolved(choice.path, choice.display_name, choice.kind, choice.chat_template)
        if ref in self.downloads:
            if not download or not self.online:
                raise DownloadError(f"{ref} is not on disk and localbvi is offline")
            total = choice.size if choice and choice.size else 100_000_000
            for step in range(1, self.steps + 1):
                if cancel.is_set():
                    raise DownloadError(f"download of {ref} cancelled")
                time.sleep(self.download_s / self.steps)
                on_progress(TransferProgress(ref, total * step // self.steps, total, 5e7, 1.0))
            path = self.downloads[ref]
            self.local.append(
                replace(choice, path=path)
                if choice
                else ModelChoice(ref=ref, display_name=ref, kind=None, path=path, source="file")
            )
            name = choice.display_name if choice else Path(path).name
            return Resolved(path, name, choice.kind if choice else None)
        return _resolve_path(ref)

    def is_online(self) -> bool:
        return self.online
