"""Compare logic on the FakeEngine: plans, both sides, cancel, branching arithmetic, stats."""

from __future__ import annotations

import threading
import time

import pytest

from localbvi.engine.fake import FakeEngine
from localbvi.engine.types import (
    Alternative,
    DoneEvent,
    LoadConfig,
    Message,
    Sampling,
    TokenEvent,
)
from localbvi.lab.compare import (
    INCONTEXT_LABEL,
    CompareRun,
    LabError,
    branch,
    branch_ids,
    pair_refs,
    plan,
    prepare,
    run_compare,
    side_stats,
    stop_reason,
)
from localbvi.lab.incontext import build_prompt, load_incontext, user_incontext_path

BASE_PATH = "/models/demo-270m-base.gguf"
INSTRUCT_PATH = "/models/demo-270m-it.gguf"


def engines(**kwargs: object) -> tuple[FakeEngine, FakeEngine]:
    base, instruct = FakeEngine(**kwargs), FakeEngine(**kwargs)  # type: ignore[arg-type]
    base.load(BASE_PATH, LoadConfig())
    instruct.load(INSTRUCT_PATH, LoadConfig())
    return base, instruct


def test_default_plan_is_base_raw_and_instruct_chat() -> None:
    the_plan = plan("What is 2+2?", system="Be brief.")
    assert the_plan.base.mode == "raw" and the_plan.base.text == "What is 2+2?"
    assert the_plan.instruct.mode == "chat"
    assert the_plan.instruct.messages == (
        Message("system", "Be brief."),
        Message("user", "What is 2+2?"),
    )
    swapped = plan("Hi", base_mode="chat", base_template="T", instruct_mode="raw")
    assert swapped.base.messages == (Message("user", "Hi"),) and swapped.base.template == "T"
    assert swapped.base.label == "chat, swapped template"
    assert swapped.instruct.text == "Hi" and swapped.instruct.label == "raw completion"


@pytest.mark.parametrize("concurrent", [False, True])
def test_compare_runs_both_sides_in_their_modes(concurrent: bool) -> None:
    base, instruct = engines()
    seen: list[tuple[str, str]] = []
    lock = threading.Lock()

    def on_event(side: str, event: object) -> None:
        with lock:
            seen.append((side, getattr(event, "type", "")))

    result = run_compare(
        base,
        instruct,
        "Hello there",
        Sampling(max_tokens=50),
        on_event=on_event,
        concurrent=concurrent,
    )
    assert base.requests == [("complete", "Hello there")]
    assert instruct.requests == [("chat", (Message("user", "Hello there"),))]
    assert result.base.text == " and then the base model keeps writing the same document."
    assert result.instruct.text.startswith("Sure! Here is an answer")
    assert result.base.done is not None and result.base.done.finish_reason == "stop"
    assert result.concurrent is concurrent
    # Every event reached the callback, tagged with its side, and each side ended once.
    assert [s for s, t in seen if t == "done"].count("base") == 1
    assert [s for s, t in seen if t == "done"].count("instruct") == 1
    assert sum(1 for s, t in seen if s == "base" and t == "token") == 11


def test_x_ray_of_chat_side_is_the_render_and_raw_side_is_the_text() -> None:
    base, instruct = engines()
    the_plan = plan("Hello", system="Be helpful.")
    assert (
        prepare(instruct, the_plan.instruct).text
        == instruct.render(the_plan.instruct.messages).text
    )
    assert prepare(base, the_plan.base).text == "Hello"


def test_template_swap_sends_the_rendered_text_raw() -> None:
    base, instruct = engines()
    template = "{{ bos_token }}{% for m in messages %}[{{ m.role }}] {{ m.content }}\n{% endfor %}"
    the_plan = plan("Hello", base_mode="chat", base_template=template)
    result = run_compare(base, instruct, the_plan, Sampling(max_tokens=3))
    assert result.base.prepared is not None
    assert result.base.prepared.text == "<bos>[user] Hello\n"
    assert base.requests == [("complete", "<bos>[user] Hello\n")]


