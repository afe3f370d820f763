"""Settings: sampling (with presets and seed), loading (next load) and server timeouts.

The fields come from the one definition of each setting (`localbvi.tui.state.form_fields`):
label, help (the field's tooltip), range. Save writes the settings file (the app does, with
`localbvi.settings.save_settings`). When that file could not be read, the dialog says so up
front: Save leaves it untouched and writes a new file beside it.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from textual import events, on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Grid, Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Button, Footer, Input, Label, Select

from localbvi.fieldspec import Spec
from localbvi.settings import save_target
from localbvi.tui.state import PRESETS, AppSettings, apply_preset, form_fields

__all__ = ["SettingsScreen", "parse_settings"]


def _text(value: object) -> str:
    return "" if value is None else str(value)


def _hint(table: str, field: Spec) -> str:
    """The field's accepted values in brief: "0-5", "auto or ≥ -1", "auto, on or off"."""
    allowed = list(field.choices)
    if field.number:
        lo, hi = (f"{v:.10g}" for v in (field.lo or 0, field.hi or 0))
        allowed.append(f"{lo}-{hi}" if field.hi is not None else f"≥ {lo}")
    parts = [", ".join(allowed[:-1]) + " or " + allowed[-1] if len(allowed) > 1 else allowed[0]]
    if field.optional:
        parts.append("empty = auto")
    if table == "engine":
        parts.append("next load")
    return " · ".join(parts)


def parse_settings(base: AppSettings, raw: dict[str, str]) -> AppSettings:
    """Settings from the form's text fields; raises ValueError with a readable message."""
    values = {}
    for _, field in form_fields():
        if field.name not in raw:
            continue  # not on this form: the value stays
        try:
            values[field.name] = field.parse(raw[field.name])
        except ValueError as exc:
            text = raw[field.name].strip()
            raise ValueError(f"{field.label} must be {exc}, not {text!r}") from None
    return AppSettings(base.settings, raw.get("system_prompt", base.system_prompt), **values)


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
                for table, field in form_fields():
                    yield Label(field.label)
                    value = _text(self.settings.value(field.name))
                    yield Input(value, id=field.name, tooltip=field.help)
                    yield Label(_hint(table, field), classes="field-hint")
                yield Label("System prompt")
                yield Input(self.settings.system_prompt, id="system_prompt")
                yield Label("for new chats", classes="field-hint")
            yield Label(
                "Sampling applies to the next request; loading settings and timeouts on the "
                "next model load. The system prompt is kept for this run only.",
                classes="dialog-note",
            )
            yield Label(self._save_note(), id="settings-target", classes="dialog-note")
            yield Label("", id="field-help", classes="dialog-note")
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

    def on_descendant_focus(self, event: events.DescendantFocus) -> None:
        """The focused field's help, in full, under the form."""
        help_text = event.widget.tooltip if isinstance(event.widget, Input) else ""
        self.query_one("#field-help", Label).update(str(help_text or ""))

    @on(Select.Changed, "#preset")
    def _preset(self, event: Select.Changed) -> None:
        if not isinstance(event.value, str) or event.value not in PRESETS:
            return
        preset = apply_preset(self.settings, event.value)
        for name in PRESETS[event.value]:
            self.query_one(f"#{name}", Input).value = _text(preset.value(name))

    @on(Button.Pressed, "#save")
    def _save_pressed(self) -> None:
        self.action_save()

    @on(Button.Pressed, "#cancel")
    def _cancel_pressed(self) -> None:
        self.action_cancel()

    def action_save(self) -> None:
        names = [field.name for _, field in form_fields()] + ["system_prompt"]
        raw = {name: self.query_one(f"#{name}", Input).value for name in names}
        try:
            settings = parse_settings(self.settings, raw)
        except ValueError as exc:
            self.query_one("#settings-error", Label).update(str(exc))
            return
        self.dismiss(settings)

    def action_cancel(self) -> None:
        self.dismiss(None)
