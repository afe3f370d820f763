"""The model host: the one way from a model reference to a loaded engine (CLI, app and lab).

`ModelHost.open(REF)` looks the reference up (a `[[remote]]` of the settings file, a server URL,
or anything the store resolves: a catalog id[:QUANT], a Hub repo or file, a path, another
tool's model), downloads it with progress and cancel, refuses a broken file before anything is
unloaded, and loads it into the local engine or a RemoteEngine, swapping between the two. A
failed load leaves the previous model loaded (reloaded if the engine lost it). Base vs instruct
is decided by one rule, `model_kind`, so the CLI and the app never disagree about a model.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from localbvi.engine.base import Engine
from localbvi.engine.types import Kind, LoadConfig, LoadInfo
from localbvi.errors import LocalbviError

if TYPE_CHECKING:
    from localbvi.settings import NetworkSettings, RemoteServer, Settings
    from localbvi.store.hub import Progress
    from localbvi.store.refs import ResolvedModel

__all__ = [
    "ModelHost",
    "OpenedModel",
    "Resolver",
    "display_name",
    "is_remote_ref",
    "model_kind",
    "open_model",
]


class Resolver(Protocol):
    """`localbvi.store.refs.resolve`, or a stand-in with its signature (tests, benchmarks)."""

    def __call__(
        self,
        ref: str,
        *,
        download: bool,
        on_progress: Callable[[Progress], None] | None,
        cancel: threading.Event | None,
    ) -> ResolvedModel: ...


@dataclass(frozen=True)
class OpenedModel:
    """A loaded engine with what we know about the model behind it."""

    engine: Engine
    info: LoadInfo
    ref: str
    display_name: str
    kind: Kind
    """By `model_kind`: the catalog or the `[[remote]]`'s word, else the model file's template."""
    resolved: ResolvedModel | None = None
    """The store's answer for local models (None for remote ones)."""
    config: LoadConfig = field(default_factory=LoadConfig)
    """What it was loaded with (a failed switch reloads it with the same)."""


def is_remote_ref(ref: str) -> bool:
    """Whether a model reference names a server (`http://…` or `https://…`)."""
    return ref.startswith(("http://", "https://"))


def model_kind(info: LoadInfo, known: Kind | None = None) -> Kind:
    """Base or instruct, by one rule for every way a model is opened.

    `known` (the catalog entry's kind, or a `[[remote]]`'s configured kind) wins. Otherwise a
    chat template that came with the model (in the GGUF, or announced by the server) means
    instruct. A template the catalog supplies is no evidence by itself: the catalog's kind
    already says what that model is.
    """
    if known is not None:
        return known
    return "instruct" if info.template_source == "gguf" else "base"


def display_name(resolved: ResolvedModel, info: LoadInfo) -> str:
    """The store's name for the model (catalog name and quantization, another tool's name),
    or the model's own name (GGUF `general.name`) where the store only knows the file name."""
    if resolved.display_name and resolved.display_name != resolved.path.name:
        return resolved.display_name
    return info.model_name or resolved.display_name or resolved.path.name


def open_model(
    ref: str,
    config: LoadConfig | None = None,
    *,
    engine: Engine | None = None,
    on_progress: Callable[[Progress], None] | None = None,
    cancel: threading.Event | None = None,
) -> OpenedModel:
    """The CLI's one call: resolve `ref` (downloading it if needed) and load it into `engine`
    (a new LocalEngine if None), the settings file giving remotes and default options."""
    return ModelHost(engine).open(ref, config, on_progress=on_progress, cancel=cancel)


def _store_resolve(
    ref: str,
    *,
    download: bool,
    on_progress: Callable[[Progress], None] | None,
    cancel: threading.Event | None,
) -> ResolvedModel:
    from localbvi.store.refs import resolve

    return resolve(ref, download=download, on_progress=on_progress, cancel=cancel)


def _check_gguf(path: Path) -> None:
    """Refuse a broken file before the engine drops the current model for it."""
    if path.is_file():
        from localbvi.inspector import inspect_gguf

        inspect_gguf(str(path))


