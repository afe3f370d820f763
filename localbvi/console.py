"""The `localbvi` console script.

`localbvi.cli.main` installs the Ctrl-C handler that turns an interrupt into exit 130 and one
quiet line; an interrupt that arrives while Python is still importing the CLI (the first tenth
of a second) would otherwise print a KeyboardInterrupt traceback. This shim imports the CLI
under a guard, so Ctrl-C at any moment is a quiet exit 130.
"""

from __future__ import annotations


def main() -> int:
    try:
        from localbvi.cli import main as cli_main

        return cli_main()
    except KeyboardInterrupt:
        return 130
