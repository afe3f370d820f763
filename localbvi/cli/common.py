"""Flags and output helpers shared by the generating commands (complete, chat, compare…)."""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import TYPE_CHECKING, Any, TextIO

from localbvi.engine.types import DoneEvent, Event, LoadConfig, LoadInfo, Sampling, TokenEvent
from localbvi.errors import printable

if TYPE_CHECKING:
    from localbvi.settings import Settings

__all__ = [
    "add_load_flags",
    "add_sampling_flags",
    "emit_json",
    "gpu_layers",
    "json_safe",
    "json_text",
    "load_config_from",
    "progress_printer",
    "sampling_from",
    "setting_type",
    "stats_line",
]

_DEFAULTS = Sampling()


def gpu_layers(value: str) -> int | str:
    """`--gpu-layers auto|N` (argparse type)."""
    if value == "auto":
        return value
    try:
        n = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected 'auto' or a number, got {value!r}") from None
    if n < -1:
        raise argparse.ArgumentTypeError("expected 'auto', -1 (all) or a number ≥ 0")
    return n


def setting_type(key: str) -> Callable[[str], Any]:
    """An argparse type that accepts what the settings file accepts for `key` ("table.key").

    The range comes from `localbvi.settings.NUMBER_RANGES`, so a flag and its setting can
    never disagree about what is valid.
    """
    from localbvi.settings import NUMBER_RANGES

    allowed = NUMBER_RANGES[key]
    what = "a whole number" if allowed.integer else "a number"

    def parse(text: str) -> int | float:
        try:
            value: int | float = int(text) if allowed.integer else float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected {what}, got {printable(text)[:40]!r}"
            ) from None
        if not allowed.contains(value):
            raise argparse.ArgumentTypeError(f"expected {what} {allowed.span()}, got {text}")
        return value

    return parse


def add_sampling_flags(parser: argparse.ArgumentParser) -> None:
    """Sampling flags; any left out take the settings file's value (else the defaults)."""
    g = parser.add_argument_group("sampling (defaults: the settings file, else these)")
    g.add_argument(
        "--max-tokens",
        type=setting_type("sampling.max_tokens"),
        default=None,
        help=f"most tokens to generate (default {_DEFAULTS.max_tokens})",
    )
    g.add_argument(
        "--temperature",
        type=setting_type("sampling.temperature"),
        default=None,
        help=f"0 is deterministic (default {_DEFAULTS.temperature})",
    )
    g.add_argument(
        "--top-p",
        type=setting_type("sampling.top_p"),
        default=None,
        help=f"default {_DEFAULTS.top_p}",
    )
    g.add_argument(
        "--top-k",
        type=setting_type("sampling.top_k"),
        default=None,
        help=f"default {_DEFAULTS.top_k}",
    )
    g.add_argument(
        "--min-p",
        type=setting_type("sampling.min_p"),
        default=None,
        help=f"default {_DEFAULTS.min_p}",
    )
    g.add_argument(
        "--repeat-penalty",
        type=setting_type("sampling.repeat_penalty"),
        default=None,
        help=f"default {_DEFAULTS.repeat_penalty}",
    )
    g.add_argument(
        "--seed",
        type=setting_type("sampling.seed"),
        default=None,
        help="sampling seed (default: random)",
    )
    g.add_argument(
        "--stop",
        action="append",
        default=[],
        metavar="TEXT",
        help="stop when the output contains TEXT (repeatable)",
    )


def add_load_flags(parser: argparse.ArgumentParser) -> None:
    defaults = LoadConfig()
    g = parser.add_argument_group("loading (defaults: the settings file, else these)")
    g.add_argument(
        "--ctx",
        type=setting_type("engine.n_ctx"),
        default=None,
        help=f"context size in tokens (default {defaults.n_ctx})",
    )
    g.add_argument(
        "--threads",
        type=setting_type("engine.n_threads"),
        default=None,
        help="CPU threads (default: the cores of this machine)",
    )
    g.add_argument(
        "--gpu-layers",
        type=gpu_layers,
        default=None,
        help="layers to offload to the GPU: auto (all, where supported) or N",
    )
    g.add_argument(
        "--cpu-extra-buffers",
        choices=("auto", "on", "off"),
        default=None,
        help="llama.cpp's CPU extra buffers (AMX, weight repacking): auto (default) turns "
        "them off where they crash llama.cpp on this CPU",
    )


def _settings(args: argparse.Namespace) -> Settings:
    """The user's settings, read once per command line (so each warning shows once).

    A broken file is a warning and the defaults, never a failure.
    """
    from localbvi.settings import load_settings

    cached: Settings | None = getattr(args, "_settings", None)
    if cached is not None:
        return cached
    loaded = load_settings()
    for line in (loaded.problem or "").splitlines():
        # Each problem line already names the file.
        print(f"localbvi: warning: {printable(line)}", file=sys.stderr)
    args._settings = loaded.settings
    return loaded.settings


