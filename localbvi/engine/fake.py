"""FakeEngine: a scripted stand-in for `LocalEngine`, for fast, deterministic UI tests.

It implements the `Engine` protocol without a model: tokens come from a script at a fixed
rate, so tests and benchmarks can check streaming, cancelling and model switching in
milliseconds. It never replaces the real engine in tests of what a model does.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from localbvi.engine.types import (
    Alternative,
    DoneEvent,
    Event,
    FinishReason,
    LoadConfig,
    LoadInfo,
    Message,
    Rendered,
    Sampling,
    ScoreProgress,
    ScoreRequest,
    Token,
    TokenEvent,
    TokenScore,
    VocabInfo,
)
from localbvi.errors import LocalbviError, ModelLoadError, TemplateError

__all__ = ["FAKE_TEMPLATE", "FakeEngine", "default_has_template"]

FAKE_TEMPLATE = (
    "{% for m in messages %}<start_of_turn>{{ m.role }}\n{{ m.content }}<end_of_turn>\n"
    "{% endfor %}<start_of_turn>model\n"
)
"""The template a fake instruct model reports (only its presence matters)."""

DEFAULT_CHAT_SCRIPT = (
    "Sure",
    "!",
    " Here",
    " is",
    " an",
    " answer",
    " from",
    " the",
    " **fake**",
    " instruct",
    " model",
    ".",
)
DEFAULT_SCORE_RANKS = (1, 1, 2, 1, 1, 5, 1, 3, 1, 1, 1, 9)
"""The rank `score` gives answer token i: 8 unshifted, 2 marginal, 2 shifted of 12."""
SCORE_CHUNK = 4
"""Answer positions per progress report of `score` (the real engine's chunks are 32)."""
DEFAULT_COMPLETION_SCRIPT = (
    " and",
    " then",
    " the",
    " base",
    " model",
    " keeps",
    " writing",
    " the",
    " same",
    " document",
    ".",
)


def default_has_template(path: str) -> bool:
    """A fake model is "base" (no template) when its file name says base/pt, else instruct."""
    name = Path(path).name.lower()
    return not ("base" in name or "-pt" in name)


class FakeEngine:
    """An `Engine` that streams scripted tokens at `tokens_per_s`.

    `fail_load` makes `load` raise `ModelLoadError` (True for every path, or a predicate on
    the path); a file with "corrupt" in its name always fails, like a junk GGUF would.
    `chat_script`/`completion_script` are the token texts a reply is made of; they repeat
    until `Sampling.max_tokens`, unless `stop_after_script` ends the reply with "stop".
    """

    def __init__(
        self,
        *,
        tokens_per_s: float = 400.0,
        chat_script: Sequence[str] = DEFAULT_CHAT_SCRIPT,
        completion_script: Sequence[str] = DEFAULT_COMPLETION_SCRIPT,
        stop_after_script: bool = True,
        fail_load: bool | Callable[[str], bool] = False,
        load_delay_s: float = 0.0,
        ttft_s: float = 0.0,
        has_template: Callable[[str], bool] = default_has_template,
        n_ctx_train: int = 32768,
        fixed_stats: bool = False,
        score_ranks: Sequence[int] = DEFAULT_SCORE_RANKS,
        vocab_name: str = "fake",
        score_chunk_s: float = 0.0,
    ) -> None:
        self.tokens_per_s = tokens_per_s
        self.chat_script = tuple(chat_script)
        self.completion_script = tuple(completion_script)
        self.stop_after_script = stop_after_script
        self.fail_load = fail_load
        self.load_delay_s = load_delay_s
        self.ttft_s = ttft_s
        self.has_template = has_template
        self.n_ctx_train = n_ctx_train
        self.fixed_stats = fixed_stats
        """Report the configured rate and TTFT instead of measured ones (for snapshots)."""
        self.score_ranks = tuple(score_ranks)
        """The rank `score` gives answer token i (cycled)."""
        self.vocab_name = vocab_name
        self.score_chunk_s = score_chunk_s
        """Seconds each chunk of `score` takes (for tests that cancel or watch progress)."""
        self.score_requests: list[ScoreRequest] = []
        """Every `score` request, in order (tests read it)."""
        """Two fake engines share a vocabulary when their names are equal."""
        self._info: LoadInfo | None = None
        self._cancel = threading.Event()
        self._logs: list[str] = []
        self.loads: list[str] = []
        """Every path `load` was called with, in order (tests read it)."""
        self.requests: list[tuple[str, object]] = []
        """Every generation request: ("complete", prompt) or ("chat", messages)."""

    # -- Engine protocol --------------------------------------------------------------------

    @property
    def info(self) -> LoadInfo | None:
        return self._info

    def load(self, path: str, config: LoadConfig) -> LoadInfo:
        self.loads.append(path)
        if self.load_delay_s:
            time.sleep(self.load_delay_s)
        failing = self.fail_load(path) if callable(self.fail_load) else self.fail_load
        if failing or "corrupt" in Path(path).name.lower():
            raise ModelLoadError(f"{Path(path).name} is not a readable GGUF model (fake engine)")
        template = (config.chat_template or FAKE_TEMPLATE) if self.has_template(path) else None
        if template is None and config.chat_template:
            template = config.chat_template
        self._info = LoadInfo(
            path=path,
            load_s=self.load_delay_s,
            n_ctx=config.n_ctx,
            n_ctx_train=self.n_ctx_train,
            n_threads=config.n_threads or 2,
            n_layers=18,
            gpu_offload_supported=False,
            n_gpu_layers=0,
            chat_template=template,
            template_source=None
            if template is None
            else ("override" if config.chat_template else "gguf"),
            bos_token="<bos>",
            eos_token="<eos>",
            model_name=Path(path).stem,
        )
        self._logs = [
            f"llama_model_loader: loaded meta data from {path}",
            f"llama_context: n_ctx = {config.n_ctx}",
            "fake engine: model ready",
        ]
        return self._info

    def unload(self) -> None:
        self._info = None

    def complete(self, prompt: str | Sequence[int], sampling: Sampling) -> Iterator[Event]:
        self._require_model()
        self.requests.append(("complete", prompt))
        n_prompt = len(prompt.split()) if isinstance(prompt, str) else len(prompt)
        return self._stream(self.completion_script, n_prompt, sampling)

    def chat(self, messages: Sequence[Message], sampling: Sampling) -> Iterator[Event]:
        info = self._require_model()
        if info.chat_template is None:
            raise TemplateError(
                f"{info.model_name} has no chat template: it is a base model. "
                "Use completion mode, or give it a template."
            )
        self.requests.append(("chat", tuple(messages)))
        n_prompt = len(self.render(messages).tokens)
        return self._stream(self.chat_script, n_prompt, sampling)

    def render(self, messages: Sequence[Message]) -> Rendered:
        text = "<bos>" + "".join(
            f"<start_of_turn>{'model' if m.role == 'assistant' else m.role}\n"
            f"{m.content}<end_of_turn>\n"
            for m in messages
        )
        text += "<start_of_turn>model\n"
        return Rendered(text=text, tokens=tuple(self.tokenize(text)))

    def tokenize(self, text: str) -> list[Token]:
        return [Token(id=i, text=word) for i, word in enumerate(text.split(" "))]

    def score(
        self, request: ScoreRequest, on_progress: ScoreProgress | None = None
    ) -> list[TokenScore]:
        """Scripted scores: answer token i gets rank `score_ranks[i]`, among made-up
        alternatives with halving probabilities; progress after every `SCORE_CHUNK`
        positions, and a cancel takes effect between chunks, as in the real engine."""
        self._require_model()
        self.score_requests.append(request)
        top_k, wanted, total = request.top_k, request.wanted, len(request.answer)
        out: list[TokenScore] = []
        for i, token_id in enumerate(request.answer):
            if i % SCORE_CHUNK == 0 and self._cancel.is_set():
                raise LocalbviError("scoring was cancelled")
            rank = self.score_ranks[i % len(self.score_ranks)]
            probs = [0.5**j for j in range(1, top_k + 1)]
            text = self.chat_script[token_id % len(self.chat_script)]
            alternatives = [
                Alternative(f" alt{j}", 5000 + j, p) for j, p in enumerate(probs, start=1)
            ]
            if rank <= top_k:
                alternatives[rank - 1] = Alternative(text, token_id, probs[rank - 1])
            prob = probs[rank - 1] if rank <= top_k else 0.5 ** (rank + 1)
            want = wanted[i] if i < len(wanted) else ()
            out.append(
                TokenScore(
                    token_id, text, rank, prob, tuple(alternatives), tuple((w, 0.1) for w in want)
                )
            )
            if on_progress is not None and (len(out) % SCORE_CHUNK == 0 or len(out) == total):
                if self.score_chunk_s:
                    time.sleep(self.score_chunk_s)
                on_progress(len(out), total)
        return out

    def vocab(self) -> VocabInfo:
        return VocabInfo(self.vocab_name, 1000, f"fake-{self.vocab_name}")

    def cancel(self) -> None:
        self._cancel.set()

    def logs(self) -> list[str]:
        return list(self._logs)

    def close(self) -> None:
        self._cancel.set()
        self._info = None

    # -- internals --------------------------------------------------------------------------

    def _require_model(self) -> LoadInfo:
        if self._info is None:
            raise ModelLoadError("no model is loaded")
        self._cancel.clear()
        return self._info

    def _stream(
        self, script: tuple[str, ...], n_prompt: int, sampling: Sampling
    ) -> Iterator[Event]:
        limit = sampling.max_tokens
        if self.stop_after_script:
            limit = min(limit, len(script))
        interval = 1.0 / self.tokens_per_s if self.tokens_per_s > 0 else 0.0
        start = time.perf_counter()
        if self.ttft_s:
            time.sleep(self.ttft_s)
        first: float | None = None
        emitted = 0
        for i in range(limit):
            # Deadline-based pacing keeps the average rate exact despite sleep jitter.
            delay = start + self.ttft_s + i * interval - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            if self._cancel.is_set():
                yield self._done("cancelled", n_prompt, emitted, start, first)
                return
            if first is None:
                first = time.perf_counter()
            emitted += 1
            yield TokenEvent(text=script[i % len(script)], id=i)
        reason: FinishReason = (
            "stop" if self.stop_after_script and limit == len(script) else "length"
        )
        yield self._done(reason, n_prompt, emitted, start, first)

    def _done(
        self, reason: FinishReason, n_prompt: int, n: int, start: float, first: float | None
    ) -> DoneEvent:
        end = time.perf_counter()
        ttft = (first - start) if first is not None else 0.0
        gen_s = end - (first if first is not None else start)
        rate = (n - 1) / gen_s if n > 1 and gen_s > 0 else 0.0
        if self.fixed_stats:
            ttft, rate = self.ttft_s, self.tokens_per_s
        details = {"stop": "end of turn", "length": "max tokens", "cancelled": "cancelled"}
        return DoneEvent(
            finish_reason=reason,
            prompt_tokens=n_prompt,
            tokens=n,
            ttft_s=ttft,
            tokens_per_s=rate,
            stop_detail=details.get(reason, reason),
        )
