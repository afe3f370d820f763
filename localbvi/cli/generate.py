"""`localbvi complete`, `localbvi chat`, `localbvi render`: the model at work, headless."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from localbvi.cli import interrupt_handled
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
from localbvi.engine.host import OpenedModel, open_model
from localbvi.engine.types import DoneEvent, Event, Message, Sampling
from localbvi.errors import LocalbviError, printable

if TYPE_CHECKING:
    from localbvi.sessions import MessageRole, SessionStore

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
    add_sampling_flags(p, top_probs=True)
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
    p.add_argument(
        "--in-context",
        action="store_true",
        help="chat with a base model through in-context examples (a preamble and three "
        "example answers before your message, stop at the next query) instead of a template",
    )
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
    sampling = sampling_from(args)
    opened = _open(args)
    recorder = None if args.no_save else _Recorder("completion", opened.ref, title=prompt)
    try:
        events = opened.engine.complete(prompt, sampling)
        done, _ = _stream(events, args, opened, recorder, prompt)
    finally:
        opened.engine.close()
        if recorder is not None:
            recorder.close()
    return 0 if done.finish_reason != "error" else 1


def _stream(
    events: Iterator[Event],
    args: argparse.Namespace,
    opened: OpenedModel,
    recorder: _Recorder | None,
    prompt: str,
) -> tuple[DoneEvent, str]:
    """Stream to stdout, stats to stderr, then save; returns the result and the text.

    A reply cut by Ctrl-C is saved as cancelled before the interrupt goes on.
    """
    pieces: list[str] = []

    def keep(evts: Iterator[Event]) -> Iterator[Event]:
        for e in evts:
            if e.type == "token":
                pieces.append(e.text)
            yield e

    try:
        done = stream_events(keep(events), json_mode=args.json, load_s=opened.info.load_s)
    except KeyboardInterrupt:
        if recorder is not None:
            recorder.save(prompt, "".join(pieces), DoneEvent(finish_reason="cancelled"))
        raise
    text = "".join(pieces)
    if not args.json:
        if text and not text.endswith("\n"):
            sys.stdout.write("\n")
        sys.stdout.flush()
        print(printable(stats_line(done, opened.engine.info)), file=sys.stderr)
        if done.error:
            print(f"localbvi: error: {printable(done.error)}", file=sys.stderr)
    if recorder is not None:
        recorder.save(prompt, text, done)
    return done, text


@_json_errors
def _chat(args: argparse.Namespace) -> int:
    sampling = sampling_from(args)
    opened = _open(args)
    history: list[Message] = []
    if args.system:
        history.append(Message("system", args.system))
    recorder = None
    if not args.no_save:
        recorder = _Recorder(
            "chat",
            opened.ref,
            title=args.message or "",
            system=args.system,
            # Saved as a base model's in-context replies: a reopened chat is headed so.
            reply_role="incontext" if getattr(args, "in_context", False) else "assistant",
        )
    try:
        if args.message is not None:
            return _chat_turn(opened, history, args.message, sampling, args, recorder)
        return _chat_loop(opened, history, sampling, args, recorder)
    finally:
        opened.engine.close()
        if recorder is not None:
            recorder.close()


def _chat_turn(
    opened: OpenedModel,
    history: list[Message],
    text: str,
    sampling: Sampling,
    args: argparse.Namespace,
    recorder: _Recorder | None,
) -> int:
    history.append(Message("user", text))
    try:
        if getattr(args, "in_context", False):
            from localbvi.lab.incontext import stream as incontext_stream
            from localbvi.lab.incontext import tidy_answer

            # The fence that closes the answer block before the next `# Query` is not shown.
            events = tidy_answer(incontext_stream(opened.engine, history, sampling))
        else:
            events = opened.engine.chat(history, sampling)
        done, reply = _stream(events, args, opened, recorder, text)
    except BaseException:
        history.pop()  # a turn that did not finish is not part of the conversation
        raise
    if reply or done.finish_reason != "error":
        history.append(Message("assistant", reply))
    else:
        history.pop()
    return 0 if done.finish_reason != "error" else 1


def _chat_loop(
    opened: OpenedModel,
    history: list[Message],
    sampling: Sampling,
    args: argparse.Namespace,
    recorder: _Recorder | None,
) -> int:
    tty = sys.stdin.isatty()
    if tty:
        print(
            f"Chatting with {printable(opened.display_name)} ({opened.kind}). "
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
            code = _chat_turn(opened, history, text, sampling, args, recorder) or code
        except KeyboardInterrupt:
            interrupt_handled()  # Ctrl-C stopped this reply; the chat goes on
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
    sys.stdout.write(printable(rendered.text))  # the template comes from the model file
    sys.stdout.flush()
    if args.tokens:
        print(file=sys.stderr)
        for t in rendered.tokens:
            mark = " (special)" if t.special else ""
            print(f"{t.id:>8}  {t.text!r}{mark}", file=sys.stderr)
    print(f"\n[{len(rendered.tokens)} tokens of {opened.info.n_ctx}]", file=sys.stderr)
    return 0


# -- session recording (best effort: a broken sessions database never stops a generation) --


class _Recorder:
    """Saves what a command generated as one session.

    Nothing is written before a generation has produced something: the reply is never held
    up by the database, and a run that failed before its first token leaves no empty session.
    A database that cannot be written (read-only, locked, damaged) is reported once, as
    "not saved: …" on stderr, and never fails the command.
    """

    def __init__(
        self,
        kind: str,
        model: str,
        *,
        title: str,
        system: str | None = None,
        reply_role: MessageRole = "assistant",
    ) -> None:
        self.kind = kind
        self.reply_role: MessageRole = reply_role
        self.model = model
        self.title = " ".join(title.split())[:60]
        self.system = system or ""
        self.store: SessionStore | None = None
        self.session_id: int | None = None
        self.failed = False

    def save(self, prompt: str, text: str, done: DoneEvent) -> None:
        """Save one generation: a chat turn (prompt = the user's message) or a document."""
        if self.failed or (not text and done.finish_reason in ("error", "cancelled")):
            return
        try:
            store = self._open()
            if self.session_id is None:
                self.session_id = store.create(
                    "chat" if self.kind == "chat" else "completion",
                    model=self.model,
                    mode=self.kind,
                    title=self.title or " ".join(prompt.split())[:60],
                    system=self.system,
                ).id
            if self.kind == "chat":
                store.add_message(self.session_id, "user", prompt)
            else:
                store.update_document(self.session_id, prompt + text)
            store.add_reply(self.session_id, text, done, self.reply_role)
        except Exception as exc:  # whatever the database did, the reply was shown: go on
            self.failed = True
            reason = str(exc) if isinstance(exc, LocalbviError) else f"{type(exc).__name__}: {exc}"
            print(f"localbvi: warning: not saved: {printable(reason)}", file=sys.stderr)

    def _open(self) -> SessionStore:
        if self.store is None:
            from localbvi.sessions import SessionStore

            self.store = SessionStore()
        return self.store

    def close(self) -> None:
        if self.store is not None:
            self.store.close()
