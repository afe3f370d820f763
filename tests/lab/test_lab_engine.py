"""The lab on the real Gemma 3 270M: base raw vs instruct chat, X-ray, probabilities, branching.

`base_engine` is the base model (no template); `instruct_engine` is the same weights with the
Gemma chat template in its metadata. Temperature 0 keeps every output reproducible.
"""

from __future__ import annotations

from typing import Any

from localbvi.engine.templates import bundled_template
from localbvi.engine.types import Message, Sampling
from localbvi.lab.compare import branch, plan, prepare, run_compare, run_side

GREEDY = Sampling(temperature=0.0, max_tokens=8)
GEMMA_RENDERED = (
    "<bos><start_of_turn>user\nBe helpful.\n\nWhat is 2+2?<end_of_turn>\n<start_of_turn>model\n"
)


def test_compare_runs_base_raw_and_instruct_through_its_template(
    base_engine: Any, instruct_engine: Any
) -> None:
    events: list[tuple[str, str]] = []
    the_plan = plan("What is 2+2?", system="Be helpful.")
    result = run_compare(
        base_engine,
        instruct_engine,
        the_plan,
        GREEDY,
        on_event=lambda side, e: events.append((side, e.type)),
    )
    base, instruct = result.base, result.instruct
    # The X-ray: the base side sends the text as is (plus the BOS the model wants), the
    # instruct side the rendered chat template: exactly the engine's own render.
    assert base.prepared is not None and instruct.prepared is not None
    assert base.prepared.text == "<bos>What is 2+2?"
    assert instruct.prepared.text == GEMMA_RENDERED
    assert instruct.prepared.text == instruct_engine.render(the_plan.instruct.messages).text
    assert [t.text for t in instruct.prepared.tokens if t.special] == [
        "<bos>",
        "<start_of_turn>",
        "<end_of_turn>",
        "<start_of_turn>",
    ]
    # The base model continues the worksheet (the seed's lesson, at temperature 0).
    assert base.text.startswith("\n\nWhat is 2+2?")
    assert base.done is not None and base.done.tokens == 8
    assert base.done.prompt_tokens == len(base.prepared.tokens)
    assert instruct.done is not None and instruct.done.prompt_tokens == len(
        instruct.prepared.tokens
    )
    assert instruct.text  # it wrote something of its own
    assert ("base", "done") in events and ("instruct", "done") in events
    assert events.index(("base", "done")) < events.index(("instruct", "token"))


def test_template_swap_gives_the_base_model_the_instruct_prompt(
    base_engine: Any, instruct_engine: Any
) -> None:
    swapped = plan(
        "What is 2+2?",
        system="Be helpful.",
        base_mode="chat",
        base_template=bundled_template("gemma3"),
    )
    result = run_compare(base_engine, instruct_engine, swapped, GREEDY)
    assert result.base.prepared is not None and result.instruct.prepared is not None
    assert result.base.prepared.text == GEMMA_RENDERED
    assert result.base.prepared.ids == result.instruct.prepared.ids
    # Same weights, same prompt tokens, greedy: the swap makes the base side answer alike.
    assert result.base.text == result.instruct.text


def test_instruct_model_run_raw_sends_the_bare_text(instruct_engine: Any) -> None:
    request = plan("<start_of_turn>user\nHi", instruct_mode="raw").instruct
    prepared = prepare(instruct_engine, request)
    assert prepared.text == "<bos><start_of_turn>user\nHi"
    specials = [t.text for t in prepared.tokens if t.special]
    assert specials == ["<bos>", "<start_of_turn>"]  # typed special tokens are parsed
    assert prepared.n_ctx == 2048


def test_probabilities_are_valid_and_greedy_picks_the_most_probable(base_engine: Any) -> None:
    sampling = Sampling(temperature=0.0, max_tokens=6, top_probs=5)
    run = run_side(base_engine, plan("The capital of France is").base, sampling)
    assert run.done is not None and run.done.finish_reason == "length"
    assert len(run.tokens) == 6
    for token in run.tokens:
        probs = [a.prob for a in token.alternatives]
        assert len(probs) == 5
        assert all(0.0 < p <= 1.0 for p in probs)
        assert sum(probs) <= 1.0 + 1e-6
        assert probs == sorted(probs, reverse=True)
        assert token.alternatives[0].id == token.id  # greedy: the chosen one is the top
        assert token.prob == probs[0]


def test_branching_continues_from_the_alternative(base_engine: Any) -> None:
    prompt = "The capital of France is"
    sampling = Sampling(temperature=0.0, max_tokens=6, top_probs=5)
    run = run_side(base_engine, plan(prompt).base, sampling)
    alternative = next(a for a in run.tokens[1].alternatives if a.id != run.tokens[1].id)
    branched = branch(base_engine, run, 1, alternative, Sampling(temperature=0.0, max_tokens=3))
    assert branched.done is not None and branched.done.finish_reason == "length"
    assert branched.tokens[0] == run.tokens[0]
    assert branched.tokens[1].id == alternative.id
    head = run.tokens[0].text + alternative.text
    assert branched.text.startswith(head)
    assert branched.text != run.text
    # The continuation is what the model writes after that text, reached another way.
    direct = run_side(
        base_engine, plan(prompt + head).base, Sampling(temperature=0.0, max_tokens=3)
    )
    assert branched.text == head + direct.text


def test_chat_messages_reach_the_instruct_engine_unchanged(instruct_engine: Any) -> None:
    the_plan = plan("Hello", system="Be helpful.")
    assert the_plan.instruct.messages == (
        Message("system", "Be helpful."),
        Message("user", "Hello"),
    )
    prepared = prepare(instruct_engine, the_plan.instruct)
    assert prepared.text.endswith("Be helpful.\n\nHello<end_of_turn>\n<start_of_turn>model\n")
