"""Command palette providers: every action of the current screen, and "Load model: …"."""

from __future__ import annotations

import asyncio
from functools import partial
from typing import TYPE_CHECKING, cast

from textual.command import DiscoveryHit, Hit, Hits, Provider

from localbvi.tui.services import all_models
from localbvi.tui.state import ModelChoice

if TYPE_CHECKING:
    from textual.binding import Binding
    from textual.dom import DOMNode

    from localbvi.tui.app import LocalbviApp

__all__ = ["ModelCommands", "ScreenCommands"]

HIDDEN_ACTIONS = {"command_palette", "help_quit"}


def screen_actions(provider: Provider) -> list[tuple[str, str, DOMNode, Binding]]:
    """(title, key, node, binding) for every enabled binding on the palette's screen."""
    seen: set[str] = set()
    out: list[tuple[str, str, DOMNode, Binding]] = []
    for key, active in provider.screen.active_bindings.items():
        binding = active.binding
        if not active.enabled or not binding.description or binding.action in HIDDEN_ACTIONS:
            continue
        # Text-editing keys of Input/TextArea are not app actions; list only ours.
        if not type(active.node).__module__.startswith("localbvi."):
            continue
        if binding.description in seen:
            continue
        seen.add(binding.description)
        display = provider.app.get_key_display(binding)
        out.append((binding.description, display or key, active.node, binding))
    return sorted(out, key=lambda item: item[0].lower())


def _help(key: str, binding: Binding) -> str:
    return f"{key} · {binding.tooltip}" if binding.tooltip else key


class ScreenCommands(Provider):
    """The actions available right now, named as the footer and help screen name them."""

    async def discover(self) -> Hits:
        for title, key, node, binding in screen_actions(self):
            yield DiscoveryHit(
                title,
                partial(self.app.run_action, binding.action, node),
                help=_help(key, binding),
            )

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        for title, key, node, binding in screen_actions(self):
            score = matcher.match(title)
            if score > 0:
                yield Hit(
                    score,
                    matcher.highlight(title),
                    partial(self.app.run_action, binding.action, node),
                    help=_help(key, binding),
                )


class ModelCommands(Provider):
    """ "Load model: NAME" for every catalog and on-disk model."""

    async def startup(self) -> None:
        app = cast("LocalbviApp", self.app)
        try:
            self._models: list[ModelChoice] = await asyncio.to_thread(
                all_models, app.services, app.settings.engine.n_ctx, app.settings.remote
            )
        except Exception:
            self._models = []

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        app = cast("LocalbviApp", self.app)
        for model in self._models:
            title = f"Load model: {model.display_name}"
            score = matcher.match(title)
            if score > 0:
                state = "remote" if model.remote else "on disk" if model.downloaded else "download"
                yield Hit(
                    score,
                    matcher.highlight(title),
                    partial(app.choose, model),
                    help=f"{model.kind or '?'} · {model.quant} · {state}",
                )
