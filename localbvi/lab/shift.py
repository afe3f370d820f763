"""Token distribution shift: where instruct tuning changed the model, token by token.

After Lin et al., "The Unlocking Spell on Base LLMs" (ICLR 2024): the instruct model answers a
question greedily in its chat template; the base model then scores every token of that answer
at its position, given the same question in a frame of its own. A token the base model also
ranks first is "unshifted", second or third "marginal", lower "shifted". The paper found most
tokens unshifted; the shifted ones are style, discourse and safety tokens.

The run has two halves: `instruct_answer` (the instruct model's greedy answer, token ids and
its own top-k at each) and `score_answer` (the base model scores those ids under a frame).
A frame switch re-scores the same answer, never asks the instruct model again. The base model
scores the whole answer in one prompt-evaluation pass (`LocalEngine.score`), with logits kept
only at answer positions, in bounded chunks, telling its progress after each chunk.

Single-turn, as in the paper: both models see one question (and an optional system message),
never the earlier turns of a chat; the app's view says which question it scored.
Nothing here imports Textual.
"""

from __future__ import annotations

import contextlib
import math
import os
import threading
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal, Protocol

from localbvi.engine.base import Engine
from localbvi.engine.types import (
    Alternative,
    DoneEvent,
    Message,
    Sampling,
    ScoreProgress,
    ScoreRequest,
    TokenEvent,
    TokenScore,
    VocabInfo,
)
from localbvi.jsonfile import read_json_object, write_json_atomic
from localbvi.lab.compare import LabError
from localbvi.lab.incontext import frame_query
from localbvi.paths import cache_dir

__all__ = [
    "FRAMES",
    "PAPER_FIGURES",
    "Category",
    "Frame",
    "InstructAnswer",
    "ShiftResult",
    "ShiftToken",
    "category",
    "check_vocab",
    "instruct_answer",
    "kl_topk",
    "run_shift",
    "score_answer",
    "sparkline",
]

Frame = Literal["plain", "raw", "template"]
Category = Literal["unshifted", "marginal", "shifted"]

FRAMES: dict[Frame, str] = {
    "plain": "the question in a plain zero-shot frame (# Query: … # Answer:), as in the paper",
    "raw": "the question alone, as raw text",
    "template": "the instruct model's chat template (exactly what the instruct model saw)",
}

PAPER_FIGURES = (
    ("Llama-2-7b → Llama-2-7b-chat", 77.7, 14.5, 7.8),
    ("Mistral-7B → Mistral-7B-Instruct", 82.2, 12.5, 5.2),
)
"""Lin et al. 2024, unshifted / marginal / shifted %, for reference in the help and report."""


class Scorer(Protocol):
    """An engine that can score tokens (LocalEngine; a server cannot)."""

    def score(
        self, request: ScoreRequest, on_progress: ScoreProgress | None = None
    ) -> list[TokenScore]: ...

    def vocab(self) -> VocabInfo: ...


def category(rank: int) -> Category:
    """The paper's categories: rank 1 unshifted, 2-3 marginal, lower shifted."""
    if rank <= 1:
        return "unshifted"
    return "marginal" if rank <= 3 else "shifted"


def kl_topk(p: Sequence[tuple[int, float]], q: dict[int, float]) -> float:
    """KL(P‖Q) over P's top-k ids, both renormalised over that set.

    `p` is the instruct model's top-k (id, probability); `q` the base model's probabilities of
    the same ids. Probabilities underflowing to 0 are floored at 1e-12.
    """
    ids = [i for i, _ in p]
    p_total = sum(max(v, 0.0) for _, v in p)
    q_total = sum(max(q.get(i, 0.0), 0.0) for i in ids)
    if p_total <= 0 or q_total <= 0:
        return 0.0
    kl = 0.0
    for i, pv in p:
        pn = max(pv, 0.0) / p_total
        if pn <= 0:
            continue
        qn = max(q.get(i, 0.0) / q_total, 1e-12)
        kl += pn * math.log(pn / qn)
    return max(0.0, kl)


@dataclass(frozen=True)
class ShiftToken:
    """One token of the instruct model's answer, as both models see it."""

    id: int
    text: str
    rank: int
    """Its rank in the base model's distribution at this position (1: the base's choice)."""
    base_prob: float
    instruct_prob: float
    kl: float
    base_alternatives: tuple[Alternative, ...]
    """The base model's own top choices here, most likely first."""

    @property
    def category(self) -> Category:
        return category(self.rank)

    def to_json(self) -> dict[str, Any]:
        return {
            "type": "shift",
            "text": self.text,
            "id": self.id,
            "rank": self.rank,
            "base_prob": _finite(self.base_prob),
            "instruct_prob": _finite(self.instruct_prob),
            "kl": _finite(self.kl),
        }


def _finite(x: float) -> float | None:
    return round(x, 6) if math.isfinite(x) else None


