"""Open a model by reference: the CLI's and the lab's entry into the model host.

A reference is a path, a catalog id[:QUANT], a Hub repo or file (resolved and, unless offline,
downloaded by the store), another tool's model, a `[[remote]]` of the settings file, or the
base URL of an OpenAI-compatible server (`http://…[#MODEL]`). `engine/host.py` does the work.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

from localbvi.engine.base import Engine
from localbvi.engine.host import ModelHost, OpenedModel, is_remote_ref, model_kind
from localbvi.engine.types import LoadConfig

if TYPE_CHECKING:
    from localbvi.store.hub import Progress

__all__ = ["OpenedModel", "is_remote_ref", "model_kind", "open_model"]


def open_model(
    ref: str,
    config: LoadConfig | None = None,
    *,
    engine: Engine | None = None,
    on_progress: Callable[[Progress], None] | None = None,
    cancel: threading.Event | None = None,
) -> OpenedModel:
    """Resolve `ref` (downloading it if needed) and load it into `engine` (a new one if None)."""
    return ModelHost(engine).open(ref, config, on_progress=on_progress, cancel=cancel)
