"""A saved session as Markdown (to read or share) or JSON (to process or archive)."""

from __future__ import annotations

import json
import math
import re
from datetime import UTC, datetime
from typing import Any, Literal

from localbvi.sessions.store import SessionRecord, StoredMessage

__all__ = ["EXPORT_FORMATS", "ExportFormat", "render", "to_json", "to_markdown"]

ExportFormat = Literal["md", "json"]
EXPORT_FORMATS: tuple[ExportFormat, ...] = ("md", "json")

JSON_FORMAT_VERSION = 1
"""Bumped when the JSON layout changes incompatibly."""

_ROLE_TITLES = {
    "system": "System",
    "user": "User",
    "assistant": "Assistant",
    "base": "Base model",
    "incontext": "Base model · in-context examples",
    "instruct": "Instruct model",
}


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _fence(text: str) -> str:
    """`text` in a code fence longer than any backtick run inside it, so it stays verbatim."""
    longest = max((len(m) for m in re.findall(r"`+", text)), default=0)
    fence = "`" * max(3, longest + 1)
    return f"{fence}text\n{text}\n{fence}"


def _stats_line(message: StoredMessage) -> str:
    stats = message.stats
    parts: list[str] = []
    if isinstance(stats.get("tokens"), int) and stats["tokens"]:
        parts.append(f"{stats['tokens']} tokens")
    if isinstance(stats.get("tokens_per_s"), int | float) and stats["tokens_per_s"]:
        parts.append(f"{stats['tokens_per_s']:.1f} tokens/s")
    if stats.get("stop_detail"):
        parts.append(f"stopped: {stats['stop_detail']}")
    if stats.get("error"):
        parts.append(f"error: {stats['error']}")
    return f"*{' · '.join(parts)}*" if parts else ""


def _messages(record: SessionRecord, include_superseded: bool) -> tuple[StoredMessage, ...]:
    return record.messages if include_superseded else record.current


def to_markdown(record: SessionRecord, *, include_superseded: bool = False) -> str:
    """The session as a Markdown document: a header of facts, then each message in order.

    A completion document is fenced so that raw model text shows exactly as generated.
    Messages replaced by "regenerate" or "edit last" are left out, as on the screen, unless
    `include_superseded` (then their heading says "superseded").
    """
    lines = [
        f"# {record.display_title}",
        "",
        f"- **Kind:** {record.kind}",
        f"- **Model:** `{record.model}`",
        f"- **Mode:** {record.mode}"
        + (
            " (a base model answering through in-context examples: not an instruct model)"
            if record.in_context
            else ""
        ),
        f"- **Started:** {_iso(record.created_at)}",
        f"- **Last activity:** {_iso(record.updated_at)}",
        f"- **Session:** {record.id}",
    ]
    if record.system:
        lines += ["", "## System prompt", "", record.system]
    if record.document:
        lines += ["", "## Document", "", _fence(record.document)]
    for message in _messages(record, include_superseded):
        heading = _ROLE_TITLES.get(message.role, message.role.title())
        marks: list[str] = [message.status] if message.status != "complete" else []
        if message.superseded:
            marks.append("superseded")
        if marks:
            heading += f" ({', '.join(marks)})"
        lines += ["", f"## {heading}", "", message.content]
        if stats := _stats_line(message):
            lines += ["", stats]
    lines += ["", "---", "", "*Exported from localbvi.*", ""]
    return "\n".join(lines)


def _record_json(record: SessionRecord, include_superseded: bool) -> dict[str, Any]:
    return {
        "localbvi_session": JSON_FORMAT_VERSION,
        "id": record.id,
        "kind": record.kind,
        "title": record.title,
        "model": record.model,
        "mode": record.mode,
        "in_context": record.in_context,
        "system": record.system,
        "document": record.document,
        "meta": record.meta,
        "created_at": _iso(record.created_at),
        "updated_at": _iso(record.updated_at),
        "messages": [
            {
                "role": m.role,
                "content": m.content,
                "status": m.status,
                "stats": m.stats,
                "created_at": _iso(m.created_at),
                "superseded": m.superseded,
            }
            for m in _messages(record, include_superseded)
        ],
    }


def _strict(value: Any) -> Any:
    """`value` with NaN and infinities as None: the export is strict JSON any parser reads."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _strict(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_strict(v) for v in value]
    return value


def to_json(record: SessionRecord, *, include_superseded: bool = False) -> str:
    """The session as indented JSON (UTF-8 text kept as is, times in ISO 8601 UTC).

    Superseded messages are left out unless `include_superseded`; each message says which.
    """
    data = _strict(_record_json(record, include_superseded))
    return json.dumps(data, indent=2, ensure_ascii=False, allow_nan=False) + "\n"


def render(record: SessionRecord, fmt: ExportFormat, *, include_superseded: bool = False) -> str:
    """The session in `fmt` ("md" or "json"), superseded messages only if asked."""
    if fmt == "json":
        return to_json(record, include_superseded=include_superseded)
    return to_markdown(record, include_superseded=include_superseded)
