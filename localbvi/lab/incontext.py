"""A base model aligned in context: a preamble and three example exchanges, then the query.

After Lin et al., "The Unlocking Spell on Base LLMs" (ICLR 2024), whose "URIAL" prompt shows
that a base model given a few well-written examples in a plain `# Query:` / `# Answer:` format
answers nearly as well as its instruct sibling. The bundled text (`data/incontext.toml`) is
localbvi's own; a user's `incontext.toml` in the config folder replaces it.

The base model runs in raw completion on the text `build_prompt` makes, stops when it starts
the next `# Query`, with a mild repetition penalty. Nothing here imports Textual.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from importlib import resources
from pathlib import Path
from typing import Any

from localbvi.engine.base import Engine
from localbvi.engine.types import DoneEvent, Event, Message, Sampling, TokenEvent
from localbvi.errors import LocalbviError
from localbvi.paths import config_dir
from localbvi.tomltables import parse_toml, read_toml_text

__all__ = [
    "STOP",
    "InContext",
    "InContextError",
    "answer_stops",
    "build_prompt",
    "bundled_incontext",
    "clean_answer",
    "frame_query",
    "incontext_sampling",
    "load_incontext",
    "load_or_bundled",
    "preamble_text",
    "stream",
    "tidy_answer",
    "user_incontext_path",
]

STOP = ("# Query", "\n```\n\n# ")
"""Where an answer ends: the model starting the next query (small models often write
"# Question:" instead, hence the closed fence followed by any top-level heading)."""
REPEAT_PENALTY = 1.1
"""Base models loop more than instruct ones; a mild penalty keeps answers from repeating."""
_MAX_TEXT = 20_000  # characters per preamble or example: the whole prompt must fit a context


class InContextError(LocalbviError):
    """The in-context examples file is malformed."""


@dataclass(frozen=True)
class InContext:
    """The preamble and the example exchanges that teach a base model to answer."""

    preamble: str
    examples: tuple[tuple[str, str], ...]
    source: str
    """Where they came from: "bundled" or the user's file path."""


def user_incontext_path() -> Path:
    """The user's own preamble and examples (`incontext.toml` in the config folder)."""
    return config_dir() / "incontext.toml"


def _text(raw: dict[str, Any], key: str, where: str, path: Path) -> str:
    value = raw.get(key)
    if not isinstance(value, str) or not value.strip():
        raise InContextError(f"{path}: {where} needs '{key}', a non-empty string in quotes")
    if len(value) > _MAX_TEXT:
        raise InContextError(
            f"{path}: {where} '{key}' is {len(value):,} characters; keep it under "
            f"{_MAX_TEXT:,} so the prompt fits the model's context"
        )
    return value.strip()


def parse_incontext(text: str, path: Path, source: str) -> InContext:
    """The preamble and examples in `text` (TOML read from `path`); readable errors."""
    data = parse_toml(text, path, InContextError)
    unknown = sorted(set(data) - {"preamble", "example"})
    if unknown:
        raise InContextError(
            f"{path}: unknown key {', '.join(repr(k) for k in unknown)}; the file holds a "
            "'preamble' and [[example]] tables with 'query' and 'answer'"
        )
    preamble = _text(data, "preamble", "the file", path)
    raw_examples = data.get("example", [])
    if not isinstance(raw_examples, list) or not all(isinstance(e, dict) for e in raw_examples):
        raise InContextError(f"{path}: write each example under an [[example]] header")
    if not 1 <= len(raw_examples) <= 8:
        raise InContextError(
            f"{path}: {len(raw_examples)} examples; give between 1 and 8 (3 works well)"
        )
    examples = []
    for i, raw in enumerate(raw_examples, start=1):
        extra = sorted(set(raw) - {"query", "answer"})
        if extra:
            raise InContextError(
                f"{path}: example {i} has unknown key {', '.join(repr(k) for k in extra)}; "
                "an example holds 'query' and 'answer'"
            )
        examples.append(
            (_text(raw, "query", f"example {i}", path), _text(raw, "answer", f"example {i}", path))
        )
    return InContext(preamble, tuple(examples), source)


def bundled_incontext() -> InContext:
    """localbvi's own preamble and examples (`data/incontext.toml`)."""
    bundled = resources.files("localbvi.data").joinpath("incontext.toml")
    return parse_incontext(
        bundled.read_text("utf-8"), Path("localbvi/data/incontext.toml"), "bundled"
    )


def load_incontext(path: Path | None = None) -> InContext:
    """The user's `incontext.toml` if there is one, else the bundled preamble and examples."""
    user = path or user_incontext_path()
    text = read_toml_text(user, InContextError)
    if text is not None:
        return parse_incontext(text, user, str(user))
    return bundled_incontext()


def load_or_bundled(path: Path | None = None) -> tuple[InContext, str | None]:
    """Like `load_incontext`, but a broken user file gives the bundled examples and its
    problem (one line naming the file) instead of an error: a chat goes on while the user
    fixes the file, which is only ever read, never rewritten."""
    try:
        return load_incontext(path), None
    except InContextError as exc:
        return bundled_incontext(), f"{exc} (the bundled examples are used until it is fixed)"


