"""The completion-mode document: a text area that shows the model's text in its own style."""

from __future__ import annotations

from typing import ClassVar

from textual.strip import Strip
from textual.widgets import TextArea
from textual.widgets.text_area import Document

__all__ = ["CompletionDocument", "shift_spans"]

Span = tuple[int, int]
"""[start, end) character offsets of model-written text."""

GENERATED = "localbvi.generated"


def shift_spans(spans: list[Span], old: str, new: str) -> list[Span]:
    """Move the spans through the edit that turned `old` into `new`.

    The edit is found as the change between the common prefix and suffix, which covers
    typing, deleting, pasting, undo and redo alike. Text typed inside a span splits it.
    """
    limit = min(len(old), len(new))
    start = 0
    while start < limit and old[start] == new[start]:
        start += 1
    suffix = 0
    while suffix < limit - start and old[-1 - suffix] == new[-1 - suffix]:
        suffix += 1
    old_end = len(old) - suffix
    new_end = len(new) - suffix
    delta = new_end - old_end
    out: list[Span] = []
    for a, b in spans:
        if b <= start:
            out.append((a, b))
        elif a >= old_end:
            out.append((a + delta, b + delta))
        else:
            # The edit overlaps this span: keep the untouched parts on both sides.
            if a < start:
                out.append((a, start))
            if b > old_end:
                out.append((new_end, b + delta))
    return [(a, b) for a, b in out if b > a]


class CompletionDocument(TextArea):
    """A TextArea whose model-written spans keep a distinct style while the user edits."""

    COMPONENT_CLASSES: ClassVar[set[str]] = {"completion-document--generated"}

    DEFAULT_CSS = """
    CompletionDocument .completion-document--generated {
        color: $text-accent;
        text-style: italic;
    }
    """

    def __init__(self, text: str = "", *, id: str | None = None) -> None:
        super().__init__(text, id=id, soft_wrap=True, show_line_numbers=False)
        self.generated: list[Span] = []
        self._last_text = text

    def append_generated(self, text: str) -> None:
        """Add model text at the end of the document, marked as generated."""
        start = len(self.text)
        end_location = self.document.end
        self._last_text = self.text + text
        self.generated = _merge([*self.generated, (start, start + len(text))])
        self.insert(text, end_location, maintain_selection_offset=False)
        self.move_cursor(self.document.end)

    def generated_text(self) -> str:
        text = self.text
        return "".join(text[a:b] for a, b in self.generated)

    def _on_text_area_changed(self, event: TextArea.Changed) -> None:
        text = self.text
        if text != self._last_text:
            self.generated = shift_spans(self.generated, self._last_text, text)
            self._last_text = text
            self._build_highlight_map()

    def _build_highlight_map(self) -> None:
        super()._build_highlight_map()
        spans = getattr(self, "generated", None)
        if not spans:
            return
        document = self.document
        if not isinstance(document, Document):
            return
        for a, b in spans:
            start = document.get_location_from_index(a)
            end = document.get_location_from_index(b)
            for row in range(start[0], end[0] + 1):
                line = document.get_line(row)
                col_a = start[1] if row == start[0] else 0
                col_b = end[1] if row == end[0] else len(line)
                if col_b <= col_a:
                    continue
                byte_a = len(line[:col_a].encode())
                byte_b = len(line[:col_b].encode())
                self._highlights[row].append((byte_a, byte_b, GENERATED))

    def render_line(self, y: int) -> Strip:
        theme = self._theme
        if theme is not None and GENERATED not in theme.syntax_styles:
            style = self.get_component_rich_style("completion-document--generated", partial=True)
            theme.syntax_styles = {**theme.syntax_styles, GENERATED: style}
        return super().render_line(y)

    def on_mount(self) -> None:
        self.watch(self.app, "theme", self._theme_changed, init=False)

    def _theme_changed(self, _theme: str) -> None:
        # The generated style comes from the app theme: rebuild it on the next render.
        if self._theme is not None:
            styles = dict(self._theme.syntax_styles)
            styles.pop(GENERATED, None)
            self._theme.syntax_styles = styles
        self.refresh()


def _merge(spans: list[Span]) -> list[Span]:
    out: list[Span] = []
    for a, b in sorted(spans):
        if out and a <= out[-1][1]:
            out[-1] = (out[-1][0], max(b, out[-1][1]))
        else:
            out.append((a, b))
    return out
