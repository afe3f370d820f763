"""The Textual app. Import `make_app` from here; nothing under `tui/` is imported by domain code."""

from localbvi.tui.app import LocalbviApp, make_app

__all__ = ["LocalbviApp", "make_app"]