class ModelHost:
    """Holds one model at a time: the local engine's, or a server's through a RemoteEngine.

    `engine` is the engine in use. `lock` is held while a model loads; callers that generate
    hold it too, so a load waits for a request to end (`open` cancels the request first).
    `settings` gives the `[[remote]]` servers, the network timeouts and the default load
    options; None reads the settings file at each `open`.
    """

    def __init__(
        self,
        local: Engine | None = None,
        *,
        settings: Settings | None = None,
        resolve: Resolver | None = None,
    ) -> None:
        self._local = local
        self._engine: Engine | None = local
        self.settings = settings
        self.resolve: Resolver = resolve or _store_resolve
        self.lock = threading.Lock()
        self.model: OpenedModel | None = None

    @property
    def local(self) -> Engine:
        """The llama.cpp engine (made on first use: a server-only run never starts one)."""
        if self._local is None:
            from localbvi.engine.local import LocalEngine

            self._local = LocalEngine()
        return self._local

    @property
    def engine(self) -> Engine:
        """The engine in use: the local one, or a RemoteEngine while a server is used."""
        if self._engine is None:
            self._engine = self.local
        return self._engine

    def open(
        self,
        ref: str,
        config: LoadConfig | None = None,
        *,
        download: bool = True,
        on_progress: Callable[[Progress], None] | None = None,
        cancel: threading.Event | None = None,
        on_resolved: Callable[[ResolvedModel], None] | None = None,
    ) -> OpenedModel:
        """Resolve `ref` (downloading it if allowed) and load it in place of the current model.

        `on_resolved` hears of the checked local file before the load starts (a download is
        done then, whatever the load does). Raises LocalbviError (or, for a bug, any
        exception) with the previous model still loaded where it could be kept;
        `engine.info` says whether it was.
        """
        settings = self._settings()
        config = config or settings.to_load_config()
        server = settings.find_remote(ref)
        if server is not None or is_remote_ref(ref):
            return self._open_remote(ref, server, config, settings.network)
        resolved = self.resolve(ref, download=download, on_progress=on_progress, cancel=cancel)
        _check_gguf(resolved.path)
        if on_resolved is not None:
            on_resolved(resolved)
        entry = resolved.entry
        if entry is not None and entry.chat_template and not config.chat_template:
            config = replace(config, chat_template=entry.chat_template)
        info = self._load_local(str(resolved.path), config)
        self.model = OpenedModel(
            engine=self.local,
            info=info,
            ref=ref,
            display_name=display_name(resolved, info),
            kind=model_kind(info, resolved.kind),
            resolved=resolved,
            config=config,
        )
        return self.model

    def close(self) -> None:
        """Stop any request and free every engine (the local model's process ends)."""
        if self._engine is not None:
            self._engine.cancel()
        for engine in {id(e): e for e in (self._engine, self._local) if e is not None}.values():
            with contextlib.suppress(LocalbviError):
                engine.close()
        self.model = None

    # -- internals ----------------------------------------------------------------------

    def _settings(self) -> Settings:
        if self.settings is not None:
            return self.settings
        from localbvi.settings import load_settings

        return load_settings().settings

    def _load_local(self, path: str, config: LoadConfig) -> LoadInfo:
        self.engine.cancel()  # a running reply ends within a token and frees the lock
        with self.lock:
            current, local = self.engine, self.local
            previous = self.model if current is local else None
            try:
                info = local.load(path, config)
            except BaseException:
                if current is local:
                    self._restore(previous)
                if current.info is None:
                    self.model = None
                raise
            if current is not local:  # leaving a server: the local engine takes over
                with contextlib.suppress(LocalbviError):
                    current.close()
                self._engine = local
            return info

    def _restore(self, previous: OpenedModel | None) -> None:
        """After a failed load, make sure the previous model is usable again."""
        if self.local.info is not None or previous is None:
            return
        with contextlib.suppress(Exception):
            self.local.load(previous.info.path, previous.config)

    def _open_remote(
        self, ref: str, server: RemoteServer | None, config: LoadConfig, network: NetworkSettings
    ) -> OpenedModel:
        """Load a model served over HTTP; the current engine stays until it is ready."""
        from localbvi.engine.remote import RemoteEngine, parse_remote_ref

        target = server.ref if server else ref
        # An ad hoc server URL takes its key from LOCALBVI_API_KEY, never from the command line.
        api_key = (server.api_key() if server else None) or os.environ.get("LOCALBVI_API_KEY")
        base_url, model = parse_remote_ref(target)
        remote = RemoteEngine(base_url, model, api_key or None, network=network)
        try:
            info = remote.load(target, config)
        except BaseException:
            with contextlib.suppress(LocalbviError):
                remote.close()
            raise
        if self._engine is not None:
            self._engine.cancel()
        with self.lock:
            previous, self._engine = self._engine, remote
            if previous is not None:
                with contextlib.suppress(LocalbviError):
                    # A local engine ends its process here and loads again on the next local
                    # model.
                    previous.close()
        self.model = OpenedModel(
            engine=remote,
            info=info,
            ref=ref,
            display_name=(server.name if server else info.model_name) or ref,
            kind=model_kind(info, server.kind if server else None),
            config=config,
        )
        return self.model
