"""Plain values the app keeps: the settings form, sampling presets, and model choices.

The app's settings are the domain `localbvi.settings.Settings` (one source of truth, read from
and written to the settings file). `AppSettings` is the flat form the settings screen edits;
`AppSettings.from_settings` and `AppSettings.apply_to` map it onto `Settings`.
Nothing here imports Textual.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

from localbvi.engine.types import (
    ExtraBuffers,
    GpuLayers,
    Kind,
    LoadConfig,
    LoadInfo,
    Mode,
    Sampling,
)
from localbvi.settings import EngineSettings, SamplingSettings, Settings

__all__ = [
    "PRESETS",
    "AppSettings",
    "ModelChoice",
    "apply_preset",
    "default_mode",
    "kind_of",
    "load_config",
    "preset_of",
]

# The form starts from the settings file's defaults, so the two never drift apart.
_SAMPLING = SamplingSettings()
_ENGINE = EngineSettings()


@dataclass(frozen=True)
class AppSettings:
    """The settings form: sampling applies at once, loading on next load.

    Defaults are the settings file's defaults (`SamplingSettings`, `EngineSettings`).
    """

    preset: str = "balanced"
    """The preset the sampling fields came from ("custom" once a field is edited)."""
    temperature: float = _SAMPLING.temperature
    """Randomness; 0 always picks the most likely token."""
    top_p: float = _SAMPLING.top_p
    """Sample from the smallest set of tokens whose probabilities add up to this."""
    top_k: int = _SAMPLING.top_k
    """Sample from at most this many most-likely tokens (0: no limit)."""
    min_p: float = _SAMPLING.min_p
    """Drop tokens less likely than this fraction of the most likely one."""
    repeat_penalty: float = _SAMPLING.repeat_penalty
    """Above 1 discourages repeating recent tokens."""
    max_tokens: int = _SAMPLING.max_tokens
    """Longest reply or continuation, in tokens."""
    seed: int | None = None
    """Fixed seed for repeatable sampling; None draws a new one per request."""
    n_ctx: int = _ENGINE.n_ctx
    """Context window in tokens (prompt + reply). Applied on next load."""
    n_threads: int | None = None
    """CPU threads; None lets localbvi pick. Applied on next load."""
    n_gpu_layers: GpuLayers = _ENGINE.n_gpu_layers
    """Layers offloaded to the GPU ("auto": all where supported). Applied on next load."""
    cpu_extra_buffers: ExtraBuffers = _ENGINE.cpu_extra_buffers
    """llama.cpp's CPU extra buffers ("auto": off where they crash). Applied on next load."""
    system_prompt: str = ""
    """The system message of new chats (empty: none)."""

    @classmethod
    def from_settings(cls, settings: Settings, system_prompt: str = "") -> AppSettings:
        """The form's values for `settings` (the file's), plus the session's system prompt."""
        s, e = settings.sampling, settings.engine
        form = cls(
            temperature=s.temperature,
            top_p=s.top_p,
            top_k=s.top_k,
            min_p=s.min_p,
            repeat_penalty=s.repeat_penalty,
            max_tokens=s.max_tokens,
            seed=s.seed,
            n_ctx=e.n_ctx,
            n_threads=e.n_threads,
            n_gpu_layers=e.n_gpu_layers,
            cpu_extra_buffers=e.cpu_extra_buffers,
            system_prompt=system_prompt,
        )
        return replace(form, preset=preset_of(form))

    def apply_to(self, settings: Settings) -> Settings:
        """`settings` with this form's sampling and engine values (everything else kept)."""
        return replace(
            settings,
            sampling=replace(
                settings.sampling,
                temperature=self.temperature,
                top_p=self.top_p,
                top_k=self.top_k,
                min_p=self.min_p,
                repeat_penalty=self.repeat_penalty,
                max_tokens=self.max_tokens,
                seed=self.seed,
            ),
            engine=replace(
                settings.engine,
                n_ctx=self.n_ctx,
                n_threads=self.n_threads,
                n_gpu_layers=self.n_gpu_layers,
                cpu_extra_buffers=self.cpu_extra_buffers,
            ),
        )

    def sampling(self) -> Sampling:
        """The sampling request for one generation."""
        return Sampling(
            temperature=self.temperature,
            top_p=self.top_p,
            top_k=self.top_k,
            min_p=self.min_p,
            repeat_penalty=self.repeat_penalty,
            max_tokens=self.max_tokens,
            seed=self.seed,
        )

    def load_config(self, chat_template: str | None = None) -> LoadConfig:
        """How the next model loads."""
        return LoadConfig(
            n_ctx=self.n_ctx,
            n_threads=self.n_threads,
            n_gpu_layers=self.n_gpu_layers,
            chat_template=chat_template,
            cpu_extra_buffers=self.cpu_extra_buffers,
        )

    def load_fields_differ(self, other: AppSettings) -> bool:
        """True when `other` changes something that only takes effect on the next load."""
        return (self.n_ctx, self.n_threads, self.n_gpu_layers, self.cpu_extra_buffers) != (
            other.n_ctx,
            other.n_threads,
            other.n_gpu_layers,
            other.cpu_extra_buffers,
        )


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

SAMPLING_FIELDS = ("temperature", "top_p", "top_k", "min_p", "repeat_penalty")


def preset_of(settings: AppSettings) -> str:
    """The preset whose sampling values `settings` has, else "custom"."""
    return next(
        (
            name
            for name, values in PRESETS.items()
            if all(getattr(settings, k) == v for k, v in values.items())
        ),
        "custom",
    )


def load_config(settings: Settings, chat_template: str | None = None) -> LoadConfig:
    """How the next model loads, from the settings and the catalog's template override."""
    return replace(settings.to_load_config(), chat_template=chat_template)


def apply_preset(settings: AppSettings, name: str) -> AppSettings:
    """`settings` with the sampling fields of preset `name`."""
    values = PRESETS[name]
    known = {f.name for f in fields(AppSettings)}
    return replace(settings, preset=name, **{k: v for k, v in values.items() if k in known})  # type: ignore[arg-type]


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


def kind_of(catalog_kind: Kind | None, info: LoadInfo | None) -> Kind:
    """The catalog's word wins; otherwise a model with a chat template is "instruct"."""
    if catalog_kind is not None:
        return catalog_kind
    return "instruct" if info is not None and info.chat_template else "base"


def default_mode(kind: Kind) -> Mode:
    """Instruct models answer in chat; base models continue a document."""
    return "chat" if kind == "instruct" else "completion"
