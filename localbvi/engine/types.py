"""Plain values that cross the engine interface (and the pipe to the llama.cpp child).

Everything here is a frozen dataclass of builtins so it pickles cheaply and can be shown by
the CLI (`--json`) and the TUI alike.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from localbvi.fieldspec import spec

__all__ = [
    "KINDS",
    "MODES",
    "Alternative",
    "DoneEvent",
    "Event",
    "ExtraBuffers",
    "FinishReason",
    "GpuLayers",
    "Kind",
    "LoadConfig",
    "LoadInfo",
    "Message",
    "Mode",
    "Rendered",
    "Role",
    "Sampling",
    "ScoreProgress",
    "ScoreRequest",
    "Token",
    "TokenEvent",
    "TokenScore",
    "VocabInfo",
]

Kind = Literal["base", "instruct"]
"""What a model is: a base model continues text, an instruct model answers in its template."""
KINDS: tuple[Kind, ...] = ("base", "instruct")

Mode = Literal["chat", "completion"]
"""How the app talks to a model: the chat template, or raw text completion."""
MODES: tuple[Mode, ...] = ("chat", "completion")

Role = Literal["system", "user", "assistant"]
FinishReason = Literal["stop", "length", "cancelled", "error"]
GpuLayers = int | Literal["auto"]
ExtraBuffers = Literal["auto", "on", "off"]


@dataclass(frozen=True)
class Message:
    """One turn of a chat."""

    role: Role
    content: str


@dataclass(frozen=True)
class LoadConfig:
    """How to load a model (the settings file's `[engine]`). Changing any field needs a reload."""

    n_ctx: int = spec(
        4096,
        "Context window in tokens (prompt + reply). Larger costs memory.",
        lo=16,
        hi=1 << 22,
        label="Context size",
        flag="--ctx",
    )
    n_threads: int | None = spec(
        None,
        "CPU threads for decoding; leave it out to let localbvi pick (the physical cores).",
        lo=1,
        example=4,
        label="Threads",
        flag="--threads",
    )
    n_gpu_layers: GpuLayers = spec(
        "auto",
        'Layers to put on the GPU: "auto" offloads all where the build supports it, 0 for '
        "none, -1 for all.",
        lo=-1,
        label="GPU layers",
        flag="--gpu-layers",
    )
    cpu_extra_buffers: ExtraBuffers = spec(
        "auto",
        'llama.cpp\'s CPU extra buffers (AMX, weight repacking): "auto" turns them off where '
        'they crash llama.cpp on this CPU (found once, then remembered), "on" or "off" to force.',
        label="CPU extra buffers",
        flag="--cpu-extra-buffers",
    )
    seed: int = spec(
        -1,
        "Default sampling seed (-1: random). A `Sampling.seed` overrides it per request.",
        setting=False,
    )
    chat_template: str | None = spec(
        None,
        "A Jinja chat template that replaces the one in the GGUF (the catalog's override).",
        setting=False,
    )


@dataclass(frozen=True)
class Sampling:
    """Sampling parameters of one generation request (the settings file's `[sampling]`)."""

    temperature: float = spec(
        0.8,
        "Randomness: 0 always picks the most likely token (same prompt, same answer).",
        lo=0,
        hi=5,
        label="Temperature",
        flag="--temperature",
    )
    top_p: float = spec(
        0.95,
        "Sample only from the most likely tokens whose probabilities add up to this (0-1).",
        lo=0,
        hi=1,
        label="Top-p",
        flag="--top-p",
    )
    top_k: int = spec(
        40,
        "Sample only from this many most likely tokens (0: no limit).",
        lo=0,
        label="Top-k",
        flag="--top-k",
    )
    min_p: float = spec(
        0.05,
        "Drop tokens less likely than this fraction of the most likely one (0-1).",
        lo=0,
        hi=1,
        label="Min-p",
        flag="--min-p",
    )
    repeat_penalty: float = spec(
        1.0,
        "Above 1 discourages repeating recent tokens; 1 turns it off.",
        lo=0,
        hi=5,
        label="Repeat penalty",
        flag="--repeat-penalty",
    )
    max_tokens: int = spec(
        256, "Longest reply, in tokens.", lo=1, label="Max tokens", flag="--max-tokens"
    )
    seed: int | None = spec(
        None,
        "Sampling seed for reproducible runs; leave it out for a random one.",
        lo=0,
        example=42,
        label="Seed",
        flag="--seed",
    )
    top_probs: int = spec(
        0,
        "Alternatives (with probabilities) to show per token: 0 for none, at most 10.",
        lo=0,
        hi=10,
        label="Alternatives",
        flag="--top-k-probs",
    )
    stop: tuple[str, ...] = spec(
        (), "Stop when the output contains this text (repeatable).", setting=False, flag="--stop"
    )


@dataclass(frozen=True)
class LoadInfo:
    """Facts about a loaded model, returned by `Engine.load`."""

    path: str
    load_s: float
    n_ctx: int
    n_ctx_train: int
    n_threads: int
    n_layers: int
    gpu_offload_supported: bool
    n_gpu_layers: int
    """Layers actually offloaded to the GPU (0: runs on the CPU)."""
    chat_template: str | None
    template_source: Literal["gguf", "override"] | None
    bos_token: str
    eos_token: str
    model_name: str = ""
    remote: bool = False
    """True when a server runs the model (its device is the server's business)."""
    extra_buffers: bool = True
    """Whether llama.cpp's CPU extra buffer types (AMX, repacking) are in use."""
    extra_buffers_note: str = ""
    """Why they are off, in words, when localbvi turned them off (empty otherwise)."""

    @property
    def device(self) -> str:
        """Where the model runs, in words: "CPU", "GPU (N/M layers)" or "server"."""
        if self.remote:
            return "server"
        safe = "" if self.extra_buffers else ", extra buffers off"
        if self.n_gpu_layers > 0:
            return f"GPU ({self.n_gpu_layers}/{self.n_layers} layers{safe})"
        return f"CPU ({safe[2:]})" if safe else "CPU"


@dataclass(frozen=True)
class Token:
    """A token id with its text piece (special tokens shown as their text, e.g. `<bos>`)."""

    id: int
    text: str
    special: bool = False


@dataclass(frozen=True)
class Rendered:
    """The exact prompt chat mode sends: its text and its tokens."""

    text: str
    tokens: tuple[Token, ...]


@dataclass(frozen=True)
class Alternative:
    """A candidate for the next token with its probability (after temperature 1 softmax)."""

    text: str
    id: int
    prob: float


@dataclass(frozen=True)
class TokenScore:
    """How likely a model finds a given token at its position (teacher forcing)."""

    id: int
    text: str
    rank: int
    """1 when the model's own first choice, 2 its second…"""
    prob: float
    alternatives: tuple[Alternative, ...] = ()
    """The model's own most likely tokens there, most likely first."""
    wanted: tuple[tuple[int, float], ...] = ()
    """(id, probability) for the ids the caller asked about (another model's candidates)."""


@dataclass(frozen=True)
class ScoreRequest:
    """Tokens for a model to score by teacher forcing (`LocalEngine.score`): each `answer`
    token at its position after `prompt` and the answer before it."""

    prompt: tuple[int, ...]
    answer: tuple[int, ...]
    top_k: int = 10
    """How many of the model's own top choices to report per position."""
    wanted: tuple[tuple[int, ...], ...] = ()
    """Per answer position, ids whose probabilities the caller wants (another model's top-k)."""


ScoreProgress = Callable[[int, int], None]
"""Told (answer positions scored, answer positions in all) after each chunk of a score."""


@dataclass(frozen=True)
class VocabInfo:
    """A model's vocabulary in brief: two models can be compared token by token only if
    these are equal."""

    tokenizer: str
    n_tokens: int
    sha256: str

    def __str__(self) -> str:
        return f"{self.tokenizer} vocabulary of {self.n_tokens:,} tokens (hash {self.sha256})"


@dataclass(frozen=True)
class TokenEvent:
    """One generated token. `text` may be empty while a UTF-8 character is incomplete."""

    text: str
    id: int
    alternatives: tuple[Alternative, ...] = ()
    type: Literal["token"] = "token"

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": "token", "text": self.text, "id": self.id}
        if self.alternatives:
            out["alternatives"] = [asdict(a) for a in self.alternatives]
        return out


@dataclass(frozen=True)
class DoneEvent:
    """The last event of every generation."""

    finish_reason: FinishReason
    prompt_tokens: int = 0
    tokens: int = 0
    ttft_s: float = 0.0
    tokens_per_s: float = 0.0
    stop_detail: str = ""
    """What stopped it, in words: "end of turn", "stop string '\\n\\n'", "max tokens"…"""
    error: str = ""
    load_s: float | None = None
    notice: str = ""
    """Something the engine did on its own that the user should know, e.g. "CPU extra buffers
    off: llama.cpp crashed with them on this CPU" after it reloaded the model to serve this."""
    type: Literal["done"] = "done"
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "type": "done",
            "finish_reason": self.finish_reason,
            "tokens": self.tokens,
            "prompt_tokens": self.prompt_tokens,
            "ttft_s": round(self.ttft_s, 4),
            "tokens_per_s": round(self.tokens_per_s, 2),
            "stop_detail": self.stop_detail,
            "load_s": None if self.load_s is None else round(self.load_s, 4),
        }
        if self.error:
            out["error"] = self.error
        if self.notice:
            out["notice"] = self.notice
        return out


Event = TokenEvent | DoneEvent
