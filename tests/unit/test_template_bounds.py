"""Hostile chat templates: each one ends in one readable TemplateError, promptly and cheaply.

Every case renders in a fresh child process (`bounded_run`), which reports what a user would
get: the error and its message, how long it took, the peak memory of the process (and of the
template helper it waited for), and whether anything it started was left running.
"""

from __future__ import annotations

import json
import os
import signal
import struct
import sys
import textwrap
import time
from pathlib import Path

import pytest
from bounded_run import Outcome, python

from localbvi.engine import template_sandbox
from localbvi.engine.templates import keep_llama_cpp_from_compiling_templates, render_chat
from localbvi.engine.types import Message
from localbvi.errors import TemplateError

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="measures through /proc")

GEMMA = Path(__file__).resolve().parents[2] / "localbvi" / "data" / "gemma3.jinja"
GEMMA_RENDERED = (
    "<bos><start_of_turn>user\nBe helpful.\n\nHello<end_of_turn>\n<start_of_turn>model\n"
)
HELLO = [Message("system", "Be helpful."), Message("user", "Hello")]
FIX = "set a chat_template override for this model in models.toml"

# Renders the template in argv[1] (a file) and prints the result or the LocalbviError as JSON.
RENDER = textwrap.dedent(
    """
    import json, sys, time
    from localbvi.engine.templates import keep_llama_cpp_from_compiling_templates, render_chat
    from localbvi.engine.types import Message
    from localbvi.errors import LocalbviError
    source = open(sys.argv[1], encoding="utf-8").read()
    messages = [Message("system", "Be helpful."), Message("user", "Hello")]
    for _ in range(int(sys.argv[2]) if len(sys.argv) > 2 else 1):
        start = time.monotonic()
        try:
            text = render_chat(source, messages, bos_token="<bos>", eos_token="<eos>")
        except LocalbviError as exc:
            result = {"error": type(exc).__name__, "message": str(exc)}
        else:
            result = {"text": text[:300], "length": len(text)}
        result["seconds"] = time.monotonic() - start
        print(json.dumps(result), flush=True)
    """
)


