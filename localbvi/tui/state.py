"""Plain values the app keeps: the settings form, sampling presets, and model choices.

The app's settings are the domain `localbvi.settings.Settings` (one source of truth, read from
and written to the settings file). The settings form edits its `[sampling]`, `[engine]` and
`[network]` values, whose fields (`form_fields`) come from the one definition of each.
Nothing here imports Textual.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from localbvi.engine.types import Kind, Mode, Sampling
from localbvi.fieldspec import Spec, specs
from localbvi.settings import SECTIONS, Settings

__all__ = [
    "PRESETS",
    "AppSettings",
    "ModelChoice",
    "apply_preset",
    "default_mode",
    "form_fields",
    "preset_of",
]


def form_fields() -> list[tuple[str, Spec]]:
    """The settings form's fields: every key of the settings file's value tables."""
    tables = ("sampling", "engine", "network")  # the order a user thinks of them
    return [(table, s) for table in tables for s in specs(SECTIONS[table]) if s.setting]


@dataclass(frozen=True, init=False)
class AppSettings:
    """The settings form's value: the settings file's values and this run's system prompt."""

    settings: Settings
    system_prompt: str
    """The system message of new chats (empty: none; not kept in the settings file)."""

    def __init__(
        self, settings: Settings | None = None, system_prompt: str = "", **values: Any
    ) -> None:
        """`values` set form fields by name, e.g. `AppSettings(temperature=0.0, n_ctx=1024)`."""
        settings = settings or Settings()
        for table, field in form_fields():
            if field.name in values:
                section = replace(getattr(settings, table), **{field.name: values.pop(field.name)})
                settings = replace(settings, **{table: section})
        if values:
            raise TypeError(f"not a settings form field: {', '.join(values)}")
        object.__setattr__(self, "settings", settings)
        object.__setattr__(self, "system_prompt", system_prompt)

    @classmethod
    def from_settings(cls, settings: Settings, system_prompt: str = "") -> AppSettings:
        """The form's values for `settings` (the file's), plus the session's system prompt."""
        return cls(settings, system_prompt)

    @property
    def preset(self) -> str:
        """The preset whose values the sampling fields have, else "custom"."""
        return preset_of(self.settings.sampling)

    def value(self, name: str) -> Any:
        """The form field `name`'s value."""
        table = next(table for table, field in form_fields() if field.name == name)
        return getattr(getattr(self.settings, table), name)

    def apply_to(self, settings: Settings) -> Settings:
        """`settings` with this form's values (everything else kept)."""
        return replace(settings, **{table: getattr(self.settings, table) for table in SECTIONS})

    def load_fields_differ(self, other: AppSettings) -> bool:
        """True when `other` changes something that only takes effect on the next load."""
        return self.settings.engine != other.settings.engine


PRESETS: dict[str, dict[str, float | int]] = {
    "deterministic": {
        "temperature": 0.0,
        "top_p": 1.0,
        "top_k": 1,
        "min_p": 0.0,
        "repeat_penalty": 1.0,
    },
    "balanced": {
        "temperature": 0.8,
        "top_p": 0.95,
        "top_k": 40,
        "min_p": 0.05,
        "repeat_penalty": 1.0,
    },
    "creative": {
        "temperature": 1.1,
        "top_p": 0.98,
        "top_k": 100,
        "min_p": 0.02,
        "repeat_penalty": 1.05,
    },
}
"""Sampling presets; each names only sampling fields so the rest of the settings stay."""


def preset_of(sampling: Sampling) -> str:
    """The preset whose values `sampling` has, else "custom"."""
    return next(
        (
            name
            for name, values in PRESETS.items()
            if all(getattr(sampling, k) == v for k, v in values.items())
        ),
        "custom",
    )


def apply_preset(form: AppSettings, name: str) -> AppSettings:
    """`form` with the sampling fields of preset `name`."""
    return AppSettings(form.settings, form.system_prompt, **PRESETS[name])


@dataclass(frozen=True)
class ModelChoice:
    """One model the user can pick: from the catalog, on disk, or both."""

    ref: str
    """What `resolve` takes: a catalog id[:QUANT], a Hub ref or a file path."""
    display_name: str
    kind: Kind | None
    """From the catalog; None when unknown until the file is loaded."""
    quant: str = ""
    size: int = 0
    path: str | None = None
    """Local file when downloaded, else None."""
    ram_fit: str = ""
    """"fits", "tight" or "won't fit" for the current context size ("" when unknown)."""
    gated: bool = False
    source: str = "catalog"
    """Where it was found: "catalog", "hf-cache", "demo", "imported", "file"."""
    chat_template: str | None = None
    """The catalog's template override, passed to the engine on load."""

    @property
    def downloaded(self) -> bool:
        return self.path is not None

    @property
    def remote(self) -> bool:
        """Served by another machine (a `[[remote]]` of the settings file): never downloaded."""
        return self.source == "remote"


def default_mode(kind: Kind) -> Mode:
    """Instruct models answer in chat; base models continue a document."""
    return "chat" if kind == "instruct" else "completion"
