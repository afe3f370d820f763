"""The project's own exception types.

Every error a user can cause (a bad file, a broken catalog, a failed download, a prompt that
does not fit) is one of these, with a message written for that user: what is wrong and what to
do. The CLI and the TUI show `str(error)` and never a traceback.
"""

from __future__ import annotations

import re

__all__ = [
    "CatalogError",
    "ContextOverflowError",
    "DownloadError",
    "EngineCrashedError",
    "EngineError",
    "GGUFError",
    "HubError",
    "LocalbviError",
    "ModelLoadError",
    "OfflineError",
    "RefError",
    "SessionStoreError",
    "SettingsError",
    "TemplateError",
    "UsageError",
    "printable",
    "shorten",
]

# CSI/OSC/other escape sequences and C0/C1 control characters, except newline and tab.
_CONTROL = re.compile(
    r"\x1b\[[0-?]*[ -/]*[@-~]"  # CSI … final byte
    r"|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?"  # OSC … BEL or ST
    r"|\x1b[PX^_][^\x1b]*(?:\x1b\\)?"  # DCS, SOS, PM, APC … ST
    r"|\x1b[@-Z\\-_]?"  # other two-byte escapes (or a lone ESC)
    r"|[\x00-\x08\x0b-\x1f\x7f-\x9f]"
)


def printable(text: str) -> str:
    """`text` without terminal control sequences (newlines and tabs kept).

    Text from a file or a server (a model name, a token, an error body) could otherwise move
    the cursor, retitle the window or hide what comes next on the user's terminal.
    """
    return _CONTROL.sub("", text)


def shorten(text: str, limit: int = 120) -> str:
    """`text` cut to `limit` characters with "…", for echoing untrusted input in a message."""
    return text if len(text) <= limit else text[: max(0, limit - 1)] + "…"


class LocalbviError(Exception):
    """Base of every error localbvi reports to a user."""


class UsageError(LocalbviError):
    """The command line asks for something impossible (the CLI exits with code 2)."""


class CatalogError(LocalbviError):
    """`models.toml` (bundled or the user's) is malformed or inconsistent."""


class GGUFError(LocalbviError):
    """A file is not a readable GGUF model (bad magic, truncated, absurd sizes)."""


class RefError(LocalbviError):
    """A model reference (path, catalog id, Hub repo or file) cannot be resolved."""


class EngineError(LocalbviError):
    """The inference engine refused or failed a request."""


class ModelLoadError(EngineError):
    """A model could not be loaded; the previous state of the engine is unchanged."""


class EngineCrashedError(EngineError):
    """The llama.cpp child process died (abort, segfault, OOM kill).

    `log_tail` holds the last lines llama.cpp printed, which usually say why.
    """

    def __init__(self, message: str, log_tail: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.log_tail = log_tail


class TemplateError(EngineError):
    """Chat mode is impossible: the model has no chat template, or it failed to render."""


class ContextOverflowError(EngineError):
    """A prompt is longer than the context window."""

    def __init__(self, prompt_tokens: int, n_ctx: int, max_tokens: int = 0) -> None:
        self.prompt_tokens = prompt_tokens
        self.n_ctx = n_ctx
        self.max_tokens = max_tokens
        super().__init__(
            f"the prompt is {prompt_tokens} tokens but the context holds {n_ctx}: "
            "shorten the prompt or load the model with a larger context (--ctx)"
        )


class DownloadError(LocalbviError):
    """A download failed; nothing that looks like a model was left behind."""


class OfflineError(DownloadError):
    """A model is not on disk and the network is off or unreachable."""


class HubError(LocalbviError):
    """The Hub's metadata API (search, model info, file lists) failed or answered nonsense."""


class SettingsError(LocalbviError):
    """The settings file is malformed."""


class SessionStoreError(LocalbviError):
    """The sessions database cannot be read or written."""