def hostile_templates() -> dict[str, tuple[str, str]]:
    """The corpus: name -> (template, what its error says), one or more per resource class."""
    fanout = (
        "{% macro a(n) %}{% if n > 0 %}{{ a(n - 1) }}{{ a(n - 1) }}{% else %}xxxxxxxx"
        "{% endif %}{% endmacro %}"
    )
    return {
        # time: loops that build nothing
        "nested ranges": (
            "{% for a in range(100000) %}{% for b in range(100000) %}{% endfor %}{% endfor %}",
            "did not finish rendering in 2 s",
        ),
        "sorting in a loop": (
            "{% set l = range(100000)|list %}{% for i in range(100000) %}{{ l|sort|length }}"
            "{% endfor %}",
            "did not finish rendering in 2 s",
        ),
        "macro fan-out": (fanout + "{{ a(40) }}", "did not finish rendering in 2 s"),
        "endless recursion": (
            "{% macro a(n) %}{{ a(n + 1) }}{% endmacro %}{{ a(0) }}",
            "recursion",
        ),
        # size: one step that builds gigabytes
        "string times 10**10": ("{{ 'x' * 10**10 }}", "10,000,000,000 characters"),
        "folded string times a literal": ("{{ 'x' * 10000000000 }}", "10,000,000,000 characters"),
        "list multiplication": ("{{ [1] * 10**9 }}", "1,000,000,000 items"),
        "range list multiplication": ("{{ (range(100000)|list * 100000)|length }}", "items"),
        "huge power": ("{{ 10 ** (10 ** 10) }}", "integer too large"),
        "squaring in a loop": (
            "{% set ns = namespace(x=10) %}{% for i in range(40) %}{% set ns.x = ns.x * ns.x %}"
            "{% endfor %}{{ ns.x > 0 }}",
            "bits",
        ),
        "str.format width": ("{{ '{:>1000000000}'.format('x') }}", "1000000000 characters wide"),
        "nested format width": ("{{ '{:>{}}'.format('x', 10**9) }}", "1,000,000,000 characters"),
        "printf width": ("{{ '%1000000000s' % 'x' }}", "1000000000 characters wide"),
        "printf star width": ("{{ '%*s' % (10**9, 'x') }}", "1,000,000,000 characters"),
        "format filter width": ("{{ '%1000000000s'|format('x') }}", "characters wide"),
        "center method": ("{{ 'x'.center(10**9) }}", "str.center() would make 1,000,000,000"),
        "center filter": ("{{ 'x'|center(1000000000) }}", "center filter would make"),
        "ljust": ("{{ 'x'.ljust(10**9) }}", "str.ljust()"),
        "zfill": ("{{ '1'.zfill(10**9) }}", "str.zfill()"),
        "expandtabs": ("{{ ('\\t' * 1000).expandtabs(10**6) }}", "str.expandtabs()"),
        "replace growth": ("{{ ('x' * 1000000).replace('x', 'y' * 10) }}", "str.replace()"),
        "replace filter": ("{{ ('x' * 1000000)|replace('x', 'y' * 10) }}", "replace filter"),
        "join separator": (
            "{{ (range(100000)|map('string')|list)|join('x' * 1000) }}",
            "join filter would make",
        ),
        "join method": ("{{ ('y' * 1000).join(range(100000)|map('string')) }}", "str.join()"),
        "translate": ("{{ ('x' * 100000).translate({120: 'y' * 100000}) }}", "str.translate()"),
        "indent": ("{{ ('x\\n' * 100000)|indent(1000) }}", "indent filter"),
        "wordwrap": ("{{ ('x ' * 100000)|wordwrap(1, wrapstring='y' * 1000) }}", "wordwrap"),
        "tojson indent": ("{{ [1, [2]]|tojson(indent=10**9) }}", "indent of 1,000,000,000"),
        "slice": ("{{ range(3)|slice(10**9)|list|length }}", "slice filter"),
        "batch": ("{{ range(3)|batch(10**9, 'x')|list|length }}", "batch filter"),
        "lipsum": ("{{ lipsum(10**6) }}", "lipsum()"),
        "macro result": (
            "{% macro b(n) %}{% if n > 0 %}{{ b(n - 1) }}{{ b(n - 1) }}{% else %}"
            "{{ 'x' * 100000 }}{% endif %}{% endmacro %}{{ b(10)|length }}",
            "b() would make",
        ),
        "string concatenation": (
            "{% set ns = namespace(x='x' * 3000000) %}{{ (ns.x + ns.x)|length }}",
            "the + operator would make 6,000,000 characters",
        ),
        "output flood": (
            "{% for i in range(100000) %}{{ 'x' * 1000 }}{% endfor %}",
            "the rendered prompt would make",
        ),
        # memory: doubling with `~`, which no hook sees: the helper's 256 MB stop it
        "tilde doubling": (
            "{% set ns = namespace(x='x') %}{% for i in range(40) %}"
            "{% set ns.x = ns.x ~ ns.x %}{% endfor %}{{ ns.x|length }}",
            "more than 256 MB of memory",
        ),
        # source: compile time
        "a megabyte of template": ("x" * 2_000_000, "not a chat template"),
        "deep nesting": ("{% if 1 %}" * 5000 + "x" + "{% endif %}" * 5000, "failed to render"),
        "broken syntax": ("{% for %}", "is broken (line 1:"),
    }


def render_case(
    tmp_path: Path, source: str, times: int = 1
) -> tuple[Outcome, list[dict[str, object]]]:
    path = tmp_path / "template.jinja"
    path.write_text(source, encoding="utf-8")
    outcome = python("-c", RENDER, str(path), str(times))
    results = [json.loads(line) for line in outcome.stdout.splitlines() if line.startswith("{")]
    return outcome, results


def assert_contained(outcome: Outcome) -> None:
    """No traceback, done within 10 s, under 512 MB, nothing left running."""
    assert outcome.returncode == 0, outcome.stderr
    assert "Traceback" not in outcome.stderr + outcome.stdout
    assert outcome.seconds < 10, outcome.seconds
    assert outcome.max_rss_mb < 512, outcome.max_rss_mb
    assert outcome.leftovers == ()


@pytest.mark.slow
@pytest.mark.parametrize(("name"), list(hostile_templates()))
def test_hostile_template_is_one_readable_error(tmp_path: Path, name: str) -> None:
    source, expected = hostile_templates()[name]
    outcome, results = render_case(tmp_path, source)
    assert_contained(outcome)
    (result,) = results
    assert result["error"] == "TemplateError", result
    message = str(result["message"])
    assert expected in message, message
    assert message.startswith("the chat template ")
    assert "\n" not in message and len(message) < 500
    if name not in ("endless recursion", "deep nesting"):  # template bugs, not limits
        assert FIX in message


