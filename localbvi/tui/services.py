"""What the app asks of the domain layer (catalog, store, downloads), behind one small interface.

The app only talks to `Services`, which adapts the real catalog and store modules, imported
lazily so the first screen never waits on huggingface_hub. Tests and benchmarks use
`StaticServices`, its subclass over a fixed list of models.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from localbvi.errors import DownloadError, LocalbviError, RefError
from localbvi.settings import RemoteServer
from localbvi.tui.state import ModelChoice

if TYPE_CHECKING:
    from localbvi.catalog import CatalogEntry
    from localbvi.store.hub import Progress
    from localbvi.store.refs import ResolvedModel

__all__ = [
    "ProgressCallback",
    "Services",
    "StaticServices",
    "all_models",
    "remote_choices",
    "search_hub",
]

ProgressCallback = Callable[["Progress"], None]


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


class Services:
    """The domain calls the app makes, over the real catalog and store modules (imported on
    first use). All may block: call them from thread workers."""

    def __init__(self) -> None:
        # The store's modules import one another: two worker threads importing them at once
        # (the online check and a model load) found the package half-built ("KeyError:
        # 'localbvi.store'"), so it is imported here, in the app's thread (~70 ms, no
        # huggingface_hub).
        import localbvi.store.hubapi  # noqa: F401

    def catalog_pairs(self, n_ctx: int) -> list[tuple[ModelChoice, ModelChoice]]:
        """(base, instruct) pairs of the catalog, with download state and RAM fit."""
        from localbvi.catalog import load_catalog

        return [
            (_from_entry(base, n_ctx), _from_entry(instruct, n_ctx))
            for base, instruct in load_catalog().pairs()
        ]

    def local_models(self, n_ctx: int) -> list[ModelChoice]:
        """Models on disk (HF cache, demo model, imported files, other tools' models)."""
        from localbvi.store import library

        return [
            ModelChoice(
                ref=model.ref,
                display_name=model.display_name,
                kind=model.entry.kind if model.entry else None,
                quant=model.quant or "",
                size=model.size,
                path=str(model.path),
                ram_fit=_ram_fit(model.size, n_ctx),
                gated=model.entry.gated if model.entry else False,
                source=model.source,
                chat_template=model.entry.chat_template if model.entry else None,
            )
            for model in library.list_local()
        ]

    def resolve(
        self,
        ref: str,
        *,
        download: bool,
        on_progress: ProgressCallback | None,
        cancel: threading.Event | None,
    ) -> ResolvedModel:
        """A local file for `ref`, downloading it when allowed (the store's `resolve`, which
        the model host calls). Raises LocalbviError."""
        from localbvi.store.refs import resolve

        return resolve(ref, download=download, on_progress=on_progress, cancel=cancel)

    def is_online(self) -> bool:
        """Whether the model Hub can be reached (False when offline mode is on)."""
        # Through any proxy set in the environment: a raw TCP connect misjudges networks
        # where only a proxy gets out.
        from localbvi.store.hubapi import hub_reachable

        return hub_reachable()


def _from_entry(entry: CatalogEntry, n_ctx: int) -> ModelChoice:
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


def _ram_fit(size: int, n_ctx: int) -> str:
    from localbvi.store import library

    try:
        return str(library.ram_fit(size, n_ctx))
    except LocalbviError:
        return ""


def _resolved(path: str, ref: str, name: str, choice: ModelChoice | None) -> ResolvedModel:
    from localbvi.store.refs import ResolvedModel

    kind = choice.kind if choice else None
    quant = choice.quant if choice and choice.quant else None
    return ResolvedModel(Path(path), ref, name, None, quant, kind)


class StaticServices(Services):
    """`Services` over fixed lists, with simulated downloads, for tests and benchmarks (it
    overrides every call, so nothing reaches the real store or the network).

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
        self,
        ref: str,
        *,
        download: bool,
        on_progress: ProgressCallback | None,
        cancel: threading.Event | None,
    ) -> ResolvedModel:
        from localbvi.store.hub import Progress

        self.resolved.append(ref)
        models = [m for pair in self.pairs for m in pair] + self.local
        known = {m.ref: m for m in models} | {m.path: m for m in models if m.path}
        choice = known.get(ref)
        if choice is not None and choice.path:
            return _resolved(choice.path, ref, choice.display_name, choice)
        if ref in self.downloads:
            if not download or not self.online:
                raise DownloadError(f"{ref} is not on disk and localbvi is offline")
            total = choice.size if choice and choice.size else 100_000_000
            for step in range(1, self.steps + 1):
                if cancel is not None and cancel.is_set():
                    raise DownloadError(f"download of {ref} cancelled")
                time.sleep(self.download_s / self.steps)
                if on_progress is not None:
                    on_progress(Progress(ref, total * step // self.steps, total, 5e7, 1.0))
            path = self.downloads[ref]
            self.local.append(
                replace(choice, path=path)
                if choice
                else ModelChoice(ref=ref, display_name=ref, kind=None, path=path, source="file")
            )
            name = choice.display_name if choice else Path(path).name
            return _resolved(path, ref, name, choice)
        file = Path(ref).expanduser()
        if not file.is_file():
            raise RefError(f"no model file at {ref}: give the path of a .gguf file")
        return _resolved(str(file), ref, file.name, None)

    def is_online(self) -> bool:
        return self.online