def sampling_from(args: argparse.Namespace, **overrides: Any) -> Sampling:
    """Flags given on the command line, then the settings file, then the defaults."""
    base: Sampling = _settings(args).to_sampling()
    flags = {
        "temperature": args.temperature,
        "top_p": args.top_p,
        "top_k": args.top_k,
        "min_p": args.min_p,
        "repeat_penalty": args.repeat_penalty,
        "max_tokens": args.max_tokens,
        "seed": args.seed,
    }
    values: dict[str, Any] = {k: v for k, v in flags.items() if v is not None}
    values["stop"] = tuple(args.stop)
    values.update(overrides)
    return replace(base, **values)


def load_config_from(args: argparse.Namespace) -> LoadConfig:
    base: LoadConfig = _settings(args).to_load_config()
    flags = {
        "n_ctx": args.ctx,
        "n_threads": args.threads,
        "n_gpu_layers": args.gpu_layers,
        "cpu_extra_buffers": args.cpu_extra_buffers,
    }
    return replace(base, **{k: v for k, v in flags.items() if v is not None})


def json_safe(value: Any) -> Any:
    """`value` with every NaN or infinity replaced by None, which strict JSON can hold."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return value


_C1 = re.compile("[\x7f-\x9f]")


def json_text(value: Any, indent: int | None = None) -> str:
    """Strict JSON (NaN and infinities as null) that is inert on a terminal.

    JSON escapes C0 controls (ESC becomes \\u001b) but not DEL and the C1 range, which some
    terminals obey; those are escaped too. They only occur inside strings, so this is exact.
    """
    text = json.dumps(json_safe(value), ensure_ascii=False, allow_nan=False, indent=indent)
    return _C1.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


def emit_json(obj: dict[str, Any], out: TextIO | None = None) -> None:
    """One JSON Lines record (strict JSON: never NaN), flushed so a reader sees it at once."""
    stream = out or sys.stdout
    stream.write(json_text(obj) + "\n")
    stream.flush()


def stats_line(done: DoneEvent, info: LoadInfo | None = None) -> str:
    """The figures of a generation; `info` adds where it ran when that is not the usual."""
    parts = [
        f"{done.tokens} tokens",
        f"{done.tokens_per_s:.1f} tok/s",
        f"first token {done.ttft_s:.2f} s",
    ]
    if done.load_s is not None:
        parts.append(f"load {done.load_s:.2f} s")
    parts.append(
        f"{done.finish_reason}: {done.stop_detail}" if done.stop_detail else done.finish_reason
    )
    if info is not None and not info.extra_buffers and not info.remote:
        parts.append(info.extra_buffers_note or "CPU extra buffers off")
    return "[" + ", ".join(parts) + "]"


def stream_events(
    events: Iterator[Event],
    *,
    json_mode: bool,
    load_s: float | None,
    extra: dict[str, Any] | None = None,
    out: TextIO | None = None,
) -> DoneEvent:
    """Print a generation as it happens (text or JSON Lines) and return its DoneEvent."""
    stream = out or sys.stdout
    done: DoneEvent | None = None
    for event in events:
        if isinstance(event, TokenEvent):
            if json_mode:
                emit_json({**event.to_json(), **(extra or {})}, stream)
            elif event.text:
                # Model output must not drive the terminal (escape sequences are dropped).
                stream.write(printable(event.text))
                stream.flush()
        else:
            done = replace(event, load_s=load_s)
    if done is None:  # cannot happen with a conforming engine; never leave the caller empty
        done = DoneEvent(finish_reason="error", error="the engine ended without a result")
    if json_mode:
        emit_json({**done.to_json(), **(extra or {})}, stream)
    return done


def progress_printer(stream: TextIO | None = None) -> Callable[[Any], None]:
    """A download progress callback that draws one updating line on a terminal."""
    err = stream or sys.stderr
    tty = err.isatty()
    last_draw = [0.0]
    last_file = [""]

    def show(p: Any) -> None:
        now = time.monotonic()
        finished = p.total and p.done >= p.total
        checked = getattr(p, "checked", "")  # how the store verified the file, when done
        if tty:
            if now - last_draw[0] < 0.1 and not finished:
                return
            last_draw[0] = now
            pct = 100.0 * p.done / p.total if p.total else 0.0
            eta = f", {p.eta_s:.0f} s left" if p.eta_s is not None and not finished else ""
            err.write(
                f"\r{p.file}: {pct:5.1f}% {p.done / 1e6:.0f}/{p.total / 1e6:.0f} MB "
                f"{p.speed_bps / 1e6:.1f} MB/s{eta}   "
            )
            if finished:
                err.write(f"({checked})\n" if checked else "\n")
            err.flush()
        elif finished and last_file[0] != p.file:
            last_file[0] = p.file
            note = f" ({checked})" if checked else ""
            err.write(f"{p.file}: downloaded {p.total / 1e6:.0f} MB{note}\n")
            err.flush()

    return show