@pytest.mark.slow
def test_a_runaway_template_does_not_spoil_the_next_render(tmp_path: Path) -> None:
    """The helper is killed and restarted: the next render is right, and normal again."""
    runaway = hostile_templates()["nested ranges"][0]
    both = tmp_path / "both.py"
    both.write_text(
        RENDER.replace(
            "for _ in range(",
            "import contextlib\n"
            "with contextlib.suppress(LocalbviError):\n"
            f"    render_chat({runaway!r}, messages, bos_token='', eos_token='')\n"
            "for _ in range(",
        ),
        encoding="utf-8",
    )
    template = tmp_path / "gemma.jinja"
    template.write_text(GEMMA.read_text(encoding="utf-8"), encoding="utf-8")
    outcome = python(str(both), str(template), "20")
    assert_contained(outcome)
    results = [json.loads(line) for line in outcome.stdout.splitlines()]
    assert [r["text"] for r in results] == [GEMMA_RENDERED] * 20
    assert sorted(float(r["seconds"]) for r in results)[10] < 0.05  # the median: no restarts


@pytest.mark.slow
def test_ctrl_c_during_a_runaway_render_is_prompt(tmp_path: Path) -> None:
    path = tmp_path / "t.jinja"
    path.write_text(hostile_templates()["nested ranges"][0], encoding="utf-8")
    outcome = python("-c", RENDER, str(path), signal_at=(1.5, signal.SIGINT))
    assert outcome.returncode != 0  # KeyboardInterrupt: the caller decides what it means
    assert outcome.after_signal_s is not None and outcome.after_signal_s < 1.0
    assert outcome.leftovers == ()


@pytest.mark.slow
def test_a_killed_caller_leaves_no_helper_behind(tmp_path: Path) -> None:
    path = tmp_path / "t.jinja"
    path.write_text(hostile_templates()["nested ranges"][0], encoding="utf-8")
    outcome = python("-c", RENDER, str(path), signal_at=(1.5, signal.SIGKILL))
    assert outcome.returncode == -signal.SIGKILL
    assert outcome.leftovers == ()  # the helper's own 2 s timer ends it, then the closed pipe


# --- normal templates are unchanged ------------------------------------------------------------


def test_gemma_template_renders_exactly() -> None:
    text = render_chat(GEMMA.read_text(), HELLO, bos_token="<bos>", eos_token="<eos>")
    assert text == GEMMA_RENDERED


def test_a_long_conversation_is_not_a_hostile_one() -> None:
    """The size limits grow with the input: a 3 MB document still renders."""
    document = "word " * 600_000 + "end"
    text = render_chat(
        GEMMA.read_text(), [Message("user", document)], bos_token="<bos>", eos_token="<eos>"
    )
    assert text == f"<bos><start_of_turn>user\n{document}<end_of_turn>\n<start_of_turn>model\n"


def test_the_guarded_operations_still_work_at_normal_sizes() -> None:
    source = (
        "{{ 'ab' * 3 }}|{{ [1, 2] * 2 }}|{{ 2 ** 10 }}|{{ 'a' + 'b' }}|{{ '%-4s|' % 'x' }}"
        "{{ '{:>4}'.format('y') }}|{{ 'z'.center(5) }}|{{ ', '.join(['a', 'b']) }}"
        "|{{ 'aXa'.replace('X', '--') }}|{{ messages|map(attribute='role')|join('/') }}"
        "|{{ messages[1]|tojson }}|{{ 'a\\nb'|indent(2) }}|{{ '%s=%d'|format('n', 3) }}"
        "|{{ range(5)|batch(2)|list|length }}|{{ lipsum(1, html=False, min=2, max=3)|length > 0 }}"
    )
    text = render_chat(source, HELLO, bos_token="", eos_token="")
    assert text == (
        "ababab|[1, 2, 1, 2]|1024|ab|x   |   y|  z  |a, b|a--a|system/user"
        '|{"role": "user", "content": "Hello"}|a\n  b|n=3|3|True'
    )


def test_hugging_face_template_features() -> None:
    """`{% break %}`, `{% generation %}` and HF's `tojson` (key order kept, no HTML escaping)."""
    source = (
        "{% for m in messages %}{% if loop.index > 1 %}{% break %}{% endif %}"
        "{% generation %}{{ m|tojson }}{% endgeneration %}{% endfor %}"
        "|{{ {'b': '<é>', 'a': 1}|tojson }}|{{ [1, 2]|tojson(indent=1) }}"
    )
    text = render_chat(source, HELLO, bos_token="", eos_token="")
    assert text == '{"role": "system", "content": "Be helpful."}|{"b": "<é>", "a": 1}|[\n 1,\n 2\n]'


