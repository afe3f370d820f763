"""Chat templates rendered with bounded results, in a helper process with time and memory limits.

A chat template is untrusted input (it comes inside a GGUF from the Hub). Jinja's
`ImmutableSandboxedEnvironment` keeps it away from Python internals but not from the machine's
resources: `'x' * 10**10`, nested `range`s, huge `center` widths or exponential macros can take
gigabytes or run forever. Two layers bound that:

- `BoundedEnvironment` caps what one step may build, before it is built where that is cheap to
  know (`*`, `**`, `+`, `%`, `str.format`, width-taking methods and filters, `join`, `replace`,
  `lipsum`) and after every call and filter otherwise; the output stops at a size limit.
- `render` runs under a 2 s timer, and `main` (this file run as a script by
  `localbvi.engine.templates`) serves renders in a process whose address space is capped, so a
  template that gets past the caps fails with a message instead of taking its caller down.

This module imports only the standard library and Jinja, so the helper starts quickly.
"""

from __future__ import annotations

import datetime
import inspect
import json
import re
import signal
import string
import sys
import threading
import types
from collections.abc import Callable, Iterable, Mapping
from functools import lru_cache, update_wrapper
from typing import IO, Any, NoReturn, TypeGuard

import jinja2
from jinja2 import nodes
from jinja2.ext import Extension
from jinja2.parser import Parser
from jinja2.runtime import Macro
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.utils import generate_lorem_ipsum

__all__ = [
    "MAX_ITEMS",
    "MAX_OUTPUT_CHARS",
    "MAX_SOURCE_CHARS",
    "MEMORY_LIMIT_BYTES",
    "TIME_LIMIT_S",
    "BoundedEnvironment",
    "LimitExceeded",
    "main",
    "read_frame",
    "render",
    "text_size",
    "write_frame",
]

TIME_LIMIT_S = 2.0
"""Compile plus render; a real chat template takes about a millisecond."""
MEMORY_LIMIT_BYTES = 256 * 1024 * 1024
"""Address space the helper process may add to what Python and Jinja map at its start."""
MAX_OUTPUT_CHARS = 4_000_000
"""Largest text a template may build (any one value, and the prompt), beyond twice its input."""
MAX_ITEMS = 1_000_000
"""Largest list, tuple or dict a template may build."""
MAX_SOURCE_CHARS = 1_000_000
"""Real chat templates are under 50 kB; a megabyte of template is not one."""
_MAX_INT_BITS = 100_000  # ~30,000 decimal digits: a larger integer is only ever an attack
_MAX_INDENT = 1_000  # tojson's indent
_MAX_MESSAGE_CHARS = 500  # an error text echoed from the template


class LimitExceeded(Exception):
    """A template step would build more than the limits allow."""


class RenderTimeout(BaseException):
    """The render ran out of time.

    A BaseException so that Jinja's own `except Exception` (constant folding at compile time
    catches everything) cannot swallow it.
    """


class _TemplateRaised(Exception):
    """The template itself rejected the conversation (via `raise_exception`)."""


def _raise_exception(message: str) -> NoReturn:
    raise _TemplateRaised(message)


def _strftime_now(fmt: str) -> str:
    return datetime.datetime.now().strftime(fmt)


# A printf-style conversion: its width and precision are the numbers that make text grow.
_PRINTF = re.compile(r"%(?:\([^)]*\))?[-#0 +]*(\*|\d+)?(?:\.(\*|\d+))?")
_DIGITS = re.compile(r"\d+")


