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
from localbvi.fieldspec import Spec, specs

if TYPE_CHECKING:
    from localbvi.settings import Settings

__all__ = [
    "add_load_flags",
    "add_sampling_flags",
    "emit_json",
    "json_safe",
    "json_text",
    "load_config_from",
    "progress_printer",
    "sampling_from",
    "stats_line",
]


def _flag_type(field: Spec) -> Callable[[str], Any]:
    """An argparse type from the field's definition, so a flag and its setting agree."""

    def parse(text: str) -> Any:
        try:
            return field.parse(text)
        except ValueError as exc:
            got = text if _is_number(text) else repr(printable(text)[:40])
            raise argparse.ArgumentTypeError(f"expected {exc}, got {got}") from None

    return parse


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _add_flags(parser: argparse.ArgumentParser, cls: type[Any], title: str, *skip: str) -> None:
    """One flag per field of `cls` that has one; a flag left out is None."""
    group = parser.add_argument_group(f"{title} (defaults: the settings file, else these)")
    for field in specs(cls):
        if not field.flag or field.name in skip:
            continue
        default = "" if field.default in (None, ()) else f" (default {field.default})"
        text = (field.help + default).replace("%", "%%")
        if tuple in field.kinds:
            group.add_argument(
                field.flag, dest=field.name, action="append", metavar="TEXT", help=text
            )
        elif field.choices and not field.number:
            group.add_argument(field.flag, dest=field.name, choices=field.choices, help=text)
        else:
            group.add_argument(field.flag, dest=field.name, type=_flag_type(field), help=text)


def add_sampling_flags(parser: argparse.ArgumentParser, *, top_probs: bool = False) -> None:
    """Sampling flags from `Sampling`'s fields (`--top-k-probs` only where asked for)."""
    _add_flags(parser, Sampling, "sampling", *(() if top_probs else ("top_probs",)))


def add_load_flags(parser: argparse.ArgumentParser) -> None:
    """Loading flags from `LoadConfig`'s fields."""
    _add_flags(parser, LoadConfig, "loading")


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


def _given(args: argparse.Namespace, cls: type[Any]) -> dict[str, Any]:
    """The values of `cls`'s flags given on the command line."""
    found = {f.name: getattr(args, f.name, None) for f in specs(cls) if f.flag}
    return {k: tuple(v) if isinstance(v, list) else v for k, v in found.items() if v is not None}


def sampling_from(args: argparse.Namespace, **overrides: Any) -> Sampling:
    """Flags given on the command line, then the settings file, then the defaults."""
    return replace(_settings(args).sampling, **{**_given(args, Sampling), **overrides})


def load_config_from(args: argparse.Namespace) -> LoadConfig:
    """Flags given on the command line, then the settings file, then the defaults."""
    return replace(_settings(args).engine, **_given(args, LoadConfig))


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
