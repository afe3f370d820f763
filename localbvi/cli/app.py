"""`localbvi` with no command: open the terminal app (optionally with --model and --mode)."""

from __future__ import annotations

import argparse

__all__ = ["run_app"]


def run_app(args: argparse.Namespace) -> int:
    """Run the app until the user quits; the terminal is restored by Textual on exit."""
    from localbvi.tui import make_app

    app = make_app(model_ref=getattr(args, "model", None), mode=getattr(args, "mode", None))
    result = app.run()
    return result if isinstance(result, int) else 0
