"""Open a model by reference: the one function the CLI, the TUI and the lab use to get an engine.

A reference is a path, a catalog id[:QUANT], a Hub repo or file (resolved and, unless offline,
downloaded by the store), or the base URL of an OpenAI-compatible server (`http://…[#MODEL]`).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from localbvi.engine.base import Engine
from localbvi.engine.types import KINDS, Kind, LoadConfig, LoadInfo

__all__ = ["Kind", "OpenedModel", "is_remote_ref", "model_kind", "open_model"]


@dataclass
class OpenedModel:
    """A loaded engine with what we know about the model behind it."""

    engine: Engine
    info: LoadInfo
    ref: str
    display_name: str
    kind: Kind
    """From the catalog when the model is in it, else from the presence of a chat template."""
    resolved: Any = None
    """The store's ResolvedModel for local models (None for remote ones)."""


def is_remote_ref(ref: str) -> bool:
    return ref.startswith(("http://", "https://"))


def model_kind(catalog_kind: str | None, info: LoadInfo) -> Kind:
    """Base or instruct: the catalog knows; otherwise a GGUF chat template means instruct."""
    if catalog_kind in KINDS:
        return catalog_kind
    if info.template_source == "gguf":
        return "instruct"
    return "base"


def _configured_remote(ref: str) -> Any:
    """The settings file's `[[remote]]` called `ref` (or with that URL), if any."""
    from localbvi.settings import load_settings

    for server in load_settings().settings.remote:
        if ref in (server.name, server.ref, server.base_url):
            return server
    return None


def open_model(
    ref: str,
    config: LoadConfig | None = None,
    *,
    engine: Engine | None = None,
    on_progress: Callable[[Any], None] | None = None,
    cancel: threading.Event | None = None,
) -> OpenedModel:
    """Resolve `ref` (downloading it if needed) and load it into `engine` (a new one if None)."""
    config = config or LoadConfig()
    remote_kind: Kind | None = None
    api_key: str | None = None
    server = _configured_remote(ref)
    target = ref
    if server is not None:  # a `[[remote]]` from the settings file, named by the user
        target, remote_kind, api_key = server.ref, server.kind, server.api_key()
    if is_remote_ref(target):
        # An ad hoc server URL takes its key from LOCALBVI_API_KEY, never from the command line.
        api_key = api_key or os.environ.get("LOCALBVI_API_KEY") or None
        from localbvi.engine.remote import RemoteEngine, parse_remote_ref
        from localbvi.settings import load_settings

        base_url, model = parse_remote_ref(target)
        network = load_settings().settings.network  # the timeouts
        remote = (
            engine
            if engine is not None
            else RemoteEngine(base_url, model, api_key, network=network)
        )
        info = remote.load(target, config)
        return OpenedModel(
            engine=remote,
            info=info,
            ref=ref,
            display_name=(server.name if server else info.model_name) or ref,
            kind=remote_kind or model_kind(None, info),
        )

    from localbvi.store.refs import resolve

    resolved = resolve(ref, on_progress=on_progress, cancel=cancel)
    entry = resolved.entry
    if entry is not None and entry.chat_template and not config.chat_template:
        config = replace(config, chat_template=entry.chat_template)
    if engine is None:
        from localbvi.engine.local import LocalEngine

        engine = LocalEngine()
    info = engine.load(str(resolved.path), config)
    return OpenedModel(
        engine=engine,
        info=info,
        ref=ref,
        display_name=resolved.display_name or info.model_name,
        kind=model_kind(resolved.kind, info),
        resolved=resolved,
    )