@dataclass(frozen=True)
class InstructAnswer:
    """The instruct model's greedy answer: the half of a shift run no frame changes."""

    question: str
    messages: tuple[Message, ...]
    """What the instruct model was asked (an optional system message, then the question)."""
    tokens: tuple[TokenEvent, ...]
    """The answer token by token (ids >= 0), each with the instruct model's own top-k."""
    done: DoneEvent
    vocab: VocabInfo
    template: tuple[str, tuple[int, ...]]
    """The prompt the instruct model saw (text, token ids): the "template" frame."""

    @property
    def text(self) -> str:
        return "".join(t.text for t in self.tokens)


@dataclass(frozen=True)
class ShiftResult:
    """The instruct answer, token by token, with the base model's view of each token."""

    source: InstructAnswer
    frame: Frame
    base_prompt: str
    """What the base model was given before the answer (the frame), as text."""
    tokens: tuple[ShiftToken, ...]

    @property
    def question(self) -> str:
        return self.source.question

    @property
    def instruct_done(self) -> DoneEvent:
        return self.source.done

    @property
    def vocab(self) -> VocabInfo:
        return self.source.vocab

    @property
    def answer(self) -> str:
        return "".join(t.text for t in self.tokens)

    def counts(self) -> dict[Category, int]:
        c = Counter(t.category for t in self.tokens)
        return {"unshifted": c["unshifted"], "marginal": c["marginal"], "shifted": c["shifted"]}

    def percentages(self) -> dict[Category, float]:
        n = len(self.tokens) or 1
        return {k: 100.0 * v / n for k, v in self.counts().items()}

    def top_shifted(self, n: int = 10) -> list[tuple[str, int]]:
        """The most frequently shifted token texts, with how often."""
        c = Counter(t.text for t in self.tokens if t.category == "shifted")
        return c.most_common(n)

    def kl_series(self) -> list[float]:
        return [t.kl for t in self.tokens]

    def summary_json(self) -> dict[str, Any]:
        pct = self.percentages()
        return {
            "type": "summary",
            "unshifted": round(pct["unshifted"], 2),
            "marginal": round(pct["marginal"], 2),
            "shifted": round(pct["shifted"], 2),
            "tokens": len(self.tokens),
            "counts": self.counts(),
            "top_shifted": [{"text": t, "count": k} for t, k in self.top_shifted()],
            "mean_kl": _finite(sum(self.kl_series()) / len(self.tokens)) if self.tokens else 0.0,
            "frame": self.frame,
            "finish_reason": self.instruct_done.finish_reason,
        }


_SPARKS = "▁▂▃▄▅▆▇█"


def sparkline(values: Sequence[float], width: int | None = None) -> str:
    """Values as a row of block characters (max of each bucket when there are more values
    than `width`)."""
    if not values:
        return ""
    vals = list(values)
    if width is not None and len(vals) > width > 0:
        step = len(vals) / width
        vals = [max(vals[int(i * step) : max(int((i + 1) * step), int(i * step) + 1)])
                for i in range(width)]  # fmt: skip
    top = max(vals) or 1.0
    return "".join(_SPARKS[min(7, int(v / top * 7.999))] if v > 0 else _SPARKS[0] for v in vals)


# -- the vocabulary check ------------------------------------------------------------------------

_VOCAB_CACHE = "vocab-hashes.json"


def _vocab_cached(engine: Engine) -> VocabInfo:
    """The engine's vocabulary, hashed once per model file (cached by path, size, mtime)."""
    scorer = _scorer(engine)
    info = engine.info
    key = ""
    if info is not None:
        with contextlib.suppress(OSError):
            st = os.stat(info.path)
            key = f"{os.path.realpath(info.path)}|{st.st_size}|{st.st_mtime_ns}"
    path = cache_dir() / _VOCAB_CACHE
    data = read_json_object(path, 1_000_000)
    hit = data.get(key) if key else None
    if isinstance(hit, dict):
        with contextlib.suppress(KeyError, TypeError, ValueError):
            return VocabInfo(str(hit["tokenizer"]), int(hit["n_tokens"]), str(hit["sha256"]))
    vocab = scorer.vocab()
    if key:
        data[key] = {
            "tokenizer": vocab.tokenizer,
            "n_tokens": vocab.n_tokens,
            "sha256": vocab.sha256,
        }
        write_json_atomic(path, dict(list(data.items())[-200:]))
    return vocab


def _scorer(engine: Engine) -> Scorer:
    if not hasattr(engine, "score") or not hasattr(engine, "vocab"):
        raise LabError(
            "token shift needs both models on this machine (llama.cpp): a server does not "
            "give the per-token scores it needs"
        )
    return engine  # type: ignore[return-value]


def check_vocab(base: Engine, instruct: Engine) -> VocabInfo:
    """The shared vocabulary of both models; a mismatched pair is refused, naming both."""
    b, i = _vocab_cached(base), _vocab_cached(instruct)
    if b != i:
        raise LabError(
            f"these models do not share a tokenizer, so their tokens cannot be compared: the "
            f"base model has a {b}, the instruct model a {i}. Pick siblings of one family "
            "(`localbvi models` lists the pairs)"
        )
    return b


