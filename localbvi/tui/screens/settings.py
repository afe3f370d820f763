"""Settings: sampling (with presets and seed) now; context, threads, GPU layers on next load.

Save writes the settings file (the app does, with `localbvi.settings.save_settings`). When
that file could not be read, the dialog says so up front: Save leaves it untouched and writes
a new file beside it.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import ClassVar

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Grid, Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Button, Footer, Input, Label, Select

from localbvi.settings import save_target
from localbvi.tui.state import PRESETS, SAMPLING_FIELDS, AppSettings, apply_preset, preset_of

__all__ = ["SettingsScreen", "parse_settings"]

FIELDS: list[tuple[str, str, str]] = [
    ("temperature", "Temperature", "0 = always the most likely token"),
    ("top_p", "Top-p", "0-1"),
    ("top_k", "Top-k", "0 = no limit"),
    ("min_p", "Min-p", "0-1"),
    ("repeat_penalty", "Repeat penalty", "1 = off"),
    ("max_tokens", "Max tokens", "longest reply"),
    ("seed", "Seed", "empty = random"),
    ("n_ctx", "Context size", "tokens · next load"),
    ("n_threads", "Threads", "empty = auto · next load"),
    ("n_gpu_layers", "GPU layers", "auto or a number · next load"),
]


def _value(settings: AppSettings, name: str) -> str:
    value = getattr(settings, name)
    return "" if value is None else str(value)


def parse_settings(base: AppSettings, raw: dict[str, str]) -> AppSettings:
    """Settings from the form's text fields; raises ValueError with a readable message."""

    def number(
        name: str, label: str, kind: type[float] | type[int], low: float, high: float
    ) -> float | int:
        text = raw[name].strip()
        try:
            value = kind(text)
        except ValueError:
            raise ValueError(f"{label} must be a number, not {text!r}") from None
        if not low <= value <= high:
            raise ValueError(f"{label} must be between {low:g} and {high:g}")
        return value

    seed_text = raw["seed"].strip()
    threads_text = raw["n_threads"].strip()
    gpu_text = raw["n_gpu_layers"].strip().lower()
    settings = replace(
        base,
        temperature=float(number("temperature", "Temperature", float, 0, 5)),
        top_p=float(number("top_p", "Top-p", float, 0, 1)),
        top_k=int(number("top_k", "Top-k", int, 0, 100_000)),
        min_p=float(number("min_p", "Min-p", float, 0, 1)),
        repeat_penalty=float(number("repeat_penalty", "Repeat penalty", float, 0.5, 3)),
        max_tokens=int(number("max_tokens", "Max tokens", int, 1, 1_000_000)),
        seed=int(number("seed", "Seed", int, 0, 2**32 - 1)) if seed_text else None,
        n_ctx=int(number("n_ctx", "Context size", int, 64, 1_048_576)),
        n_threads=int(number("n_threads", "Threads", int, 1, 512)) if threads_text else None,
        n_gpu_layers="auto"
        if gpu_text in ("", "auto")
        else int(number("n_gpu_layers", "GPU layers", int, -1, 10_000)),
        system_prompt=raw.get("system_prompt", base.system_prompt),
    )
    return replace(settings, preset=preset_of(settings))


class SettingsScreen(ModalScreen[AppSettings | None]):
    """Edit the settings; Save returns them, Escape leaves them as they were."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "cancel", "Cancel", id="settings.cancel"),
        Binding("ctrl+s", "save", "Save", id="settings.save", priority=True),
    ]

    def __init__(self, settings: AppSettings, path: str = "") -> None:
        super().__init__()
        self.settings = settings
        self.path = path

    def compose(self) -> ComposeResult:
        options = [(name.capitalize(), name) for name in PRESETS]
        with Vertical(id="settings-dialog", classes="dialog"):
            yield Label("Settings", classes="dialog-title")
            with VerticalScroll(), Grid(id="settings-grid"):
                yield Label("Preset")
                yield Select(
                    options,
                    value=self.settings.preset if self.settings.preset in PRESETS else Select.NULL,
                    prompt="custom",
                    allow_blank=True,
                    id="preset",
                )
                yield Label("deterministic · balanced · creative", classes="field-hint")
                for name, label, hint in FIELDS:
                    yield Label(label)
                    yield Input(_value(self.settings, name), id=name)
                    yield Label(hint, classes="field-hint")
                yield Label("System prompt")
                yield Input(self.settings.system_prompt, id="system_prompt")
                yield Label("for new chats", classes="field-hint")
            yield Label(
                "Sampling applies to the next request; context size, threads and GPU layers "
                "on the next model load. The system prompt is kept for this run only.",
                classes="dialog-note",
            )
            yield Label(self._save_note(), id="settings-target", classes="dialog-note")
            yield Label("", id="settings-error")
            with Horizontal(classes="dialog-buttons"):
                yield Button("Save", variant="primary", id="save")
                yield Button("Cancel", id="cancel")
        yield Footer()

    def _save_note(self) -> str:
        if not self.path:
            return "Save writes the settings file"
        target = save_target(Path(self.path))
        return f"Save: {target.note}" if target.note else f"Save writes {self.path}"

    @on(Select.Changed, "#preset")
    def _preset(self, event: Select.Changed) -> None:
        if not isinstance(event.value, str) or event.value not in PRESETS:
            return
        preset = apply_preset(self.settings, event.value)
        for name in SAMPLING_FIELDS:
            self.query_one(f"#{name}", Input).value = _value(preset, name)

    @on(Button.Pressed, "#save")
    def _save_pressed(self) -> None:
        self.action_save()

    @on(Button.Pressed, "#cancel")
    def _cancel_pressed(self) -> None:
        self.action_cancel()

    def action_save(self) -> None:
        names = [name for name, _, _ in FIELDS] + ["system_prompt"]
        raw = {name: self.query_one(f"#{name}", Input).value for name in names}
        try:
            settings = parse_settings(self.settings, raw)
        except ValueError as exc:
            self.query_one("#settings-error", Label).update(str(exc))
            return
        self.dismiss(settings)

    def action_cancel(self) -> None:
        self.dismiss(None)
