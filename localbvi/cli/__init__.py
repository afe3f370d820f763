"""The headless command line: `localbvi COMMAND …`, and `localbvi` alone opens the app.

Each command lives in its own module with a `register(subparsers)` function that adds its
parser and sets `handler` (a callable taking the parsed namespace and returning an exit code).
Exit codes: 0 success (also when stdout is a pipe closed early, as by `| head`), 2 usage
error, 130 Ctrl-C, 1 any other failure. A failure prints one readable line, never a traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import signal
import sys
import threading
from collections.abc import Sequence
from types import FrameType
from typing import Any

from localbvi import __version__
from localbvi.engine.types import MODES
from localbvi.errors import LocalbviError, UsageError, printable

__all__ = ["build_parser", "interrupt_handled", "main"]

# One module per command group, in the order `--help` lists them.
COMMAND_MODULES = (
    "localbvi.cli.generate",  # complete, chat, render
    "localbvi.cli.inspect",  # info, doctor
    "localbvi.cli.store",  # pull, models, rm, import
    "localbvi.cli.hubsearch",  # search, pair
    "localbvi.cli.sessions",  # sessions, export
    "localbvi.cli.lab",  # compare, experiments
    "localbvi.cli.align",  # shift
)

EXIT_DEADLINE_S = 0.6
"""After Ctrl-C, cleanup (closing engines, saving the partial reply) gets this long; then the
process ends anyway, so an interrupted command is always gone within a second."""


class _Parser(argparse.ArgumentParser):
    """argparse with a one-line usage error that says where to look, exit code 2."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # The innermost parser's default wins: a handler's UsageError names its command.
        self.set_defaults(_prog=self.prog)

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, _usage_line(self.prog, message))


def _usage_line(prog: str, message: str) -> str:
    return f"{prog}: error: {printable(message)} (see '{prog} --help')\n"


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="localbvi",
        description=(
            "Run a base model and its instruct sibling offline and see the difference. "
            "With no command, opens the terminal app."
        ),
    )
    parser.add_argument("--version", action="version", version=f"localbvi {__version__}")
    parser.add_argument("-m", "--model", metavar="REF", help="open the app with this model")
    parser.add_argument("--mode", choices=MODES, help="open the app in this mode")
    parser.add_argument(
        "--offline", action="store_true", help="never use the network (like HF_HUB_OFFLINE=1)"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


# -- Ctrl-C --------------------------------------------------------------------------------


class _Interrupts:
    """The SIGINT handler of a command: KeyboardInterrupt as usual, plus a deadline.

    `finally` blocks still close engines and save what there is, but a watchdog ends the
    process EXIT_DEADLINE_S after Ctrl-C if that cleanup (or the interpreter's exit) hangs.
    """

    def __init__(self) -> None:
        self.watchdog: threading.Timer | None = None
        self.announced = False
        self.fired = False

    def handler(self, signum: int, frame: FrameType | None) -> None:
        self.fired = True
        if self.watchdog is None:
            self.watchdog = threading.Timer(EXIT_DEADLINE_S, self._force_exit)
            self.watchdog.daemon = True
            self.watchdog.start()
        raise KeyboardInterrupt

    def disarm(self) -> None:
        if self.watchdog is not None:
            self.watchdog.cancel()
            self.watchdog = None

    def _force_exit(self) -> None:
        if not self.announced:
            _say("localbvi: interrupted")
        with contextlib.suppress(Exception):
            sys.stdout.flush()
        os._exit(130)


_interrupts: _Interrupts | None = None


def interrupt_handled() -> None:
    """For a command that caught Ctrl-C and goes on (the chat loop): no forced exit."""
    if _interrupts is not None:
        _interrupts.disarm()


def _say(line: str) -> None:
    with contextlib.suppress(OSError, ValueError):  # stderr closed: nothing left to tell
        print(line, file=sys.stderr, flush=True)


# -- main ----------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    global _interrupts
    installed = (
        threading.current_thread() is threading.main_thread()
        and signal.getsignal(signal.SIGINT) is signal.default_int_handler
    )
    interrupts = _Interrupts()
    if installed:
        _interrupts = interrupts
        signal.signal(signal.SIGINT, interrupts.handler)
    try:
        return _main(argv, interrupts)
    finally:
        if installed:
            _interrupts = None
            if interrupts.fired:
                # The process is ending: a second Ctrl-C must not interrupt its exit.
                signal.signal(signal.SIGINT, signal.SIG_IGN)
                # CPython remembers a KeyboardInterrupt that crossed an exec() of a string
                # (dataclasses build methods that way while a module imports) and then ends
                # the process by SIGINT instead of with our exit code; any exec resets that.
                exec("None")
            else:
                signal.signal(signal.SIGINT, signal.default_int_handler)


def _main(argv: Sequence[str] | None, interrupts: _Interrupts) -> int:
    args: argparse.Namespace | None = None
    try:
        try:
            args = build_parser().parse_args(argv)
        except SystemExit:
            sys.stdout.flush()  # --help into a closed pipe is a quiet exit too
            raise
        if getattr(args, "offline", False):
            os.environ["HF_HUB_OFFLINE"] = "1"
        if args.command is None:
            if _interrupts is interrupts:  # the app reads its own keys: no deadline there
                signal.signal(signal.SIGINT, signal.default_int_handler)
            from localbvi.cli.app import run_app

            return run_app(args)
        code: int = args.handler(args)
        sys.stdout.flush()
        return code
    except UsageError as exc:
        prog = getattr(args, "_prog", "localbvi")
        with contextlib.suppress(OSError, ValueError):
            sys.stderr.write(_usage_line(prog, str(exc)))
        return 2
    except LocalbviError as exc:
        _say(f"localbvi: error: {printable(str(exc))}")
        return 1
    except KeyboardInterrupt:
        interrupts.announced = True
        _say("localbvi: interrupted")
        return 130
    except BrokenPipeError:
        # The reader went away (`localbvi sessions | head`): not a failure. Point stdout at
        # devnull so the interpreter's final flush cannot fail again (as the Python docs
        # advise for SIGPIPE).
        devnull = os.open(os.devnull, os.O_WRONLY)
        with contextlib.suppress(OSError, ValueError):
            os.dup2(devnull, sys.stdout.fileno())
        return 0
    except Exception as exc:  # a bug: still one readable line, never a traceback
        _say(
            f"localbvi: internal error: {type(exc).__name__}: {printable(str(exc))} "
            "(please report it with the command you ran)"
        )
        return 1