def test_llama_cpp_can_be_kept_from_compiling_a_files_templates(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """What the model-loading process calls before llama_cpp.Llama(...) compiles them."""
    llama_chat_format = pytest.importorskip("llama_cpp.llama_chat_format")
    monkeypatch.setattr(
        llama_chat_format, "Jinja2ChatFormatter", llama_chat_format.Jinja2ChatFormatter
    )
    keep_llama_cpp_from_compiling_templates()
    start = time.perf_counter()
    formatter = llama_chat_format.Jinja2ChatFormatter(
        template="{{ 'x' * 2000000000 }}", eos_token="", bos_token="", stop_token_ids=[1]
    )
    handler = formatter.to_chat_handler()
    assert time.perf_counter() - start < 0.1
    with pytest.raises(TemplateError, match="renders chat templates itself"):
        handler()


def test_template_errors_are_readable() -> None:
    with pytest.raises(TemplateError, match=r"refused this conversation: no system role$"):
        render_chat("{{ raise_exception('no system role') }}", HELLO, bos_token="", eos_token="")
    with pytest.raises(TemplateError, match="'foo' is undefined"):
        render_chat("{{ foo() }}", HELLO, bos_token="", eos_token="")
    with pytest.raises(TemplateError, match="'__init__' of 'type' object is unsafe"):
        render_chat("{{ cycler.__init__.__globals__ }}", HELLO, bos_token="", eos_token="")
    with pytest.raises(TemplateError, match="'append' of 'list' object is unsafe"):
        render_chat("{{ messages.append(1) }}", HELLO, bos_token="", eos_token="")
    with pytest.raises(TemplateError) as caught:
        render_chat("{{ 'x' * 10**10 }}", HELLO, bos_token="", eos_token="", origin="evil.gguf")
    assert str(caught.value).startswith("the chat template of evil.gguf went past a size limit")


def test_the_limits_are_the_documented_ones() -> None:
    assert template_sandbox.TIME_LIMIT_S == 2.0
    assert template_sandbox.MEMORY_LIMIT_BYTES == 256 * 1024 * 1024
    assert template_sandbox.MAX_OUTPUT_CHARS == 4_000_000


def test_rendering_stays_fast() -> None:
    """The helper's round trip, not a new process per render (~0.15 s each)."""
    source = GEMMA.read_text()
    render_chat(source, HELLO, bos_token="<bos>", eos_token="<eos>")  # starts the helper
    start = time.perf_counter()
    for _ in range(50):
        render_chat(source, HELLO, bos_token="<bos>", eos_token="<eos>")
    assert (time.perf_counter() - start) / 50 < 0.02


def test_a_sandbox_that_cannot_start_is_a_readable_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from localbvi.engine import templates

    monkeypatch.setattr(templates, "_HELPER", tmp_path / "missing.py")
    monkeypatch.setattr(templates, "_SANDBOX", templates._Sandbox())
    with pytest.raises(TemplateError) as caught:
        render_chat("hi", HELLO, bos_token="", eos_token="", origin="m.gguf")
    assert str(caught.value) == (
        f"the chat template of m.gguf cannot be rendered: the chat-template sandbox "
        f"({sys.executable} missing.py) did not start: it exited with code 2"
    )


@pytest.mark.slow
def test_localbvi_render_with_a_runaway_template_in_the_file(
    gemma_base: Path, tmp_path: Path
) -> None:
    """End to end: the template comes from the GGUF and renders in the llama.cpp worker."""
    from localbvi.inspector import inspect_gguf

    info = inspect_gguf(gemma_base)
    with gemma_base.open("rb") as f:
        head = f.read(info.data_offset)
    template = hostile_templates()["nested ranges"][0]
    kv = _chat_template_kv(template)
    n_tensors, n_kv = struct.unpack_from("<QQ", head, 8)
    model = tmp_path / "runaway.gguf"
    model.write_bytes(head[:8] + struct.pack("<QQ", n_tensors, n_kv + 1) + kv + head[24:])
    os.truncate(model, info.file_size + len(kv))  # zero weights: enough to load and render
    outcome = python("-m", "localbvi", "render", "-m", str(model), "Hello", timeout=60)
    assert outcome.returncode == 1, outcome.stderr
    assert outcome.stderr == (
        "localbvi: error: the chat template did not finish rendering in 2 s and was stopped "
        f"(a runaway loop?); {FIX}\n"
    )
    assert outcome.seconds < 15, outcome.seconds  # a model load, then at most ~2 s of render
    assert outcome.max_rss_mb < 512, outcome.max_rss_mb  # the llama.cpp worker: ~420 MB
    assert outcome.leftovers == ()


def _chat_template_kv(template: str) -> bytes:
    """A `tokenizer.chat_template` metadata entry, padded to 32 bytes (data stays aligned)."""
    key = b"tokenizer.chat_template"
    body = template.encode()
    body += b" " * (-(8 + len(key) + 4 + 8 + len(body)) % 32)
    return struct.pack("<Q", len(key)) + key + struct.pack("<IQ", 8, len(body)) + body
