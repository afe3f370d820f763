"""The Hugging Face token, found exactly where huggingface_hub finds it, read at call time.

Order (huggingface_hub's `get_token`): the `HF_TOKEN` variable (or the older
`HUGGING_FACE_HUB_TOKEN`), then the file named by `HF_TOKEN_PATH`, then `HF_HOME/token` — the
file `hf auth login` writes (`HF_HOME` defaults to `$XDG_CACHE_HOME/huggingface`, else
`~/.cache/huggingface`). huggingface_hub reads those paths once, at import; reading them per
call lets tests and `--offline`-style flags change the environment and be obeyed.

Every Hub request localbvi makes (metadata, search, downloads) takes its token from here, and
every message that asks for a token names both ways to give one (`hf auth login`, `HF_TOKEN`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

__all__ = ["LOGIN_HINT", "HubToken", "find_token", "hub_token", "token_file", "token_hint"]

LOGIN_HINT = (
    "log in with `hf auth login` (or set HF_TOKEN) using a read token from "
    "https://huggingface.co/settings/tokens"
)
"""How to give localbvi a token, for the end of a message."""

_MAX_TOKEN_FILE_BYTES = 4096
"""A token is ~40 characters; a bigger 'token file' is not one (and is not read whole)."""


@dataclass(frozen=True)
class HubToken:
    """A token and where it came from (for messages: never the token itself)."""

    value: str
    source: str
    """"HF_TOKEN", "HUGGING_FACE_HUB_TOKEN" or the path of the token file."""


def _clean(text: str | None) -> str | None:
    """huggingface_hub's `_clean_token`: no newlines, no surrounding spaces, empty is none."""
    if text is None:
        return None
    return text.replace("\r", "").replace("\n", "").strip() or None


def _hf_home() -> Path:
    home = os.environ.get("HF_HOME")
    if home:
        return Path(os.path.expandvars(home)).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join("~", ".cache")
    return Path(os.path.expandvars(xdg)).expanduser() / "huggingface"


def token_file() -> Path:
    """Where `hf auth login` keeps the token: `HF_TOKEN_PATH`, else `HF_HOME/token`."""
    explicit = os.environ.get("HF_TOKEN_PATH")
    if explicit:
        return Path(os.path.expandvars(explicit)).expanduser()
    return _hf_home() / "token"


def find_token() -> HubToken | None:
    """The token huggingface_hub would use, with its source, or None when logged out."""
    for variable in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN"):
        value = _clean(os.environ.get(variable))
        if value:
            return HubToken(value, variable)
    path = token_file()
    try:
        with path.open("rb") as f:
            raw = f.read(_MAX_TOKEN_FILE_BYTES + 1)
    except OSError:  # missing (logged out), a folder, unreadable: huggingface_hub gives up too
        return None
    if len(raw) > _MAX_TOKEN_FILE_BYTES:
        return None
    value = _clean(raw.decode("utf-8", errors="replace"))
    return HubToken(value, str(path)) if value else None


def hub_token() -> str | None:
    """The token to send to the Hub, or None."""
    found = find_token()
    return found.value if found else None


def token_hint() -> str:
    """What to do about a refusal, depending on whether a token was sent and from where."""
    found = find_token()
    if found is None:
        return f"no token was sent: {LOGIN_HINT}"
    where = (
        found.source
        if found.source in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN")
        else f"the token file {found.source}"
    )
    return (
        f"the token from {where} was sent but has no access: check it is a read token of the "
        "account that accepted the licence, or log in again with `hf auth login`"
    )
