"""The prompt X-ray: the exact text a model receives, special tokens highlighted."""

from __future__ import annotations

from rich.text import Text

from localbvi.lab.compare import Prepared

__all__ = ["SPECIAL_STYLE", "xray_text"]

SPECIAL_STYLE = "bold black on yellow"
_BOUNDARY_STYLES = ("on #1f3b57", "on #4a2a4f")


def xray_text(prepared: Prepared, *, boundaries: bool = False) -> Text:
    """`prepared.text` as Rich text: special tokens (BOS, `<start_of_turn>`, `<|im_start|>`,
    EOS…) highlighted; with `boundaries`, every token on its own alternating background.

    Boundaries need the token pieces to spell the text exactly; where they do not (a
    tokenizer that normalises text), only the special tokens are marked.
    """
    pieces = [t.text for t in prepared.tokens]
    if boundaries and "".join(pieces) == prepared.text:
        out = Text()
        for index, token in enumerate(prepared.tokens):
            style = SPECIAL_STYLE if token.special else _BOUNDARY_STYLES[index % 2]
            out.append(token.text, style=style)
        return out
    out = Text(prepared.text)
    specials = sorted({t.text for t in prepared.tokens if t.special and t.text}, key=len)
    for special in reversed(specials):  # longest first: `<|im_start|>` before `<`
        start = 0
        while (found := prepared.text.find(special, start)) >= 0:
            out.stylize(SPECIAL_STYLE, found, found + len(special))
            start = found + len(special)
    return out