def test_a_base_model_in_chat_mode_without_a_template_reports_why() -> None:
    base, instruct = engines()
    result = run_compare(base, instruct, plan("Hi", base_mode="chat"), Sampling(max_tokens=3))
    done = result.base.done
    assert done is not None and done.finish_reason == "error"
    assert "no chat template" in done.error
    assert result.instruct.done is not None and result.instruct.done.tokens == 3


def test_cancel_stops_both_sides() -> None:
    base, instruct = engines(tokens_per_s=50, stop_after_script=False)
    streaming = threading.Event()

    def on_event(side: str, event: object) -> None:
        if side == "base" and isinstance(event, TokenEvent):
            streaming.set()

    run = CompareRun(base, instruct, plan("Go"), Sampling(max_tokens=500), on_event=on_event)
    out: list[object] = []
    thread = threading.Thread(target=lambda: out.append(run.run()))
    thread.start()
    assert streaming.wait(10), "the base side never started streaming"
    started = time.monotonic()
    run.cancel()
    thread.join(5)
    assert time.monotonic() - started < 1.0
    result = out[0]
    assert result.base.done.finish_reason == "cancelled"  # type: ignore[attr-defined]
    # Sequential: the instruct side never started, and says so.
    assert result.instruct.done.finish_reason == "cancelled"  # type: ignore[attr-defined]
    assert result.instruct.done.stop_detail == "cancelled before it started"  # type: ignore[attr-defined]
    assert instruct.requests == []


def test_branch_ids_takes_the_prefix_and_the_alternative() -> None:
    assert branch_ids([1, 2], [10, 11, 12], 1, 99) == [1, 2, 10, 99]
    assert branch_ids([1], [10], 0, 5) == [1, 5]
    with pytest.raises(LabError, match="generated 3 tokens"):
        branch_ids([1], [10, 11, 12], 3, 5)


def test_branch_keeps_the_prefix_then_continues_from_the_alternative() -> None:
    base, instruct = engines()
    result = run_compare(base, instruct, "Once", Sampling(max_tokens=20))
    run = result.base
    assert run.prepared is not None
    alternative = Alternative(text=" but", id=777, prob=0.2)
    branched = branch(base, run, 2, alternative, Sampling(max_tokens=3))
    assert base.requests[-1] == ("complete", [*run.prepared.ids, *run.generated_ids[:2], 777])
    assert branched.branched_at == 2
    assert branched.text.startswith(" and then but and then the")
    assert branched.tokens[2].id == 777


@pytest.mark.parametrize(
    ("done", "expected"),
    [
        (DoneEvent("stop", stop_detail="end of turn (<end_of_turn>)"), "EOS (end of turn"),
        (DoneEvent("stop", stop_detail="stop string '\\n\\n'"), "stop string '\\n\\n'"),
        (DoneEvent("length", stop_detail="max tokens"), "length (max tokens)"),
        (DoneEvent("cancelled", stop_detail="cancelled"), "cancelled"),
        (DoneEvent("error", error="boom"), "error: boom"),
    ],
)
def test_stop_reasons_read_as_the_issue_names_them(done: DoneEvent, expected: str) -> None:
    assert stop_reason(done).startswith(expected)
    assert side_stats(DoneEvent("length", tokens=7, tokens_per_s=48.26)).startswith(
        "7 tokens · 48.3 tok/s · length"
    )


def test_pair_refs_fills_in_the_catalog_sibling() -> None:
    assert pair_refs("gemma-3-270m", None) == ("gemma-3-270m", "gemma-3-270m-it")
    assert pair_refs(None, "gemma-3-270m-it") == ("gemma-3-270m", "gemma-3-270m-it")
    assert pair_refs("a.gguf", "b.gguf") == ("a.gguf", "b.gguf")
    with pytest.raises(LabError, match="give --instruct REF too"):
        pair_refs("./mine.gguf", None)
    with pytest.raises(LabError, match="--base REF and --instruct REF"):
        pair_refs(None, None)