# -- the run -------------------------------------------------------------------------------------


def _base_prompt(frame: Frame, base: Engine, answer: InstructAnswer) -> tuple[str, list[int]]:
    if frame == "template":
        text, ids = answer.template
        return text, list(ids)
    question = answer.question
    text = frame_query(question) if frame == "plain" else question.strip() + "\n"
    return text, [t.id for t in base.tokenize(text)]


def instruct_answer(
    base: Engine,
    instruct: Engine,
    question: str,
    sampling: Sampling,
    *,
    system: str | None = None,
    top_k: int = 10,
    on_token: Callable[[TokenEvent], None] | None = None,
    cancelled: threading.Event | None = None,
) -> InstructAnswer:
    """Let `instruct` answer `question` greedily (its top-k kept per token), once the pair's
    vocabularies are checked. A cancelled answer is returned as far as it got."""
    _scorer(base)
    vocab = check_vocab(base, instruct)
    messages = [Message("system", system)] if system else []
    messages.append(Message("user", question))
    greedy = replace(sampling, temperature=0.0, top_k=1, top_probs=max(1, min(top_k, 10)))
    answer: list[TokenEvent] = []
    done: DoneEvent | None = None
    for event in instruct.chat(messages, greedy):
        if isinstance(event, TokenEvent):
            if event.id >= 0:
                answer.append(event)
            elif answer:  # held-back text belongs to the token before it
                answer[-1] = replace(answer[-1], text=answer[-1].text + event.text)
            if on_token is not None:
                on_token(event)
            if cancelled is not None and cancelled.is_set():
                instruct.cancel()
        else:
            done = event
    if done is None or done.finish_reason == "error":
        raise LabError(
            f"the instruct model failed to answer: {done.error if done else 'no result'}"
        )
    if not answer:
        raise LabError("the instruct model gave an empty answer: there is nothing to score")
    rendered = instruct.render(messages)
    template = (rendered.text, tuple(t.id for t in rendered.tokens))
    return InstructAnswer(question, tuple(messages), tuple(answer), done, vocab, template)


def score_answer(
    base: Engine,
    answer: InstructAnswer,
    frame: Frame = "plain",
    *,
    top_k: int = 10,
    on_progress: ScoreProgress | None = None,
    cancelled: threading.Event | None = None,
) -> ShiftResult:
    """Score each token of `answer` under `base`, given the question in `frame`.

    Only the base model works here: switching the frame re-scores the same answer. A set
    `cancelled` stops the pass between chunks (a LocalbviError).
    """
    if frame not in FRAMES:
        raise LabError(f"unknown frame {frame!r}: choose {', '.join(FRAMES)}")
    scorer = _scorer(base)
    text, prompt_ids = _base_prompt(frame, base, answer)
    request = ScoreRequest(
        prompt=tuple(prompt_ids),
        answer=tuple(t.id for t in answer.tokens),
        top_k=top_k,
        wanted=tuple(tuple(a.id for a in t.alternatives) for t in answer.tokens),
    )

    def progress(done: int, total: int) -> None:
        if on_progress is not None:
            on_progress(done, total)
        if cancelled is not None and cancelled.is_set():
            base.cancel()  # the engine stops before its next chunk

    if cancelled is not None and cancelled.is_set():
        raise LabError("scoring was cancelled")
    scores = scorer.score(request, progress)
    tokens = []
    for event, score in zip(answer.tokens, scores, strict=True):
        p = [(a.id, a.prob) for a in event.alternatives]
        instruct_prob = next((a.prob for a in event.alternatives if a.id == event.id), 0.0)
        tokens.append(
            ShiftToken(
                id=event.id,
                text=event.text,
                rank=score.rank,
                base_prob=score.prob,
                instruct_prob=instruct_prob,
                kl=kl_topk(p, dict(score.wanted)),
                base_alternatives=score.alternatives,
            )
        )
    return ShiftResult(answer, frame, text, tuple(tokens))


def run_shift(
    base: Engine,
    instruct: Engine,
    question: str,
    sampling: Sampling,
    *,
    system: str | None = None,
    frame: Frame = "plain",
    top_k: int = 10,
    on_token: Callable[[TokenEvent], None] | None = None,
    cancelled: threading.Event | None = None,
) -> ShiftResult:
    """Let `instruct` answer `question` greedily, then score each answer token under `base`.

    An answer cut short by `cancelled` is still scored (the part written), so a caller that
    stops a run keeps what it has."""
    if frame not in FRAMES:
        raise LabError(f"unknown frame {frame!r}: choose {', '.join(FRAMES)}")
    answer = instruct_answer(
        base,
        instruct,
        question,
        sampling,
        system=system,
        top_k=top_k,
        on_token=on_token,
        cancelled=cancelled,
    )
    return score_answer(base, answer, frame, top_k=top_k)
