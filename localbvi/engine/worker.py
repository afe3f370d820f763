"""The llama.cpp child process: one per loaded model.

llama.cpp aborts the whole process on a C-level failure (GGML_ASSERT, a malformed tensor, out
of memory), so it never runs in the caller's process. This module is the child's side: it
receives requests over a `multiprocessing` pipe, runs llama-cpp-python, and streams events
back. Its stdout and stderr point at a log file the parent owns, so llama.cpp's logs (and a
fatal assert's last words) are captured there instead of being written over the terminal.

Only this module imports llama_cpp and numpy.
"""

from __future__ import annotations

import codecs
import contextlib
import ctypes
import math
import os
import pickle
import queue
import signal
import struct
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict
from typing import IO, Any

from localbvi.engine.templates import render_chat
from localbvi.engine.types import (
    Alternative,
    DoneEvent,
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
from localbvi.errors import ContextOverflowError, LocalbviError, ModelLoadError, TemplateError

__all__ = ["default_threads", "worker_main"]

# Token texts that end a turn in the chat formats localbvi knows. llama.cpp marks most of them
# end-of-generation itself; this list catches GGUFs whose vocab lacks the flag.
END_OF_TURN_TEXTS = frozenset(
    {"<end_of_turn>", "<|eot_id|>", "<|im_end|>", "<|end|>", "<|endoftext|>", "</s>", "<eos>"}
)


_PROB_WINDOW = 25.0  # logits further below the maximum than this are negligible (< e^-25)
_SCORE_CHUNK = 32  # answer positions whose logits are kept per decode (32 MiB at 262k vocab)


def default_threads() -> int:
    """Threads for decoding: every core on small machines, physical cores on larger ones."""
    n = os.cpu_count() or 1
    return n if n <= 4 else max(1, n // 2)


def context_size(llm: Any) -> int:
    """The context window the Python side can hold.

    llama.cpp pads a small context (`--ctx 16` becomes 256), while llama-cpp-python sizes its
    token buffer by the value asked for; a longer prompt then fails with a numpy broadcast
    error instead of a clear "prompt longer than the context". The smaller of the two is
    the real limit.
    """
    return min(int(llm.n_ctx()), len(llm.input_ids))


class _Worker:
    """State of the child: the loaded model and its per-token caches."""

    def __init__(self, conn: _Channel, cancel: threading.Event) -> None:
        self.conn = conn
        self.cancel = cancel
        self.llm: Any = None
        self.info: LoadInfo | None = None
        self._pieces: dict[tuple[int, bool], bytes] = {}
        self._abort_cb: Any = None
        self._abort_enabled = False
        self._first_decode_done = False

    # -- loading ---------------------------------------------------------------------------

    def load(self, path: str, config: LoadConfig, extra_buffers: bool = True) -> LoadInfo:
        import llama_cpp

        started = time.perf_counter()
        self._first_decode_done = False
        _install_log_filter()
        # llama-cpp-python would compile every template in the GGUF, unbounded; we never use
        # its formatters (rendering is ours, bounded), so a hostile template costs nothing here.
        from localbvi.engine.templates import keep_llama_cpp_from_compiling_templates

        keep_llama_cpp_from_compiling_templates()
        supported = bool(llama_cpp.llama_supports_gpu_offload())
        if config.n_gpu_layers == "auto":
            requested = -1 if supported else 0
        else:
            requested = config.n_gpu_layers if supported else 0
        threads = config.n_threads or default_threads()
        try:
            with _extra_buffer_types(extra_buffers) as extra_buffers:
                llm = llama_cpp.Llama(
                    model_path=path,
                    n_ctx=config.n_ctx,
                    n_threads=threads,
                    n_threads_batch=threads,
                    n_gpu_layers=requested,
                    seed=config.seed if config.seed >= 0 else llama_cpp.LLAMA_DEFAULT_SEED,
                    logits_all=False,
                    verbose=True,  # logs go to our log file, never the terminal
                )
        except Exception as exc:
            raise ModelLoadError(f"llama.cpp could not load {path}: {exc}") from None
        self.llm = llm
        self._pieces.clear()
        self._install_abort_callback()

        metadata: dict[str, str] = dict(llm.metadata)
        template: str | None
        if config.chat_template:
            template, source = config.chat_template, "override"
        elif metadata.get("tokenizer.chat_template"):
            template, source = metadata["tokenizer.chat_template"], "gguf"
        else:
            template, source = None, None
        n_layers = int(llama_cpp.llama_model_n_layer(llm.model))
        offloaded = (
            0 if requested == 0 else (n_layers if requested < 0 else min(requested, n_layers))
        )
        self.info = LoadInfo(
            path=path,
            load_s=time.perf_counter() - started,
            n_ctx=context_size(llm),
            n_ctx_train=llm._model.n_ctx_train(),
            n_threads=threads,
            n_layers=n_layers,
            gpu_offload_supported=supported,
            n_gpu_layers=offloaded,
            chat_template=template,
            template_source=source,  # type: ignore[arg-type]
            bos_token=self._text(llm.token_bos()),
            eos_token=self._text(llm.token_eos()),
            model_name=metadata.get("general.name", os.path.basename(path)),
            extra_buffers=extra_buffers,
        )
        return self.info

    def warm_up(self) -> float:
        """Decode a short prompt and one more token, then forget them; returns the seconds.

        Run right after a load on a (llama.cpp build, CPU) pair not tried before: a kernel that
        crashes (llama.cpp's AMX path, issue 20824) does it here, before any user request.
        Both a batch (prompt evaluation) and a single-token decode are exercised.
        """
        started = time.perf_counter()
        self._before_first_decode()
        tokens = self.tokenize("Hello, world. The")
        self.llm.eval(tokens)
        self.llm.eval(tokens[-1:])
        self._reset_after_abort()
        return time.perf_counter() - started

    def _before_first_decode(self) -> None:
        """Fault injection for tests: `LOCALBVI_FAULT_FIRST_DECODE` crashes the first decode.

        "extra-buffers" crashes only while extra buffer types are on (what llama.cpp's AMX bug
        does), "always" in any setting. Unset (always, for users) it does nothing.
        """
        if self._first_decode_done:
            return
        self._first_decode_done = True
        fault = os.environ.get("LOCALBVI_FAULT_FIRST_DECODE", "")
        on = self.info is not None and self.info.extra_buffers
        if fault == "always" or (fault == "extra-buffers" and on):
            sys.stderr.write("localbvi worker: injected crash in the first decode\n")
            sys.stderr.flush()
            os.kill(os.getpid(), signal.SIGSEGV)

    def _install_abort_callback(self) -> None:
        """Let `cancel` interrupt a long prompt evaluation, not only the token loop."""
        import llama_cpp

        cancel = self.cancel

        def should_abort(_data: Any) -> bool:
            return cancel.is_set()

        self._abort_cb = llama_cpp.ggml_abort_callback(should_abort)
        self._abort_enabled = False  # a new context starts without the callback

    def _set_abort(self, enabled: bool) -> None:
        # The callback runs once per graph node; it is on only while the prompt is evaluated
        # so that decoding pays nothing for it.
        import llama_cpp

        if enabled == self._abort_enabled:
            return
        ctx = self.llm.ctx
        if enabled:
            llama_cpp.llama_set_abort_callback(ctx, self._abort_cb, None)
        else:
            llama_cpp.llama_set_abort_callback(ctx, llama_cpp.ggml_abort_callback(), None)
        self._abort_enabled = enabled

    # -- tokens ----------------------------------------------------------------------------

    def _piece(self, token: int, special: bool) -> bytes:
        key = (token, special)
        cached = self._pieces.get(key)
        if cached is not None:
            return cached
        import llama_cpp

        vocab = self.llm._model.vocab
        size = 64
        while True:
            buf = ctypes.create_string_buffer(size)
            n = llama_cpp.llama_token_to_piece(vocab, token, buf, size, 0, special)
            if n >= 0:
                piece = buf.raw[:n]
                break
            size = -n
        self._pieces[key] = piece
        return piece

    def _text(self, token: int) -> str:
        return self._piece(token, True).decode("utf-8", errors="replace")

    def _is_special(self, token: int) -> bool:
        return self._piece(token, True) != self._piece(token, False)

    def _is_end_of_turn(self, token: int) -> bool:
        import llama_cpp

        if llama_cpp.llama_vocab_is_eog(self.llm._model.vocab, token):
            return True
        return self._is_special(token) and self._text(token) in END_OF_TURN_TEXTS

    def tokenize(self, text: str) -> list[int]:
        """Tokens of `text` with special tokens parsed and exactly one leading BOS if wanted."""
        import llama_cpp

        tokens: list[int] = self.llm.tokenize(text.encode("utf-8"), add_bos=False, special=True)
        bos = self.llm.token_bos()
        wants_bos = bool(llama_cpp.llama_vocab_get_add_bos(self.llm._model.vocab))
        if wants_bos and bos >= 0 and (not tokens or tokens[0] != bos):
            tokens.insert(0, bos)
        return tokens

    def describe(self, tokens: Sequence[int]) -> list[Token]:
        return [Token(id=t, text=self._text(t), special=self._is_special(t)) for t in tokens]

    def render(self, messages: Sequence[Message]) -> Rendered:
        assert self.info is not None
        if not self.info.chat_template:
            raise TemplateError(
                "this model has no chat template, so it cannot chat: it is a base model. "
                "Use raw completion (`localbvi complete`, or completion mode in the app), or "
                "give it a template (a chat_template override in models.toml)"
            )
        text = render_chat(
            self.info.chat_template,
            messages,
            bos_token=self.info.bos_token,
            eos_token=self.info.eos_token,
        )
        tokens = self.tokenize(text)
        bos_text = self.info.bos_token
        if tokens and tokens[0] == self.llm.token_bos() and not text.startswith(bos_text):
            text = bos_text + text  # the BOS we add is part of what the model sees
        return Rendered(text=text, tokens=tuple(self.describe(tokens)))

    # -- generation ------------------------------------------------------------------------

    def generate(
        self, prompt: Sequence[int], sampling: Sampling
    ) -> Iterator[TokenEvent | DoneEvent]:
        """Stream tokens for `prompt` (token ids), honouring stops, length and cancel."""
        import llama_cpp
        import numpy as np

        llm = self.llm
        n_ctx = context_size(llm)
        if len(prompt) >= n_ctx:
            raise ContextOverflowError(len(prompt), n_ctx, sampling.max_tokens)
        room = n_ctx - len(prompt)
        max_tokens = sampling.max_tokens if sampling.max_tokens > 0 else room
        limited_by_context = max_tokens > room
        max_tokens = min(max_tokens, room)
        if sampling.seed is not None and sampling.seed >= 0:
            llm.set_seed(sampling.seed)
        k_probs = max(0, min(sampling.top_probs, 10))
        n_vocab = llm.n_vocab()

        stops = tuple(s for s in sampling.stop if s)
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        text = ""  # generated text so far (decoded)
        emitted = 0  # how much of `text` has been sent
        n = 0
        started = time.perf_counter()
        first_at: float | None = None
        finish: str = "length"
        detail = "context full" if limited_by_context else "max tokens"

        self._before_first_decode()
        self._set_abort(True)
        gen = llm.generate(
            list(prompt),
            top_k=sampling.top_k,
            top_p=sampling.top_p,
            min_p=sampling.min_p,
            temp=max(0.0, sampling.temperature),
            repeat_penalty=sampling.repeat_penalty,
        )
        try:
            while n < max_tokens:
                if self.cancel.is_set():
                    finish, detail = "cancelled", "cancelled"
                    break
                try:
                    token = next(gen)
                except StopIteration:
                    finish, detail = "stop", "end of generation"
                    break
                except RuntimeError as exc:  # llama_decode failed or was aborted
                    if self.cancel.is_set():
                        finish, detail = "cancelled", "cancelled"
                        self._reset_after_abort()
                        break
                    yield self._done("error", "", prompt, n, started, first_at, str(exc))
                    return
                if first_at is None:
                    first_at = time.perf_counter()
                    self._set_abort(False)
                if self._is_end_of_turn(token):
                    finish, detail = "stop", f"end of turn ({self._text(token)})"
                    break
                alternatives: tuple[Alternative, ...] = ()
                if k_probs:
                    alternatives = self._alternatives(np, llama_cpp, n_vocab, k_probs, token)
                n += 1
                text += decoder.decode(self._piece(token, True))
                cut = _find_stop(text, stops, emitted)
                if cut is not None:
                    pos, stop = cut
                    yield TokenEvent(text=text[emitted:pos], id=token, alternatives=alternatives)
                    emitted = pos
                    finish, detail = "stop", f"stop string {stop!r}"
                    break
                safe = len(text) - _held_back(text, stops)
                if n >= max_tokens:
                    safe = len(text)
                yield TokenEvent(text=text[emitted:safe], id=token, alternatives=alternatives)
                emitted = max(emitted, safe)
        finally:
            gen.close()
            self._set_abort(False)
        if not detail.startswith("stop string"):
            # Text held back for a stop string that never came belongs to the reply.
            rest = text[emitted:] + decoder.decode(b"", final=True)
            if rest:
                yield TokenEvent(text=rest, id=-1)
        yield self._done(finish, detail, prompt, n, started, first_at)

    def score(
        self, request: ScoreRequest, progress: ScoreProgress | None = None
    ) -> list[TokenScore]:
        """How likely this model finds each token of the answer after the prompt (teacher
        forcing).

        For answer token i: its rank and probability in the model's next-token distribution
        given prompt + answer[:i], the model's own top-k there, and the probabilities of the
        ids in `wanted[i]` (another model's candidates, for a KL divergence). One pass of
        prompt evaluation with logits kept only at answer positions, in chunks of at most
        `_SCORE_CHUNK` outputs so the logits buffer stays small (a 262k vocabulary is 1 MiB
        of floats per position), never one request per token. `progress` hears (positions
        scored, positions) after each chunk; a cancel stops the pass between chunks.
        """
        import llama_cpp
        import numpy as np

        prompt, answer, wanted = request.prompt, request.answer, request.wanted
        top_k = request.top_k
        llm = self.llm
        n_ctx = context_size(llm)
        total = len(prompt) + len(answer)
        if not prompt:
            raise LocalbviError("scoring needs a prompt (at least a BOS token)")
        if total > n_ctx:
            raise ContextOverflowError(total, n_ctx)
        feed = [*prompt, *answer[:-1]]
        first_out = len(prompt) - 1  # logits here predict answer[0]
        n_vocab = llm.n_vocab()
        n_batch = max(1, min(int(llama_cpp.llama_n_batch(llm.ctx)), 512))
        self._reset_after_abort()
        batch = llama_cpp.llama_batch_init(n_batch, 0, 1)
        results: list[TokenScore] = []
        try:
            pos = 0
            while pos < len(feed):
                end = min(len(feed), pos + n_batch)
                if end > first_out:
                    end = min(end, max(pos, first_out) + _SCORE_CHUNK)
                outputs: list[int] = []
                for j, p in enumerate(range(pos, end)):
                    batch.token[j] = feed[p]
                    batch.pos[j] = p
                    batch.n_seq_id[j] = 1
                    batch.seq_id[j][0] = 0
                    keep = p >= first_out
                    batch.logits[j] = keep
                    if keep:
                        outputs.append(j)
                batch.n_tokens = end - pos
                if self.cancel.is_set():
                    raise LocalbviError("scoring was cancelled")
                if llama_cpp.llama_decode(llm.ctx, batch) != 0:
                    raise LocalbviError("llama.cpp failed to evaluate the tokens to score")
                for j in outputs:
                    i = pos + j - first_out  # answer index predicted here
                    ptr = llama_cpp.llama_get_logits_ith(llm.ctx, j)
                    logits = np.ctypeslib.as_array(ptr, shape=(n_vocab,))
                    want = wanted[i] if i < len(wanted) else ()
                    results.append(self._score_one(np, logits, answer[i], top_k, want))
                pos = end
                if outputs and progress is not None:
                    progress(len(results), len(answer))
        finally:
            llama_cpp.llama_batch_free(batch)
            self._reset_after_abort()
        return results

    def _score_one(
        self, np: Any, logits: Any, target: int, top_k: int, wanted: Sequence[int]
    ) -> TokenScore:
        # As in `_alternatives`: only logits within `_PROB_WINDOW` of the maximum weigh in the
        # normaliser (exact to a few ppm), so exp() runs over hundreds of values, not 262k.
        # Three passes over the row (max, compare, gather); a target inside the window takes
        # its rank from the few hundred near logits, since every logit above it is near too.
        peak = float(logits.max())
        near = np.flatnonzero(logits >= peak - _PROB_WINDOW)
        near_logits = logits[near].astype(np.float64)
        log_z = peak + math.log(float(np.exp(near_logits - peak).sum()))
        chosen = float(logits[target])
        if chosen >= peak - _PROB_WINDOW:
            rank = int(np.count_nonzero(near_logits > chosen)) + 1
        else:
            rank = int(np.count_nonzero(logits > chosen)) + 1
        k = max(1, min(top_k, 20, len(near)))
        order = np.argpartition(near_logits, -k)[-k:]
        order = order[np.argsort(near_logits[order])[::-1]]
        alternatives = tuple(
            Alternative(
                text=self._text(int(near[o])),
                id=int(near[o]),
                prob=math.exp(float(near_logits[o]) - log_z),
            )
            for o in order
        )
        return TokenScore(
            id=target,
            text=self._text(target),
            rank=rank,
            prob=math.exp(chosen - log_z),
            alternatives=alternatives,
            wanted=tuple((int(w), math.exp(float(logits[w]) - log_z)) for w in wanted),
        )

    def prime(self, prefix: str, cache_path: str | None) -> tuple[int, str]:
        """Get the KV cache to hold `prefix` (a long preamble) before a request that starts
        with it: from memory if it is there, else from `cache_path` (a state file saved by an
        earlier run), else by evaluating it and saving the state there.

        Returns (prefix tokens, "memory" | "disk" | "built"). A state file that is unreadable,
        from another prefix or corrupt (checksum) is ignored and rebuilt; llama.cpp only ever
        sees bytes whose checksum matched what this code wrote.
        """
        import llama_cpp
        import numpy as np

        llm = self.llm
        tokens = self.tokenize(prefix)
        n = len(tokens)
        if n >= context_size(llm):
            raise ContextOverflowError(n, context_size(llm))
        if llm.n_tokens >= n and list(llm.input_ids[:n]) == tokens:
            return n, "memory"
        if cache_path and self._restore_prefix(cache_path, tokens):
            return n, "disk"
        self._reset_after_abort()
        llm.eval(tokens)
        if cache_path:
            size = int(llama_cpp.llama_state_get_size(llm.ctx))
            buf = (ctypes.c_uint8 * size)()
            used = int(llama_cpp.llama_state_get_data(llm.ctx, buf, size))
            if 0 < used <= size:
                ids = np.asarray(tokens, dtype="<i4").tobytes()
                state = bytes(buf)[:used]
                _write_prefix_state(cache_path, ids, state)
        return n, "built"

    def _restore_prefix(self, path: str, tokens: list[int]) -> bool:
        import llama_cpp
        import numpy as np

        parts = _read_prefix_state(path, len(tokens))
        if parts is None:
            return False
        ids, state = parts
        if np.frombuffer(ids, dtype="<i4").tolist() != tokens:
            return False
        self._reset_after_abort()
        buf = (ctypes.c_uint8 * len(state)).from_buffer_copy(state)
        if int(llama_cpp.llama_state_set_data(self.llm.ctx, buf, len(state))) != len(state):
            self._reset_after_abort()
            return False
        llm = self.llm
        llm.input_ids[: len(tokens)] = tokens
        llm.n_tokens = len(tokens)
        return True

    def vocab(self) -> VocabInfo:
        """The model's vocabulary: its tokenizer model, size and a hash of every token text."""
        import hashlib

        import llama_cpp

        vocab = self.llm._model.vocab
        n = int(llama_cpp.llama_vocab_n_tokens(vocab))
        digest = hashlib.sha256()
        for i in range(n):
            digest.update(llama_cpp.llama_vocab_get_text(vocab, i) or b"")
            digest.update(b"\0")
        tokenizer = str(self.llm.metadata.get("tokenizer.ggml.model", "unknown"))
        return VocabInfo(tokenizer=tokenizer, n_tokens=n, sha256=digest.hexdigest()[:16])

    def _reset_after_abort(self) -> None:
        # An aborted decode leaves the KV cache in an unknown state: start clean next time.
        self.llm.reset()
        try:
            import llama_cpp

            mem = llama_cpp.llama_get_memory(self.llm.ctx)
            if mem is not None:
                llama_cpp.llama_memory_clear(mem, True)
        except AttributeError:  # llama-cpp-python builds older than llama_get_memory
            pass

    def _alternatives(
        self, np: Any, llama_cpp: Any, n_vocab: int, k: int, chosen: int
    ) -> tuple[Alternative, ...]:
        """Top-k next-token probabilities from the last logits (softmax at temperature 1).

        Only logits within `_PROB_WINDOW` of the maximum enter the softmax: the rest weigh
        less than exp(-25) each, so the result is exact to a few parts per million of the
        total, while exp() runs over hundreds of values instead of the whole vocabulary.
        """
        ptr = llama_cpp.llama_get_logits_ith(self.llm.ctx, -1)
        logits = np.ctypeslib.as_array(ptr, shape=(n_vocab,))
        peak = float(logits.max())
        ids_near = np.flatnonzero(logits >= peak - _PROB_WINDOW)
        weights = np.exp(logits[ids_near].astype(np.float64) - peak)
        denom = float(weights.sum())
        k = min(k, len(ids_near))
        order = np.argpartition(weights, -k)[-k:]
        order = order[np.argsort(weights[order])[::-1]]
        ids = [int(ids_near[i]) for i in order]
        probs = [float(weights[i]) / denom for i in order]
        if chosen not in ids:
            ids.append(chosen)
            probs.append(float(np.exp(float(logits[chosen]) - peak)) / denom)
        return tuple(
            Alternative(text=self._text(i), id=i, prob=p) for i, p in zip(ids, probs, strict=True)
        )

    def _done(
        self,
        finish: str,
        detail: str,
        prompt: Sequence[int],
        n: int,
        started: float,
        first_at: float | None,
        error: str = "",
    ) -> DoneEvent:
        end = time.perf_counter()
        ttft = (first_at - started) if first_at is not None else end - started
        if first_at is not None and n > 1 and end > first_at:
            rate = (n - 1) / (end - first_at)
        elif n and end > started:
            rate = n / (end - started)
        else:
            rate = 0.0
        return DoneEvent(
            finish_reason=finish,  # type: ignore[arg-type]
            prompt_tokens=len(prompt),
            tokens=n,
            ttft_s=ttft,
            tokens_per_s=rate,
            stop_detail=detail,
            error=error,
        )


_STATE_MAGIC = b"LBVIKV01"
_MAX_STATE = 1 << 30  # a prefix state file larger than this is not one of ours


def _write_prefix_state(path: str, ids: bytes, state: bytes) -> None:
    """magic, sha256 of the rest, token count, ids, state; written atomically."""
    import hashlib

    body = struct.pack("<Q", len(ids) // 4) + ids + state
    data = _STATE_MAGIC + hashlib.sha256(body).digest() + body
    tmp = f"{path}.{os.getpid()}.tmp"
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except OSError as exc:  # a cache that cannot be written only costs time next run
        print(f"localbvi worker: prefix cache not saved: {exc}", file=sys.stderr)
        with contextlib.suppress(OSError):
            os.unlink(tmp)


def _read_prefix_state(path: str, n_tokens: int) -> tuple[bytes, bytes] | None:
    """(ids, state) from a file `_write_prefix_state` wrote, or None if it is not intact."""
    import hashlib

    try:
        with open(path, "rb") as f:
            if os.fstat(f.fileno()).st_size > _MAX_STATE:
                return None
            data = f.read(_MAX_STATE + 1)
    except OSError:
        return None
    head = len(_STATE_MAGIC) + 32 + 8
    if len(data) < head or not data.startswith(_STATE_MAGIC):
        return None
    digest, body = data[len(_STATE_MAGIC) : len(_STATE_MAGIC) + 32], data[len(_STATE_MAGIC) + 32 :]
    if hashlib.sha256(body).digest() != digest:
        return None
    (count,) = struct.unpack("<Q", body[:8])
    if count != n_tokens or len(body) < 8 + 4 * count:
        return None
    return body[8 : 8 + 4 * count], body[8 + 4 * count :]


def _find_stop(text: str, stops: Sequence[str], start: int) -> tuple[int, str] | None:
    """The earliest stop string in `text` that ends after `start`, with its position."""
    best: tuple[int, str] | None = None
    for stop in stops:
        pos = text.find(stop, max(0, start - len(stop) + 1))
        if pos >= 0 and (best is None or pos < best[0]):
            best = (pos, stop)
    return best


def _held_back(text: str, stops: Sequence[str]) -> int:
    """How many trailing characters might be the start of a stop string (kept unsent)."""
    held = 0
    for stop in stops:
        for size in range(min(len(stop) - 1, len(text)), held, -1):
            if text.endswith(stop[:size]):
                held = size
                break
    return held


def _error_reply(exc: BaseException) -> tuple[str, str, dict[str, Any]]:
    extra: dict[str, Any] = {}
    if isinstance(exc, ContextOverflowError):
        extra = {"prompt_tokens": exc.prompt_tokens, "n_ctx": exc.n_ctx}
    if isinstance(exc, LocalbviError):
        return (type(exc).__name__, str(exc), extra)
    print(f"localbvi worker: {type(exc).__name__}: {exc}", file=sys.stderr)
    return ("EngineError", f"llama.cpp failed: {type(exc).__name__}: {exc}", extra)


@contextlib.contextmanager
def _extra_buffer_types(wanted: bool) -> Iterator[bool]:
    """Load with llama.cpp's CPU extra buffer types on or off; yields what is in effect.

    `Llama.__init__` takes its model parameters from `llama_model_default_params()` and has no
    argument for `use_extra_bufts`, so for the length of one load the default is wrapped. A
    build whose parameters lack the field cannot turn them off (reported as on).
    """
    import llama_cpp.llama_cpp as lib

    original = lib.llama_model_default_params
    if wanted or not hasattr(original(), "use_extra_bufts"):
        yield True
        return

    def safe_defaults() -> Any:
        params = original()
        params.use_extra_bufts = False
        return params

    lib.llama_model_default_params = safe_defaults
    try:
        yield False
    finally:
        lib.llama_model_default_params = original


_LOG_CALLBACK: Any = None


def _install_log_filter() -> None:
    """Write llama.cpp's info, warning and error lines to the log file; drop debug chatter."""
    global _LOG_CALLBACK
    if _LOG_CALLBACK is not None:
        return
    import llama_cpp

    state = {"keep": True}

    def log(level: int, text: bytes, _data: Any) -> None:
        if level != 5:  # 5 continues the previous line at its level
            state["keep"] = level in (0, 1, 2, 3)
        if state["keep"]:
            sys.stderr.write(text.decode("utf-8", errors="replace"))

    _LOG_CALLBACK = llama_cpp.llama_log_callback(log)
    llama_cpp.llama_log_set(_LOG_CALLBACK, ctypes.c_void_p(0))


class _Channel:
    """Length-prefixed pickles over a pair of pipes (portable: no select, no sockets)."""

    def __init__(self, rfile: IO[bytes], wfile: IO[bytes]) -> None:
        self.rfile = rfile
        self.wfile = wfile
        self._write_lock = threading.Lock()

    def send(self, obj: Any) -> None:
        data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
        with self._write_lock:
            self.wfile.write(struct.pack("<I", len(data)) + data)
            self.wfile.flush()

    def recv(self) -> Any:
        """The next message; EOFError when the other side is gone."""
        head = self.rfile.read(4)
        if len(head) < 4:
            raise EOFError
        (size,) = struct.unpack("<I", head)
        data = self.rfile.read(size)
        if len(data) < size:
            raise EOFError
        return pickle.loads(data)


class _Cancel:
    """Cancel requests tagged with the request they target, so a late one hits nothing else."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self._lock = threading.Lock()
        self._cancelled: set[int] = set()
        self._current = -1

    def request(self, rid: int) -> None:
        with self._lock:
            self._cancelled.add(rid)
            if rid == self._current:
                self.event.set()

    def begin(self, rid: int) -> None:
        with self._lock:
            self._current = rid
            self.event.clear()
            if rid in self._cancelled:
                self.event.set()


def worker_main(argv: list[str]) -> None:
    """Entry point of the child process: `python -m localbvi.engine.worker LOG_PATH`.

    Requests arrive on stdin, replies leave on (a duplicate of) stdout; fds 1 and 2 are then
    pointed at the log file so that everything llama.cpp prints is captured there.
    """
    # Ctrl-C belongs to the caller, which cancels through the pipe; the child must survive it.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    with contextlib.suppress(ImportError, ValueError, OSError):
        import resource

        # A crash must not leave a core file the size of the model in the user's folder.
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    log_path = argv[0]
    reply_fd = os.dup(1)
    fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    sys.stdout = open(1, "w", buffering=1, closefd=False)  # noqa: SIM115
    sys.stderr = open(2, "w", buffering=1, closefd=False)  # noqa: SIM115
    channel = _Channel(sys.stdin.buffer, os.fdopen(reply_fd, "wb"))
    cancel = _Cancel()
    requests: queue.Queue[Any] = queue.Queue()

    def read_requests() -> None:
        while True:
            try:
                msg = channel.recv()
            except (EOFError, OSError):
                # The parent is gone (even by kill -9, its end of the pipe closes): leave now,
                # not after the generation in progress, so no llama.cpp process is left behind.
                sys.stderr.flush()
                os._exit(0)
            if msg[0] == "cancel":
                cancel.request(msg[1])
            else:
                requests.put(msg)

    threading.Thread(target=read_requests, name="requests", daemon=True).start()
    worker = _Worker(channel, cancel.event)
    while True:
        request = requests.get()
        if request is None or request[0] == "shutdown":
            sys.stderr.flush()
            os._exit(0)  # no interpreter teardown racing the reader thread
        op, rid = request[0], request[1]
        cancel.begin(rid)
        args = request[2:]
        try:
            if op == "load":
                channel.send(("ok", worker.load(*args)))
            elif op == "warm_up":
                channel.send(("ok", worker.warm_up()))
            elif op == "score":
                channel.send(("ok", worker.score(args[0], _progress_sender(channel))))
            elif op == "prime":
                channel.send(("ok", worker.prime(*args)))
            elif op == "vocab":
                channel.send(("ok", worker.vocab()))
            elif op == "render":
                channel.send(("ok", worker.render(args[0])))
            elif op == "tokenize":
                channel.send(("ok", worker.describe(worker.tokenize(args[0]))))
            elif op in ("complete", "chat"):
                _stream(worker, op, args[0], args[1])
            else:
                channel.send(("err", ("LocalbviError", f"unknown request {op!r}", {})))
        except Exception as exc:  # reported to the caller; the child stays up
            channel.send(("err", _error_reply(exc)))
        sys.stderr.flush()


def _progress_sender(channel: _Channel) -> ScoreProgress:
    """Progress of a score as ("p", done, total) messages ahead of its ("ok", scores)."""

    def send(done: int, total: int) -> None:
        channel.send(("p", done, total))

    return send


def _stream(worker: _Worker, op: str, payload: Any, sampling: Sampling) -> None:
    if op == "chat":
        rendered = worker.render(payload)
        tokens: list[int] = [t.id for t in rendered.tokens]
    elif isinstance(payload, str):
        tokens = worker.tokenize(payload)
    else:
        tokens = list(payload)
    if len(tokens) >= context_size(worker.llm):
        raise ContextOverflowError(len(tokens), context_size(worker.llm), sampling.max_tokens)
    worker.conn.send(("started", len(tokens)))
    send = worker.conn.send
    for event in worker.generate(tokens, sampling):
        if isinstance(event, TokenEvent):
            send(("t", event.text, event.id, event.alternatives))
        else:
            send(("done", asdict(event)))


if __name__ == "__main__":
    worker_main(sys.argv[1:])