class SamplingFakeEngine(FakeEngine):
    """A FakeEngine that also records what each completion sampled with."""

    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.samplings: list[Sampling] = []

    def complete(self, prompt: object, sampling: Sampling) -> object:  # type: ignore[override]
        self.samplings.append(sampling)
        return super().complete(prompt, sampling)  # type: ignore[arg-type]


def recording_engines() -> tuple[SamplingFakeEngine, SamplingFakeEngine]:
    base, instruct = SamplingFakeEngine(), SamplingFakeEngine()
    base.load(BASE_PATH, LoadConfig())
    instruct.load(INSTRUCT_PATH, LoadConfig())
    return base, instruct


@pytest.mark.parametrize("concurrent", [False, True])
def test_in_context_side_runs_on_the_base_engine_after_the_raw_side(concurrent: bool) -> None:
    base, instruct = recording_engines()
    the_plan = plan("What is 2+2?", system="Be brief.", incontext=True)
    assert the_plan.sides == ("base", "incontext", "instruct")
    assert the_plan.for_side("incontext").label == INCONTEXT_LABEL == "base + in-context examples"
    result = run_compare(base, instruct, the_plan, Sampling(max_tokens=50), concurrent=concurrent)
    assert list(result.runs) == ["base", "incontext", "instruct"]
    expected = build_prompt(
        load_incontext(), (Message("system", "Be brief."), Message("user", "What is 2+2?"))
    )
    # One engine, one request at a time: raw first, then the in-context prompt.
    assert base.requests == [("complete", "What is 2+2?"), ("complete", expected)]
    assert expected.startswith("# Instructions") and "Be brief." in expected
    assert expected.endswith("# Query:\n```\nWhat is 2+2?\n```\n\n# Answer:\n```\n")
    raw_sampling, incontext_sampling = base.samplings
    assert raw_sampling.stop == () and raw_sampling.repeat_penalty == 1.0
    assert "# Query" in incontext_sampling.stop and incontext_sampling.repeat_penalty == 1.1
    incontext = result.incontext
    assert incontext is not None and incontext.text.startswith(" and then the base model")
    assert incontext.prepared is not None and incontext.prepared.text == expected
    assert instruct.requests == [
        ("chat", (Message("system", "Be brief."), Message("user", "What is 2+2?")))
    ]


def test_in_context_side_can_take_the_raw_base_side_s_place() -> None:
    base, instruct = recording_engines()
    the_plan = plan("Hi", incontext=True, run_base=False)
    result = run_compare(base, instruct, the_plan, Sampling(max_tokens=5))
    assert list(result.runs) == ["incontext", "instruct"]
    assert len(base.requests) == 1 and "# Query:\n```\nHi\n```" in str(base.requests[0][1])
    with pytest.raises(LabError, match="base side did not run"):
        _ = result.base
    # Without the in-context side the raw base side always runs.
    assert plan("Hi", run_base=False).sides == ("base", "instruct")


def test_a_set_repetition_penalty_wins_and_branching_keeps_the_in_context_stops() -> None:
    base, instruct = recording_engines()
    result = run_compare(
        base, instruct, plan("Hi", incontext=True), Sampling(max_tokens=5, repeat_penalty=1.3)
    )
    assert base.samplings[-1].repeat_penalty == 1.3
    run = result.incontext
    assert run is not None
    branch(base, run, 1, Alternative(" so", 555, 0.1), Sampling(max_tokens=3))
    assert "# Query" in base.samplings[-1].stop
    assert base.samplings[-1].repeat_penalty == 1.1


def test_a_broken_in_context_file_fails_only_that_side_with_the_fix() -> None:
    path = user_incontext_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text('preamble = "Answer well."\n', encoding="utf-8")  # no examples
    base, instruct = recording_engines()
    result = run_compare(base, instruct, plan("Hi", incontext=True), Sampling(max_tokens=3))
    done = result.incontext.done if result.incontext else None
    assert done is not None and done.finish_reason == "error"
    assert str(path) in done.error and "between 1 and 8" in done.error
    assert result.base.text and result.instruct.text