def _is_int(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


class _GenerationTag(Extension):
    """Hugging Face's `{% generation %}…{% endgeneration %}` (it marks training targets)."""

    tags = {"generation"}  # noqa: RUF012 - the type Jinja declares

    def parse(self, parser: Parser) -> list[nodes.Node]:
        parser.stream.skip(1)
        return parser.parse_statements(("name:endgeneration",), drop_needle=True)


def _tojson(
    value: Any,
    ensure_ascii: bool = False,
    indent: int | str | None = None,
    separators: tuple[str, str] | None = None,
    sort_keys: bool = False,
) -> str:
    """Hugging Face's `tojson` (keys in order, no HTML escaping), not Jinja's HTML one."""
    return json.dumps(
        value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys
    )


class BoundedEnvironment(ImmutableSandboxedEnvironment):
    """The sandbox, with every step that could grow without bound checked first.

    Otherwise it is the environment Hugging Face transformers and llama-cpp-python give chat
    templates: `loopcontrols` ({% break %}), the `generation` tag, their `tojson`.
    """

    intercepted_binops = frozenset({"+", "*", "**", "%"})

    def __init__(self) -> None:
        super().__init__(
            trim_blocks=True,
            lstrip_blocks=True,
            keep_trailing_newline=True,
            extensions=[_GenerationTag, "jinja2.ext.loopcontrols"],
        )
        self.max_chars = MAX_OUTPUT_CHARS
        """The size cap for this render (`render` raises it for long conversations)."""
        self.globals["raise_exception"] = _raise_exception
        self.globals["strftime_now"] = _strftime_now
        self.globals["lipsum"] = self._lipsum
        self.filters["tojson"] = _tojson
        self.filters = {name: self._bounded_filter(name, f) for name, f in self.filters.items()}

    # -- checks -----------------------------------------------------------------------------

    def _too_big(self, what: str, size: int, unit: str = "characters") -> LimitExceeded:
        limit = self.max_chars if unit == "characters" else MAX_ITEMS
        return LimitExceeded(
            f"{what} would make {size:,} {unit} (the limit is about {limit / 1e6:.1f} million)"
        )

    def _check_chars(self, what: str, size: int) -> None:
        if size > self.max_chars:
            raise self._too_big(what, size)

    def _check_width(self, what: str, width: object) -> None:
        if _is_int(width) and abs(width) > self.max_chars:
            raise self._too_big(what, abs(width))

    def check(self, value: Any, what: str) -> Any:
        """`value` if it is within the limits; else LimitExceeded naming `what` made it."""
        if isinstance(value, str):
            self._check_chars(what, len(value))
        elif isinstance(value, (list, tuple, dict, set, frozenset)):
            if len(value) > MAX_ITEMS:
                raise self._too_big(what, len(value), "items")
        elif _is_int(value) and value.bit_length() > _MAX_INT_BITS:
            raise LimitExceeded(f"{what} would make an integer of {value.bit_length():,} bits")
        return value

    def _check_repeat(self, seq: object, times: object, what: str) -> None:
        if not _is_int(times) or not isinstance(seq, (str, list, tuple)):
            return
        size = len(seq) * max(0, times)
        if isinstance(seq, str):
            self._check_chars(what, size)
        elif size > MAX_ITEMS:
            raise self._too_big(what, size, "items")

    def _check_printf(self, fmt: str, args: object, what: str) -> None:
        star = False
        for match in _PRINTF.finditer(fmt):
            for number in match.groups():
                if number == "*":
                    star = True
                elif number and (len(number) > 9 or int(number) > self.max_chars):
                    raise LimitExceeded(f"{what} asks for a field {number} characters wide")
        if star:
            values = args if isinstance(args, tuple) else (args,)
            for value in values:
                self._check_width(what, value)

    def _check_format(self, fmt: str, args: Iterable[object], what: str) -> None:
        """Widths and precisions in `str.format` specs, nested ones included."""
        try:
            fields = list(string.Formatter().parse(fmt))
        except ValueError:
            return  # format() itself says what is wrong
        nested = False
        for _, _, spec, _ in fields:
            for number in _DIGITS.findall(spec or ""):
                if len(number) > 9 or int(number) > self.max_chars:
                    raise LimitExceeded(f"{what} asks for a field {number} characters wide")
            nested = nested or "{" in (spec or "")
        if nested:
            for value in args:
                self._check_width(what, value)
                if isinstance(value, str):
                    for number in _DIGITS.findall(value):
                        if len(number) > 9 or int(number) > self.max_chars:
                            raise LimitExceeded(f"{what} asks for a field {number} wide")

    def _joined(self, items: object, sep: object, what: str) -> list[Any]:
        """`items` as a list, refused if joining it with `sep` would be too long."""
        if not isinstance(items, Iterable) or isinstance(items, (str, Mapping)):
            return items  # type: ignore[return-value]  # join itself handles these
        listed = []
        size = 0
        for item in items:
            listed.append(item)
            if len(listed) > MAX_ITEMS:
                raise self._too_big(what, len(listed), "items")
            if isinstance(item, str):
                size += len(item)
        size += len(sep) * max(0, len(listed) - 1) if isinstance(sep, str) else 0
        self._check_chars(what, size)
        return listed

    def _check_replace(self, s: object, old: object, new: object, count: object, what: str) -> None:
        if not (isinstance(s, str) and isinstance(old, str) and isinstance(new, str)):
            return
        hits = s.count(old) if old else len(s) + 1
        if _is_int(count) and count >= 0:
            hits = min(hits, count)
        self._check_chars(what, len(s) + hits * (len(new) - len(old)))

    # -- the hooks the sandbox calls --------------------------------------------------------

    def call_binop(
        self, context: jinja2.runtime.Context, operator: str, left: Any, right: Any
    ) -> Any:
        what = f"the {operator} operator"
        if operator == "*":
            self._check_repeat(left, right, what)
            self._check_repeat(right, left, what)
            if _is_int(left) and _is_int(right):
                bits = left.bit_length() + right.bit_length()
                if bits > _MAX_INT_BITS:
                    raise LimitExceeded(f"{what} would make an integer of about {bits:,} bits")
        elif operator == "**":
            big = _is_int(left) and _is_int(right) and right > 0 and abs(left) > 1
            if big and (right > _MAX_INT_BITS or left.bit_length() * right > _MAX_INT_BITS):
                raise LimitExceeded(f"{what} would make an integer too large to hold")
        elif operator == "+":
            if isinstance(left, str) and isinstance(right, str):
                self._check_chars(what, len(left) + len(right))
            elif (
                isinstance(left, (list, tuple))
                and isinstance(right, (list, tuple))
                and len(left) + len(right) > MAX_ITEMS
            ):
                raise self._too_big(what, len(left) + len(right), "items")
        elif operator == "%" and isinstance(left, str):
            self._check_printf(left, right, what)
        return self.check(super().call_binop(context, operator, left, right), what)

    def call(
        __self,
        __context: jinja2.runtime.Context,
        __obj: Any,
        *args: Any,
        **kwargs: Any,
    ) -> Any:
        name = getattr(__obj, "name" if isinstance(__obj, Macro) else "__name__", "a function")
        what = f"{name}()"
        if isinstance(__obj, types.BuiltinMethodType) and isinstance(__obj.__self__, str):
            args = __self._check_str_method(__obj.__self__, name, args, kwargs)
        result = super().call(__context, __obj, *args, **kwargs)
        return __self.check(result, what)

    def _check_str_method(
        self, s: str, name: str, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> tuple[Any, ...]:
        what = f"str.{name}()"
        first = args[0] if args else None
        if name in ("center", "ljust", "rjust", "zfill"):
            self._check_width(what, first if args else kwargs.get("width"))
        elif name == "expandtabs":
            tab = first if args else kwargs.get("tabsize", 8)
            if _is_int(tab):
                self._check_chars(what, len(s) + s.count("\t") * max(0, tab))
        elif name == "replace" and len(args) >= 2:
            count = args[2] if len(args) > 2 else kwargs.get("count", -1)
            self._check_replace(s, args[0], args[1], count, what)
        elif name == "join" and args:
            return (self._joined(first, s, what), *args[1:])
        elif name == "translate" and isinstance(first, Mapping):
            longest = max((len(v) for v in first.values() if isinstance(v, str)), default=1)
            self._check_chars(what, len(s) * longest)
        return args

    def wrap_str_format(self, value: Any) -> Callable[..., str] | None:
        wrapped = super().wrap_str_format(value)
        if wrapped is None:
            return None
        fmt: str = value.__self__
        what = f"str.{value.__name__}()"
        is_map = value.__name__ == "format_map"

        def bounded(*args: Any, **kwargs: Any) -> str:
            values: list[object] = [*args, *kwargs.values()]
            if is_map and args and isinstance(args[0], Mapping):
                values = list(args[0].values())
            self._check_format(fmt, values, what)
            return self.check(wrapped(*args, **kwargs), what)  # type: ignore[no-any-return]

        return update_wrapper(bounded, wrapped)

    def _lipsum(self, n: int = 5, html: bool = True, min: int = 20, max: int = 100) -> str:
        words = (n if _is_int(n) else 0) * (max if _is_int(max) else 0)
        self._check_chars("lipsum()", words * 12)  # ~12 characters a word, HTML included
        return generate_lorem_ipsum(n=n, html=html, min=min, max=max)

    def _bounded_filter(self, name: str, func: Callable[..., Any]) -> Callable[..., Any]:
        """`func` with its result checked, and its arguments first where they decide the size."""
        precheck = _FILTER_CHECKS.get(name)
        plain = inspect.unwrap(func)
        signature = inspect.signature(plain) if precheck else None
        # Jinja passes a context first to a filter marked for one; a sync/async pair is marked
        # on the outside only, so that argument is not in the plain function's signature.
        skip = int(hasattr(func, "jinja_pass_arg")) - int(hasattr(plain, "jinja_pass_arg"))
        what = f"the {name} filter"

        def bounded(*args: Any, **kwargs: Any) -> Any:
            if signature is not None and precheck is not None:
                try:
                    bound = signature.bind(*args[skip:], **kwargs)
                except TypeError:
                    pass  # the call itself will say which argument is wrong
                else:
                    bound.apply_defaults()
                    precheck(self, bound.arguments, what)
                    args, kwargs = (*args[:skip], *bound.args), bound.kwargs
            return self.check(func(*args, **kwargs), what)

        return update_wrapper(bounded, func)  # keeps Jinja's pass_context & co. markers


# Filter argument checks, by filter name: they see the bound arguments and may replace them.
def _f_center(env: BoundedEnvironment, a: dict[str, Any], what: str) -> None:
    env._check_width(what, a.get("width"))


def _f_indent(env: BoundedEnvironment, a: dict[str, Any], what: str) -> None:
    s, width = a.get("s"), a.get("width")
    if isinstance(s, str):
        lines = s.count("\n") + 1
        per_line = len(width) if isinstance(width, str) else width if _is_int(width) else 0
        env._check_chars(what, len(s) + lines * max(0, per_line))


def _f_wordwrap(env: BoundedEnvironment, a: dict[str, Any], what: str) -> None:
    s, width, wrap = a.get("s"), a.get("width"), a.get("wrapstring")
    if isinstance(s, str) and isinstance(wrap, str) and _is_int(width):
        env._check_chars(what, len(s) + (len(s) // max(1, width) + 1) * len(wrap))


def _f_format(env: BoundedEnvironment, a: dict[str, Any], what: str) -> None:
    value = a.get("value")
    if isinstance(value, str):
        env._check_printf(value, a.get("kwargs") or a.get("args", ()), what)


def _f_join(env: BoundedEnvironment, a: dict[str, Any], what: str) -> None:
    a["value"] = env._joined(a.get("value"), a.get("d"), what)


def _f_replace(env: BoundedEnvironment, a: dict[str, Any], what: str) -> None:
    count = a.get("count")
    env._check_replace(a.get("s"), a.get("old"), a.get("new"), -1 if count is None else count, what)


def _f_slice(env: BoundedEnvironment, a: dict[str, Any], what: str) -> None:
    slices = a.get("slices")
    if _is_int(slices) and slices > MAX_ITEMS:
        raise env._too_big(what, slices, "items")


def _f_batch(env: BoundedEnvironment, a: dict[str, Any], what: str) -> None:
    count = a.get("linecount")
    if _is_int(count) and count > MAX_ITEMS:
        raise env._too_big(what, count, "items")


def _f_tojson(env: BoundedEnvironment, a: dict[str, Any], what: str) -> None:
    indent = a.get("indent")
    size = len(indent) if isinstance(indent, str) else indent if _is_int(indent) else 0
    if size > _MAX_INDENT:
        raise LimitExceeded(f"{what} asks for an indent of {size:,} (the limit is {_MAX_INDENT})")


_FILTER_CHECKS: dict[str, Callable[[BoundedEnvironment, dict[str, Any], str], None]] = {
    "center": _f_center,
    "indent": _f_indent,
    "wordwrap": _f_wordwrap,
    "format": _f_format,
    "join": _f_join,
    "replace": _f_replace,
    "slice": _f_slice,
    "batch": _f_batch,
    "tojson": _f_tojson,
}

_ENV = BoundedEnvironment()


@lru_cache(maxsize=16)
def _compile(source: str) -> jinja2.Template:
    return _ENV.from_string(source)


def _on_alarm(signum: int, frame: object) -> None:
    raise RenderTimeout


def _shorten(text: str) -> str:
    return text if len(text) <= _MAX_MESSAGE_CHARS else text[: _MAX_MESSAGE_CHARS - 1] + "…"


def render(
    source: str, variables: Mapping[str, Any], *, time_limit: float | None = TIME_LIMIT_S
) -> dict[str, Any]:
    """Render `source` with `variables`: `{"text": …}` or `{"error": kind, …}`, never a raise.

    Error kinds: syntax (with `line`), raised (the template refused), limit, timeout, memory,
    failed (any other error, with `message`). The timer works only in the main thread (the
    helper process's); elsewhere `time_limit` is ignored.
    """
    if len(source) > MAX_SOURCE_CHARS:
        return {"error": "limit", "message": f"the template is {len(source):,} characters long"}
    input_chars = len(source) + text_size(variables)
    _ENV.max_chars = MAX_OUTPUT_CHARS + 2 * input_chars
    timed = time_limit is not None and threading.current_thread() is threading.main_thread()
    try:
        if timed:
            previous = signal.signal(signal.SIGALRM, _on_alarm)
            signal.setitimer(signal.ITIMER_REAL, time_limit)  # type: ignore[arg-type]
        try:
            template = _compile(source)
            parts: list[str] = []
            size = 0
            for chunk in template.generate(**variables):
                size += len(chunk)
                _ENV._check_chars("the rendered prompt", size)
                parts.append(chunk)
            return {"text": "".join(parts)}
        finally:
            if timed:
                signal.setitimer(signal.ITIMER_REAL, 0)
                signal.signal(signal.SIGALRM, previous)
    except RenderTimeout:
        return {"error": "timeout", "seconds": time_limit}
    except MemoryError:
        return {"error": "memory"}
    except jinja2.TemplateSyntaxError as exc:
        return {"error": "syntax", "line": exc.lineno, "message": _shorten(exc.message or "")}
    except _TemplateRaised as exc:
        return {"error": "raised", "message": _shorten(str(exc))}
    except LimitExceeded as exc:
        return {"error": "limit", "message": _shorten(str(exc))}
    except jinja2.TemplateError as exc:
        return {"error": "failed", "message": _shorten(str(exc))}
    except Exception as exc:  # sandbox violations and template bugs alike
        return {"error": "failed", "message": _shorten(f"{type(exc).__name__}: {exc}")}


def text_size(value: object, depth: int = 0) -> int:
    """Characters in every string inside `value` (render variables: they set the limits)."""
    if isinstance(value, str):
        return len(value)
    if depth < 4 and isinstance(value, Mapping):
        return sum(text_size(v, depth + 1) for v in value.values())
    if depth < 4 and isinstance(value, (list, tuple)):
        return sum(text_size(v, depth + 1) for v in value)
    return 0


# -- the helper process ---------------------------------------------------------------------
# Frames: a 4-byte big-endian length, then that many bytes of JSON (UTF-8, lone surrogates
# passed through: a conversation is whatever the user typed).


def write_frame(stream: IO[bytes], message: object) -> None:
    body = json.dumps(message, ensure_ascii=False).encode("utf-8", "surrogatepass")
    stream.write(len(body).to_bytes(4, "big") + body)
    stream.flush()


def read_frame(stream: IO[bytes], limit: int | None = None) -> Any:
    """The next message, or None at end of stream (or past `limit` bytes: a broken peer)."""
    head = _read_exact(stream, 4)
    if head is None:
        return None
    size = int.from_bytes(head, "big")
    if limit is not None and size > limit:
        return None
    body = _read_exact(stream, size)
    return None if body is None else json.loads(body.decode("utf-8", "surrogatepass"))


def _read_exact(stream: IO[bytes], n: int) -> bytes | None:
    """Read `n` bytes in chunks (a claimed length is never allocated at once)."""
    buf = bytearray()
    while len(buf) < n:
        chunk = stream.read(min(n - len(buf), 1 << 20))
        if not chunk:
            return None
        buf += chunk
    return bytes(buf)


def _limit_memory(n_bytes: int) -> None:
    """Cap the address space at what is mapped now plus `n_bytes`.

    Relative, not absolute: some systems map a 200 MB locale archive into every process.
    """
    try:
        import resource

        with open("/proc/self/statm", encoding="ascii") as f:
            mapped = int(f.read().split()[0]) * resource.getpagesize()
    except (ImportError, OSError, ValueError, IndexError):
        mapped = 0  # not Linux: RLIMIT_AS is then often unenforced anyway
    try:
        _, hard = resource.getrlimit(resource.RLIMIT_AS)
        cap = mapped + n_bytes
        cap = cap if hard == resource.RLIM_INFINITY else min(cap, hard)
        resource.setrlimit(resource.RLIMIT_AS, (cap, hard))
    except (NameError, ValueError, OSError, AttributeError):  # Windows: no resource module
        pass


def main(argv: list[str]) -> int:
    """Serve renders over stdin/stdout until stdin closes: `template_sandbox.py MEMORY SECONDS`."""
    memory, seconds = int(argv[1]), float(argv[2])
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is for the caller, which kills us
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    _limit_memory(memory)
    write_frame(stdout, {"ready": True})
    while True:
        try:
            request = read_frame(stdin)
            if request is None:
                return 0
            variables = {k: request[k] for k in ("messages", "bos_token", "eos_token")}
            variables["add_generation_prompt"] = request["add_generation_prompt"]
            reply = render(request["source"], variables, time_limit=seconds)
            write_frame(stdout, reply)
        except MemoryError:
            write_frame(stdout, {"error": "memory"})
        except (BrokenPipeError, OSError):
            return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
