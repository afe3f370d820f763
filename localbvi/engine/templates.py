"""Chat-template rendering, safely.

A chat template inside a GGUF is untrusted input: it is rendered only in Jinja's
`ImmutableSandboxedEnvironment`, the way Hugging Face and llama-cpp-python do, so a crafted
template cannot reach Python internals. The variables follow the Hugging Face convention
(`messages`, `bos_token`, `eos_token`, `add_generation_prompt`, `raise_exception`).
"""

from __future__ import annotations

import datetime
from collections.abc import Sequence
from functools import lru_cache
from importlib import resources

import jinja2
from jinja2.sandbox import ImmutableSandboxedEnvironment

from localbvi.engine.types import Message
from localbvi.errors import TemplateError

__all__ = ["bundled_template", "compile_template", "render_chat"]


class _TemplateRaised(Exception):
    """The template itself rejected the conversation (via `raise_exception`)."""


def _raise_exception(message: str) -> None:
    raise _TemplateRaised(message)


def _strftime_now(fmt: str) -> str:
    return datetime.datetime.now().strftime(fmt)


@lru_cache(maxsize=16)
def compile_template(source: str) -> jinja2.Template:
    """Compile a chat template once; a syntax error becomes a TemplateError."""
    env = ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True
    )
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = _strftime_now
    try:
        return env.from_string(source)
    except jinja2.TemplateSyntaxError as exc:
        raise TemplateError(
            f"the model's chat template is broken (line {exc.lineno}: {exc.message}); "
            "set a chat_template override for it in models.toml"
        ) from None


def render_chat(
    source: str,
    messages: Sequence[Message],
    *,
    bos_token: str,
    eos_token: str,
    add_generation_prompt: bool = True,
) -> str:
    """Render `messages` with a chat template, exactly as the model will receive them."""
    template = compile_template(source)
    try:
        return template.render(
            messages=[{"role": m.role, "content": m.content} for m in messages],
            bos_token=bos_token,
            eos_token=eos_token,
            add_generation_prompt=add_generation_prompt,
        )
    except _TemplateRaised as exc:
        raise TemplateError(f"the chat template refused this conversation: {exc}") from None
    except jinja2.TemplateError as exc:
        raise TemplateError(f"the chat template failed to render: {exc}") from None
    except Exception as exc:  # sandbox violations and template bugs alike
        raise TemplateError(
            f"the chat template failed to render ({type(exc).__name__}: {exc})"
        ) from None


def bundled_template(name: str) -> str:
    """The text of a template shipped in `localbvi/data/<name>.jinja` (e.g. "gemma3")."""
    try:
        return resources.files("localbvi.data").joinpath(f"{name}.jinja").read_text("utf-8")
    except FileNotFoundError:
        raise TemplateError(f"no bundled chat template named {name!r}") from None
