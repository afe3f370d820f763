"""The model store: references, downloads into the shared HF cache, and what is on disk.

Domain code only (no Textual): the CLI and the TUI both call these functions.
"""

from __future__ import annotations

from localbvi.store.hub import DownloadCancelledError, Progress, download
from localbvi.store.library import LocalModel, import_model, list_local, ram_fit, remove
from localbvi.store.refs import ParsedRef, ResolvedModel, parse_ref, resolve

__all__ = [
    "DownloadCancelledError",
    "LocalModel",
    "ParsedRef",
    "Progress",
    "ResolvedModel",
    "download",
    "import_model",
    "list_local",
    "parse_ref",
    "ram_fit",
    "remove",
    "resolve",
]
