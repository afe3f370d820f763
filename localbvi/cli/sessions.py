"""`localbvi sessions` (list and search saved sessions) and `localbvi export ID`."""

from __future__ import annotations

import argparse
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

from localbvi.cli.common import json_text
from localbvi.errors import printable
from localbvi.sessions import EXPORT_FORMATS, SessionStore, SessionSummary, default_db_path, render

__all__ = ["register"]


def register(sub: argparse._SubParsersAction[Any]) -> None:
    p = sub.add_parser(
        "sessions",
        help="list saved sessions, newest first",
        description=(
            "List saved chats, completion documents and compare runs, most recently active "
            "first. `localbvi export ID` writes one out."
        ),
    )
    p.add_argument("--search", metavar="TEXT", help="only sessions containing every word of TEXT")
    p.add_argument("--limit", type=_count, default=50, metavar="N", help="show at most N (50)")
    p.add_argument("--json", action="store_true", help="print a JSON list instead of a table")
    p.set_defaults(handler=_sessions)

    e = sub.add_parser(
        "export",
        help="write a saved session as Markdown or JSON",
        description="Write a saved session (see `localbvi sessions` for ids) as Markdown or JSON.",
    )
    e.add_argument("id", type=int, metavar="ID", help="the session's id")
    e.add_argument("--format", choices=EXPORT_FORMATS, default="md", help="md (default) or json")
    e.add_argument("-o", "--output", metavar="FILE", help="write to FILE instead of stdout")
    e.add_argument(
        "--all",
        action="store_true",
        help="also the messages replaced by regenerate or edit-last, marked superseded",
    )
    e.set_defaults(handler=_export)


def _count(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text[:40]!r}") from None
    if n < 0:
        raise argparse.ArgumentTypeError(f"expected a number of at least 0, got {n}")
    return n


def _skipped_note(count: int, noun: str, of: str = "") -> None:
    """Say that `count` damaged rows were left out (their values have the wrong types)."""
    if count:
        plural = "" if count == 1 else "s"
        print(
            f"localbvi: note: {count} damaged {noun}{plural}{of} in {default_db_path()} left out",
            file=sys.stderr,
        )


def _when(ts: float) -> str:
    return datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M")


def _table(rows: list[SessionSummary]) -> str:
    # Names and titles come from the database (model output, files): no terminal controls.
    models = {r.id: printable(r.model) for r in rows}
    model_w = min(28, max([5, *(len(m) for m in models.values())]))
    lines = [
        f"{'ID':>5}  {'LAST ACTIVITY':16}  {'KIND':10}  {'MODEL':{model_w}}  {'MSGS':>4}  TITLE"
    ]
    for r in rows:
        model = models[r.id]
        model = model if len(model) <= model_w else "…" + model[-(model_w - 1) :]
        lines.append(
            f"{r.id:>5}  {_when(r.updated_at):16}  {r.display_kind:10}  {model:{model_w}}  "
            f"{r.message_count:>4}  {printable(r.display_title)}"
        )
    return "\n".join(lines)


def _sessions(args: argparse.Namespace) -> int:
    rows: list[SessionSummary] = []
    # Listing must not create a database where none was ever written.
    if default_db_path().exists():
        with SessionStore() as store:
            found = store.listing(search=args.search, limit=args.limit)
        rows = found.sessions
        _skipped_note(found.skipped, "session")
    if args.json:
        print(json_text([r.to_json() for r in rows], indent=2))
    elif rows:
        print(_table(rows))
    elif args.search:
        print(f"no saved session contains {args.search!r}", file=sys.stderr)
    else:
        print(
            "no saved sessions yet: `localbvi chat` and `localbvi complete` save theirs "
            "(unless --no-save), and so does the app",
            file=sys.stderr,
        )
    return 0


def _export(args: argparse.Namespace) -> int:
    if not default_db_path().exists():
        print(
            f"localbvi: error: there is no session {args.id}: no session was saved yet",
            file=sys.stderr,
        )
        return 1
    with SessionStore() as store:
        record = store.get(args.id)
    _skipped_note(record.skipped, "message", f" of session {record.id}")
    text = render(record, args.format, include_superseded=args.all)
    if not args.output or args.output == "-":
        # Saved model output may hold escape sequences: a terminal shows them inert.
        sys.stdout.write(printable(text) if sys.stdout.isatty() else text)
        return 0
    out = Path(args.output)
    try:
        out.write_text(text, encoding="utf-8")
    except OSError as exc:
        print(
            f"localbvi: error: cannot write {out} ({exc.strerror or exc}): "
            "choose another file with -o",
            file=sys.stderr,
        )
        return 1
    print(f"wrote session {record.id} to {out}", file=sys.stderr)
    return 0
