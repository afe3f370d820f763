"""`localbvi complete`, `localbvi chat`, `localbvi render`: the model at work, headless."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import Any

from localbvi.cli.common import (
    add_load_flags,
    add_sampling_flags,
    emit_json,
    load_config_from,
    progress_printer,
    sampling_from,
    stats_line,
    stream_events,
)
from localbvi.engine.opener import OpenedModel, open_model
from localbvi.engine.types import DoneEvent, Message
from localbvi.errors import LocalbviError

__all__ = ["register"]


def register(sub: Any) -> None:
    p = sub.add_parser(
        "complete",
        help="raw completion: the model continues your text as is",
        description="Raw completion: the prompt goes to the model exactly as written "
        "(no chat template) and the continuation streams to stdout; stats go to stderr.",
    )
    p.add_argument(
        "-m", "--model", required=True, metavar="REF", help="path, catalog id or Hub ref"
    )
    p.add_argument("prompt", metavar="PROMPT", help="the text to continue ('-' reads stdin)")
    p.add_argument("--json", action="store_true", help="JSON Lines events instead of text")
    p.add_argument(
        "--top-k-probs",
        type=int,
        default=0,
        metavar="K",
        help="report the K most likely tokens at each step (≤ 10; with --json)",
    )
    add_sampling_flags(p)
    add_load_flags(p)
    p.add_argument("--no-save", action="store_true", help="do not record this in sessions")
    p.set_defaults(handler=_complete)

    p = sub.add_parser(
        "chat",
        help="chat through the model's chat template",
        description="Chat mode: messages are rendered with the model's chat template. With "
        "MESSAGE, prints one reply; without, reads messages from stdin in a loop.",
    )
    p.add_argument("-m", "--model", required=True, metavar="REF")
    p.add_argument("message", nargs="?", metavar="MESSAGE")
    p.add_argument("--system", metavar="TEXT", help="a system prompt")
    p.add_argument("--json", action="store_true", help="JSON Lines events instead of text")
    add_sampling_flags(p)
    add_load_flags(p)
    p.add_argument("--no-save", action="store_true", help="do not record this in sessions")
    p.set_defaults(handler=_chat)

    p = sub.add_parser(
        "render",
        help="print exactly the prompt chat mode would send",
        description="Print the exact prompt text the model receives in chat mode.",
    )
    p.add_argument("-m", "--model", required=True, metavar="REF")
    p.add_argument("message", metavar="MESSAGE")
    p.add_argument("--system", metavar="TEXT")
    p.add_argument("--tokens", action="store_true", help="also list the tokens, one a line")
    add_load_flags(p)
    p.set_defaults(handler=_render)


def _open(args: argparse.Namespace) -> OpenedModel:
    return open_model(args.model, load_config_from(args), on_progress=progress_printer())


def _json_errors(fn: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """In --json mode a failure is a JSON record on stdout (and exit code 1)."""

    def run(args: argparse.Namespace) -> int:
        if not getattr(args, "json", False):
            return fn(args)
        try:
            return fn(args)
        except LocalbviError as exc:
            emit_json({"type": "error", "message": str(exc)})
            return 1

    return run


def _read_prompt(value: str) -> str:
    return sys.stdin.read() if value == "-" else value


@_json_errors
def _complete(args: argparse.Namespace) -> int:
    prompt = _read_prompt(args.prompt)
    k = max(0, min(args.top_k_probs, 10))
    sampling = sampling_from(args, top_probs=k)
    opened = _open(args)
    recorder = _recorder(args, opened, "completion", document=prompt)
    try:
        events = opened.engine.complete(prompt, sampling)
        done, _ = _stream(events, args, opened, recorder)
    finally:
        opened.engine.close()
    return 0 if done.finish_reason != "error" else 1


def _stream(
    events: Any, args: argparse.Namespace, opened: OpenedModel, recorder: Any
) -> tuple[DoneEvent, str]:
    """Stream to stdout, stats to stderr; returns the result and the generated text."""
    pieces: list[str] = []

    def keep(evts: Any) -> Any:
        for e in evts:
            if getattr(e, "type", "") == "token":
                pieces.append(e.text)
            yield e

    try:
        done = stream_events(keep(events), json_mode=args.json, load_s=opened.info.load_s)
    except KeyboardInterrupt:
        if recorder is not None:
            recorder("".join(pieces), "cancelled", None)
        raise
    if not args.json:
        text = "".join(pieces)
        if text and not text.endswith("\n"):
            sys.stdout.write("\n")
        sys.stdout.flush()
        print(stats_line(done, opened.engine.info), file=sys.stderr)
        if done.error:
            print(f"localbvi: error: {done.error}", file=sys.stderr)
    if recorder is not None:
        status = (
            "cancelled"
            if done.finish_reason == "cancelled"
            else ("error" if done.finish_reason == "error" else "complete")
        )
        recorder("".join(pieces), status, done.to_json())
    return done, "".join(pieces)


@_json_errors
def _chat(args: argparse.Namespace) -> int:
    sampling = sampling_from(args)
    opened = _open(args)
    history: list[Message] = []
    if args.system:
        history.append(Message("system", args.system))
    recorder_factory = _chat_recorder(args, opened)
    try:
        if args.message is not None:
            return _chat_turn(opened, history, args.message, sampling, args, recorder_factory)
        return _chat_loop(opened, history, sampling, args, recorder_factory)
    finally:
        opened.engine.close()


def _chat_turn(
    opened: OpenedModel,
    history: list[Message],
    text: str,
    sampling: Any,
    args: argparse.Namespace,
    recorder_factory: Any,
) -> int:
    history.append(Message("user", text))
    recorder = recorder_factory(text) if recorder_factory else None
    done, reply = _stream(opened.engine.chat(history, sampling), args, opened, recorder)
    history.append(Message("assistant", reply))
    return 0 if done.finish_reason != "error" else 1


def _chat_loop(
    opened: OpenedModel,
    history: list[Message],
    sampling: Any,
    args: argparse.Namespace,
    recorder_factory: Any,
) -> int:
    tty = sys.stdin.isatty()
    if tty:
        print(
            f"Chatting with {opened.display_name} ({opened.kind}). "
            "Ctrl-C stops a reply, Ctrl-D or /exit quits, /reset starts over.",
            file=sys.stderr,
        )
    code = 0
    while True:
        if tty:
            print("> ", end="", file=sys.stderr, flush=True)
        line = sys.stdin.readline()
        if not line:
            return code
        text = line.rstrip("\n")
        if text.strip() in ("/exit", "/quit"):
            return code
        if text.strip() == "/reset":
            del history[1 if args.system else 0 :]
            print("(conversation cleared)", file=sys.stderr)
            continue
        if not text.strip():
            continue
        try:
            code = _chat_turn(opened, history, text, sampling, args, recorder_factory) or code
        except KeyboardInterrupt:
            print("\n(reply cancelled)", file=sys.stderr)


def _render(args: argparse.Namespace) -> int:
    messages: list[Message] = []
    if args.system:
        messages.append(Message("system", args.system))
    messages.append(Message("user", args.message))
    opened = _open(args)
    try:
        rendered = opened.engine.render(messages)
    finally:
        opened.engine.close()
    sys.stdout.write(rendered.text)
    sys.stdout.flush()
    if args.tokens:
        print(file=sys.stderr)
        for t in rendered.tokens:
            mark = " (special)" if t.special else ""
            print(f"{t.id:>8}  {t.text!r}{mark}", file=sys.stderr)
    print(f"\n[{len(rendered.tokens)} tokens of {opened.info.n_ctx}]", file=sys.stderr)
    return 0


# -- session recording (best effort: a broken sessions database never stops a generation) --


def _store() -> Any:
    try:
        from localbvi.sessions import SessionStore
    except ImportError:
        return None
    try:
        return SessionStore()
    except LocalbviError as exc:
        print(f"localbvi: warning: not saving this session: {exc}", file=sys.stderr)
        return None


def _recorder(
    args: argparse.Namespace, opened: OpenedModel, kind: str, document: str
) -> Callable[[str, str, Any], None] | None:
    if args.no_save:
        return None
    store = _store()
    if store is None:
        return None
    record = store.create(kind, model=opened.ref, mode="completion", title=document[:60])

    def save(text: str, status: str, stats: Any) -> None:
        try:
            store.update_document(record.id, document + text)
            store.add_message(record.id, "assistant", text, status=status, stats=stats)
        except LocalbviError as exc:
            print(f"localbvi: warning: session not saved: {exc}", file=sys.stderr)

    return save


def _chat_recorder(args: argparse.Namespace, opened: OpenedModel) -> Any:
    if args.no_save:
        return None
    store = _store()
    if store is None:
        return None
    state: dict[str, Any] = {}

    def for_turn(user_text: str) -> Callable[[str, str, Any], None]:
        try:
            if "id" not in state:
                record = store.create(
                    "chat",
                    model=opened.ref,
                    mode="chat",
                    title=user_text[:60],
                    system=args.system or "",
                )
                state["id"] = record.id
            store.add_message(state["id"], "user", user_text)
        except LocalbviError as exc:
            print(f"localbvi: warning: session not saved: {exc}", file=sys.stderr)

        def save(text: str, status: str, stats: Any) -> None:
            try:
                if "id" in state:
                    store.add_message(state["id"], "assistant", text, status=status, stats=stats)
            except LocalbviError as exc:
                print(f"localbvi: warning: session not saved: {exc}", file=sys.stderr)

        return save

    return for_turn
