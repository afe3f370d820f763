"""The headless command line: `localbvi COMMAND …`, and `localbvi` alone opens the app.

Each command lives in its own module with a `register(subparsers)` function that adds its
parser and sets `handler` (a callable taking the parsed namespace and returning an exit code).
Exit codes: 0 success, 2 usage error, 1 any other failure. A failure prints one readable line,
never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from localbvi import __version__
from localbvi.errors import LocalbviError

__all__ = ["build_parser", "main"]

# One module per command group, in the order `--help` lists them.
COMMAND_MODULES = (
    "localbvi.cli.generate",  # complete, chat, render
    "localbvi.cli.inspect",  # info, doctor
    "localbvi.cli.store",  # pull, models, rm, import
    "localbvi.cli.sessions",  # sessions, export
    "localbvi.cli.lab",  # compare, experiments
)


class _Parser(argparse.ArgumentParser):
    """argparse with a usage error that says where to look, exit code 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.print_usage(sys.stderr)
        self.exit(2, f"{self.prog}: error: {message}\n(see '{self.prog} --help')\n")


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
    parser.add_argument("--mode", choices=("chat", "completion"), help="open the app in this mode")
    parser.add_argument(
        "--offline", action="store_true", help="never use the network (like HF_HUB_OFFLINE=1)"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "offline", False):
        import os

        os.environ["HF_HUB_OFFLINE"] = "1"
    try:
        if args.command is None:
            from localbvi.cli.app import run_app

            return run_app(args)
        code: int = args.handler(args)
        return code
    except LocalbviError as exc:
        print(f"localbvi: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("localbvi: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 1
    except Exception as exc:  # a bug: still one readable line, never a traceback
        print(
            f"localbvi: internal error: {type(exc).__name__}: {exc} "
            "(please report it with the command you ran)",
            file=sys.stderr,
        )
        return 1