def frame_query(question: str) -> str:
    """The zero-shot frame of one query, ending where the answer begins."""
    return f"# Query:\n```\n{question.strip()}\n```\n\n# Answer:\n```\n"


def _exchange(question: str, answer: str) -> str:
    return f"{frame_query(question)}{answer.strip()}\n```\n\n"


def preamble_text(incontext: InContext, messages: Sequence[Message] = ()) -> str:
    """The fixed part every question shares: preamble (+ system message) and the examples.

    It is the prefix `LocalEngine.prime` keeps on disk, so it must not depend on the
    conversation beyond its system message.
    """
    system = "\n\n".join(m.content.strip() for m in messages if m.role == "system")
    parts = [incontext.preamble.strip() + (f"\n\n{system}" if system else ""), "\n\n"]
    parts += [_exchange(q, a) for q, a in incontext.examples]
    return "".join(parts)


def build_prompt(incontext: InContext, messages: Sequence[Message]) -> str:
    """The whole text the base model continues: preamble, examples, the conversation so far
    in the same format, and the last user message framed as the open query.

    A system message is added to the preamble; assistant turns become earlier answers.
    """
    parts = [preamble_text(incontext, messages)]
    turns = [m for m in messages if m.role != "system"]
    if not turns or turns[-1].role != "user":
        raise InContextError("the conversation must end with a user message to answer")
    pending: str | None = None
    for m in turns[:-1]:
        if m.role == "user":
            pending = m.content
        elif pending is not None:
            parts.append(_exchange(pending, m.content))
            pending = None
    parts.append(frame_query(turns[-1].content))
    return "".join(parts)


def clean_answer(text: str) -> str:
    """The answer without the closing fence and the start of the next query."""
    for stop in STOP:
        cut = text.find(stop)
        if cut >= 0:
            text = text[:cut]
    text = text.rstrip()
    if text.endswith("```"):
        text = text[:-3].rstrip()
    return text


def answer_stops(stops: Sequence[str], incontext: InContext | None = None) -> tuple[str, ...]:
    """The stop strings of `stops` that can end an in-context answer without cutting it.

    Stops written for another frame (a few-shot experiment's `"\n\n"`, say) would end the
    answer block before it is written: a stop that is only whitespace, or that occurs in the
    frame itself or in an example answer (the shape the model is taught to write), is left
    out. The frame's own stops (`STOP`) end the answer.
    """
    shapes = [_exchange("Q", "A")]
    if incontext is not None:
        shapes += [answer for _, answer in incontext.examples]
    return tuple(
        s for s in dict.fromkeys(stops) if s.strip() and not any(s in shape for shape in shapes)
    )


def incontext_sampling(sampling: Sampling, incontext: InContext | None = None) -> Sampling:
    """`sampling` with the in-context stop strings (and only those of its own that make sense
    in the frame: `answer_stops`), and the repetition penalty unless set."""
    penalty = sampling.repeat_penalty if sampling.repeat_penalty != 1.0 else REPEAT_PENALTY
    own = answer_stops(sampling.stop, incontext)
    return replace(sampling, stop=(*own, *STOP), repeat_penalty=penalty)


def stream(
    engine: Engine,
    messages: Sequence[Message],
    sampling: Sampling,
    incontext: InContext | None = None,
) -> Iterator[Event]:
    """A base model's answer to the last user message, through in-context examples.

    The shared preamble is primed first where the engine can (a local model restores it from
    the prefix cache on disk); the text is then a raw completion that stops at `# Query`.
    """
    incontext = incontext or load_incontext()
    prompt = build_prompt(incontext, messages)
    prime = getattr(engine, "prime", None)
    if prime is not None:
        prime(preamble_text(incontext, messages))
    return engine.complete(prompt, incontext_sampling(sampling, incontext))


_FENCE = "```"


def _fence_tail(text: str) -> int:
    """How many characters at the end of `text` could still become the answer's closing
    fence (whitespace and backticks only)."""
    return len(text) - len(text.rstrip("` \t\r\n"))


def tidy_answer(events: Iterable[Event]) -> Iterator[Event]:
    """`events` without the fence that closes the answer block before the next `# Query`.

    The stop string ends the text at the next query, but the model writes the closing fence
    first: shown as Markdown it would open an empty code block. Trailing whitespace and
    backticks are held back until a later token shows they belong to the answer (a code
    block's fence followed by `python`, say); at the end one closing fence is dropped, as
    `clean_answer` does.
    """
    held = ""
    last_id = 0
    for event in events:
        if isinstance(event, TokenEvent):
            last_id = event.id
            text = held + event.text
            keep = _fence_tail(text)
            out, held = text[: len(text) - keep], text[len(text) - keep :]
            yield replace(event, text=out)  # empty while held: a cancel is still seen per token
            continue
        if isinstance(event, DoneEvent):
            tail = held.rstrip()
            if tail.endswith(_FENCE):
                tail = tail[: -len(_FENCE)].rstrip()
            if tail:
                yield TokenEvent(text=tail, id=last_id)
        yield event
