"""Fast GGUF header reader: every scalar key, array lengths, tensor types, derived facts.

Why not `gguf.GGUFReader`: it parses every array element in Python, so opening a model with a
262k-token vocabulary takes 15-28 s. A model picker needs the header in milliseconds. This
reader memory-maps the file and walks it with `struct`, skipping array bodies: fixed-size arrays
by arithmetic, string arrays by hopping over each 8-byte length prefix (the only per-element
work). Every length and count is checked against the bytes left in the file *before* it is
used, so a corrupt or hostile file fails fast with a `GGUFError` and never makes this module
allocate memory in proportion to a size the file merely claims.

Format reference: ggml-org/ggml `docs/gguf.md` (versions 2 and 3, little-endian).
"""

from __future__ import annotations

import mmap
import os
import stat
import struct
import sys
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

from localbvi.errors import GGUFError, printable, shorten

__all__ = [
    "ArrayInfo",
    "GGUFInfo",
    "TensorInfo",
    "format_info",
    "format_size",
    "inspect_gguf",
]

_MAGIC = b"GGUF"
_SUPPORTED_VERSIONS = (2, 3)
_DEFAULT_ALIGNMENT = 32
_MAX_DIMS = 4  # GGML_MAX_DIMS: llama.cpp refuses tensors with more
_MAX_LAYERS = 65536  # beyond any real model: a larger block_count is corrupt

# Caps on what a header may make this reader hold or walk, far above any real model (a
# 262k-token vocabulary, a few thousand tensors, ~50 keys, a 50 kB chat template). A file
# within its own length can still claim absurd amounts: a sparse 64 GB file holds 2.6 billion
# minimal tensor entries. Each cap keeps the reader under ~250 MB and a few seconds.
_MAX_KVS = 1 << 16
_MAX_TENSORS = 1 << 16  # real models: ~300-1,200; old per-expert MoE files ~13,000
_MAX_KEY_BYTES = 65535  # the GGUF spec's limit
_MAX_TENSOR_NAME_BYTES = 63  # llama.cpp's GGML_MAX_NAME (64) counts the terminating NUL
_MAX_STRING_BYTES = 16 * 1024 * 1024  # one metadata string (a chat template is ~2-50 kB)
_MAX_TEXT_TOTAL = 32 * 1024 * 1024  # every metadata string together
_MAX_ARRAY_STRINGS = 1 << 22  # elements of all string arrays together: each one is a hop
_MAX_SMALL_ARRAY_VALUES = 1 << 16  # numbers kept from small arrays, all keys together
_MAX_TOKEN_BYTES = 1024  # the BOS/EOS token texts (real ones are a few bytes)

# Metadata value types (gguf_type): id -> (name, struct format or None, size in bytes).
_UINT8, _INT8, _UINT16, _INT16, _UINT32, _INT32, _FLOAT32, _BOOL = range(8)
_STRING, _ARRAY, _UINT64, _INT64, _FLOAT64 = 8, 9, 10, 11, 12
_VALUE_TYPES: dict[int, tuple[str, str, int]] = {
    _UINT8: ("UINT8", "B", 1),
    _INT8: ("INT8", "b", 1),
    _UINT16: ("UINT16", "H", 2),
    _INT16: ("INT16", "h", 2),
    _UINT32: ("UINT32", "I", 4),
    _INT32: ("INT32", "i", 4),
    _FLOAT32: ("FLOAT32", "f", 4),
    _BOOL: ("BOOL", "?", 1),
    _UINT64: ("UINT64", "Q", 8),
    _INT64: ("INT64", "q", 8),
    _FLOAT64: ("FLOAT64", "d", 8),
}
_TYPE_NAMES = {t: v[0] for t, v in _VALUE_TYPES.items()} | {_STRING: "STRING", _ARRAY: "ARRAY"}
# Smallest encoding of one element, used to bound a claimed count by the bytes left.
_MIN_STRING_BYTES = 8  # the u64 length prefix
_MIN_KV_BYTES = 8 + 4 + 1  # key length, value type, a one-byte value
_MIN_TENSOR_INFO_BYTES = 8 + 4 + 4 + 8  # name length, n_dims, type, offset

# Numeric arrays up to this many elements are read (per-layer hyperparameters such as
# `head_count_kv` on models with a different value per layer); longer ones are only skipped.
_SMALL_ARRAY = 4096
# While skipping the vocabulary, remember the offset of every N-th token so that the BOS/EOS
# texts (whose ids usually come after the array) can be fetched without a second full walk.
_CHECKPOINT_EVERY = 4096

# ggml tensor types: id -> (name, elements per block, bytes per block). Ids 4, 5, 31-33 and
# 36-38 were used by formats since removed from ggml; the ones with a known layout stay readable.
_GGML_TYPES: dict[int, tuple[str, int, int]] = {
    0: ("F32", 1, 4),
    1: ("F16", 1, 2),
    2: ("Q4_0", 32, 18),
    3: ("Q4_1", 32, 20),
    6: ("Q5_0", 32, 22),
    7: ("Q5_1", 32, 24),
    8: ("Q8_0", 32, 34),
    9: ("Q8_1", 32, 40),
    10: ("Q2_K", 256, 84),
    11: ("Q3_K", 256, 110),
    12: ("Q4_K", 256, 144),
    13: ("Q5_K", 256, 176),
    14: ("Q6_K", 256, 210),
    15: ("Q8_K", 256, 292),
    16: ("IQ2_XXS", 256, 66),
    17: ("IQ2_XS", 256, 74),
    18: ("IQ3_XXS", 256, 98),
    19: ("IQ1_S", 256, 50),
    20: ("IQ4_NL", 32, 18),
    21: ("IQ3_S", 256, 110),
    22: ("IQ2_S", 256, 82),
    23: ("IQ4_XS", 256, 136),
    24: ("I8", 1, 1),
    25: ("I16", 1, 2),
    26: ("I32", 1, 4),
    27: ("I64", 1, 8),
    28: ("F64", 1, 8),
    29: ("IQ1_M", 256, 56),
    30: ("BF16", 1, 2),
    31: ("Q4_0_4_4", 32, 18),
    32: ("Q4_0_4_8", 32, 18),
    33: ("Q4_0_8_8", 32, 18),
    34: ("TQ1_0", 256, 54),
    35: ("TQ2_0", 256, 66),
    36: ("IQ4_NL_4_4", 32, 18),
    37: ("IQ4_NL_4_8", 32, 18),
    38: ("IQ4_NL_8_8", 32, 18),
    39: ("MXFP4", 32, 17),
    40: ("NVFP4", 64, 36),
    41: ("Q1_0", 128, 18),
}

# llama.cpp's `llama_ftype` (the `general.file_type` key): what the converter was asked for.
_FILE_TYPES: dict[int, str] = {
    0: "F32",
    1: "F16",
    2: "Q4_0",
    3: "Q4_1",
    4: "Q4_1_SOME_F16",
    7: "Q8_0",
    8: "Q5_0",
    9: "Q5_1",
    10: "Q2_K",
    11: "Q3_K_S",
    12: "Q3_K_M",
    13: "Q3_K_L",
    14: "Q4_K_S",
    15: "Q4_K_M",
    16: "Q5_K_S",
    17: "Q5_K_M",
    18: "Q6_K",
    19: "IQ2_XXS",
    20: "IQ2_XS",
    21: "Q2_K_S",
    22: "IQ3_XS",
    23: "IQ3_XXS",
    24: "IQ1_S",
    25: "IQ4_NL",
    26: "IQ3_S",
    27: "IQ3_M",
    28: "IQ2_S",
    29: "IQ2_M",
    30: "IQ4_XS",
    31: "IQ1_M",
    32: "BF16",
    33: "Q4_0_4_4",
    34: "Q4_0_4_8",
    35: "Q4_0_8_8",
    36: "TQ1_0",
    37: "TQ2_0",
    38: "MXFP4_MOE",
    39: "NVFP4",
    40: "Q1_0",
}
_FILE_TYPE_GUESSED = 1024  # flag llama.cpp ORs in when the type was inferred, not requested

_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")

# llama.cpp's compute-buffer and runtime allowances for `GGUFInfo.estimate_ram`.
_N_UBATCH = 512  # llama.cpp's default physical batch: the graph is reserved for this many tokens
_RUNTIME_OVERHEAD = 64 * 1024 * 1024  # llama.cpp context, thread pools, the Python process


@dataclass(frozen=True)
class ArrayInfo:
    """An array-valued metadata key: its element type and length (elements are not read)."""

    type_name: str
    length: int


@dataclass(frozen=True)
class TensorInfo:
    """One tensor's header entry; `offset` is relative to the start of the tensor data."""

    name: str
    shape: tuple[int, ...]
    type_name: str
    offset: int
    n_bytes: int


@dataclass(frozen=True)
class GGUFInfo:
    """What a GGUF file says about itself, plus the facts a user picks a model by."""

    path: Path
    version: int
    file_size: int
    metadata: Mapping[str, object]
    tensors: tuple[TensorInfo, ...]
    architecture: str
    name: str
    size_label: str | None
    parameter_count: int
    quantization: str
    context_length: int | None
    n_layers: int | None
    chat_template: str | None
    bos_token: str | None
    eos_token: str | None
    bos_token_id: int | None
    eos_token_id: int | None
    kv_bytes_per_token: int | None = None
    """f16 K+V cache bytes for one context token over all layers; None if the header can't say."""
    vocab_size: int | None = None
    embedding_length: int | None = None
    data_offset: int = 0
    """File offset where tensor data begins (after the header and alignment padding)."""

    @property
    def weights_bytes(self) -> int:
        """Bytes of tensor data: what llama.cpp maps or loads as weights."""
        return sum(t.n_bytes for t in self.tensors)

    @property
    def has_chat_template(self) -> bool:
        """True when the model carries its own chat template (an instruct-style model)."""
        return self.chat_template is not None

    def kv_cache_bytes(self, n_ctx: int) -> int:
        """f16 KV-cache bytes for `n_ctx` tokens (see `estimate_ram` for the formula)."""
        if n_ctx < 1:
            raise ValueError(f"context size must be at least 1 token, got {n_ctx}")
        per_token = self.kv_bytes_per_token
        if per_token is None:
            # No attention geometry in the header: assume full multi-head attention with
            # K and V as wide as the embedding (an upper bound for transformer layers).
            per_token = 2 * (self.n_layers or 0) * (self.embedding_length or 0) * 2
        return per_token * n_ctx

    def estimate_ram(self, n_ctx: int) -> int:
        """Bytes needed to run the model with an `n_ctx`-token context, conservatively.

        estimate = weights + KV cache + compute buffer + runtime overhead, where

        - weights = the sum of every tensor's bytes in the file;
        - KV cache = 2 (K and V) x n_ctx x sum over layers of n_head_kv x head_dim x 2 bytes
          (f16), with head_dim from `{arch}.attention.key_length`/`value_length`, else
          embedding_length / head_count. Sliding-window layers are counted as full-context
          layers (llama.cpp may allocate less for them);
        - compute buffer = what llama.cpp reserves for one batch of n_ubatch = min(512, n_ctx)
          tokens: the logits (n_vocab x n_ubatch x 4 bytes) plus activations
          (8 x n_embd x n_ubatch x 4 bytes);
        - runtime overhead = a flat 64 MiB.

        Checked against llama-cpp-python 0.3.36 on Gemma 3 270M (CPU): its KV buffers are 36 MiB
        at n_ctx 2048 and 576 MiB at 32768 (this formula gives the same), and its compute
        buffer is 514.5 MiB at every n_ctx (262k vocab x 512 x 4 = 512 MiB of it). The result
        is what llama.cpp allocates; the resident set can stay lower (385 MiB at 2048 on Linux)
        because most of the logits buffer is never touched.
        """
        kv = self.kv_cache_bytes(n_ctx)
        n_ubatch = min(_N_UBATCH, n_ctx)
        logits = (self.vocab_size or 0) * n_ubatch * 4
        activations = 8 * (self.embedding_length or 0) * n_ubatch * 4
        return self.weights_bytes + kv + logits + activations + _RUNTIME_OVERHEAD

    def to_json(self) -> dict[str, object]:
        """JSON-ready summary for `localbvi info --json` (arrays as their type and length)."""
        types: dict[str, dict[str, int]] = {}
        for t in self.tensors:
            entry = types.setdefault(t.type_name, {"count": 0, "bytes": 0})
            entry["count"] += 1
            entry["bytes"] += t.n_bytes
        metadata: dict[str, object] = {}
        for key, value in self.metadata.items():
            if isinstance(value, ArrayInfo):
                metadata[key] = {"array": value.type_name, "length": value.length}
            else:
                metadata[key] = value
        return {
            "path": str(self.path),
            "file_size": self.file_size,
            "gguf_version": self.version,
            "architecture": self.architecture,
            "name": self.name,
            "size_label": self.size_label,
            "parameter_count": self.parameter_count,
            "quantization": self.quantization,
            "context_length": self.context_length,
            "n_layers": self.n_layers,
            "has_chat_template": self.has_chat_template,
            "chat_template": self.chat_template,
            "bos_token": self.bos_token,
            "bos_token_id": self.bos_token_id,
            "eos_token": self.eos_token,
            "eos_token_id": self.eos_token_id,
            "tensor_count": len(self.tensors),
            "tensor_types": types,
            "estimated_ram": {str(n): self.estimate_ram(n) for n in _ram_contexts(self)},
            "metadata": metadata,
        }


def format_size(n_bytes: int) -> str:
    """Human size in decimal units, like the Hugging Face Hub: "253 MB", "1.1 GB"."""
    if n_bytes < 1000:
        return f"{n_bytes} B"
    value = float(n_bytes)
    for unit in ("kB", "MB", "GB", "TB", "PB", "EB"):
        value /= 1000
        text = f"{value:.1f}" if value < 9.95 else f"{value:.0f}"
        if float(text) < 1000 or unit == "EB":
            return f"{text.removesuffix('.0')} {unit}"
    raise AssertionError("unreachable")  # pragma: no cover


def format_info(info: GGUFInfo) -> str:
    """The text `localbvi info` prints: one aligned `key: value` line per fact.

    Texts from the file are cut short and stripped of terminal control sequences: a header
    can hold a 16 MB name or escape codes that would retitle or clear the user's terminal.
    """
    params = f"{info.parameter_count:,}"
    if info.size_label:
        params = f"{_shown(info.size_label, 40)} ({params})"
    if info.chat_template is not None:
        first = next((ln.strip() for ln in info.chat_template.splitlines() if ln.strip()), "")
        if len(first) > 60:
            first = first[:57] + "..."
        template = f"yes: {_shown(first, 60)}" if first else "yes (empty)"
    else:
        template = "no (a base model: use raw completion)"
    rows: list[tuple[str, str]] = [
        ("file", printable(str(info.path))),
        ("size", format_size(info.file_size)),
        ("architecture", _shown(info.architecture, 60)),
        ("name", _shown(info.name, 120)),
        ("parameters", params),
        ("quantization", info.quantization),
        ("context", f"{info.context_length:,} tokens" if info.context_length else "unknown"),
        ("layers", str(info.n_layers) if info.n_layers is not None else "unknown"),
        ("chat template", template),
        ("BOS", _token_text(info.bos_token, info.bos_token_id)),
        ("EOS", _token_text(info.eos_token, info.eos_token_id)),
    ]
    for n_ctx in _ram_contexts(info):
        rows.append((f"RAM at {n_ctx:,} ctx", f"~{format_size(info.estimate_ram(n_ctx))}"))
    width = max(len(k) for k, _ in rows) + 1
    return "\n".join(f"{k + ':':<{width}} {v}" for k, v in rows)


def inspect_gguf(path: str | os.PathLike[str]) -> GGUFInfo:
    """Read a GGUF file's header and derive what a user needs to know; raise `GGUFError`."""
    p = Path(path)
    try:
        _check_regular(os.stat(p).st_mode, p)  # before opening: a FIFO would block open()
        # O_NONBLOCK: should the path become a FIFO in between, open() returns at once and
        # the check on the opened file refuses it.
        fd = os.open(p, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
        with open(fd, "rb") as f:
            st = os.fstat(fd)
            _check_regular(st.st_mode, p)
            size = st.st_size
            if size < 4:
                _check_magic(f.read(4), p)
            # A map, not reads: only the header's pages are touched, and nothing is allocated
            # for sizes the file merely claims. (A file truncated by another process *while*
            # it is mapped could fault; model files are not written while being inspected.)
            with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as buf:
                parser = _Parser(buf, len(buf), p)
                try:
                    return parser.parse()
                finally:
                    parser.release()
    except FileNotFoundError:
        raise GGUFError(f"{p}: no such file") from None
    except IsADirectoryError:
        raise GGUFError(f"{p}: is a folder, not a GGUF file") from None
    except PermissionError:
        raise GGUFError(f"{p}: permission denied") from None
    except (OSError, ValueError) as e:
        raise GGUFError(f"{p}: cannot read the file ({e})") from None


def _check_regular(mode: int, path: Path) -> None:
    """Refuse what is not a regular file: reading a FIFO or a device never ends."""
    if stat.S_ISREG(mode):
        return
    if stat.S_ISDIR(mode):
        what = "a folder"
    elif stat.S_ISFIFO(mode):
        what = "a named pipe (FIFO)"
    elif stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        what = "a device"
    elif stat.S_ISSOCK(mode):
        what = "a socket"
    else:
        what = "a special file"
    raise GGUFError(f"{path}: is {what}, not a GGUF file; give the path of a .gguf model file")


def _check_magic(head: bytes, path: Path) -> None:
    """Refuse non-GGUF files, naming what the file looks like when that helps the user."""
    if head[:4] == _MAGIC:
        return
    if not head:
        raise GGUFError(f"{path}: the file is empty (an interrupted download?)")
    lower = head[:64].lstrip().lower()
    if lower.startswith((b"<!doctype html", b"<html")):
        hint = "it is an HTML page (a download that returned an error page?)"
    elif lower.startswith(b"version https://git-lfs"):
        hint = "it is a Git LFS pointer, not the model (fetch it with git lfs pull or the Hub)"
    elif lower.startswith(b"{"):
        hint = "it is JSON text"
    elif len(head) >= 9 and head[8:9] == b"{":
        hint = "it looks like a safetensors file (convert it with llama.cpp's convert_hf_to_gguf)"
    elif head[:4] in (b"ggjt", b"tjgg", b"ggml", b"lmgg", b"ggmf", b"fmgg"):
        hint = "it is a pre-GGUF llama.cpp file (GGML/GGJT); convert or re-download it as GGUF"
    else:
        hint = f"it starts with {head[:4]!r}"
    raise GGUFError(f"{path}: not a GGUF file: {hint}")


class _Parser:
    """One pass over a mapped file; `pos` only moves forward past bytes already bounded."""

    def __init__(self, buf: mmap.mmap, size: int, path: Path) -> None:
        self.buf = buf
        self.size = size
        self.path = path
        self.pos = 0
        # The vocabulary's length and the offsets of every _CHECKPOINT_EVERY-th token.
        self.tokens_at: tuple[int, list[int]] | None = None
        # Small numeric arrays by key: per-layer hyperparameters.
        self.per_layer: dict[str, tuple[int | float, ...]] = {}
        # u64 views of the file at each byte phase (see `_hop`); native order must be little.
        self.words: list[memoryview[int]] | None = None
        # What the caps (_MAX_TEXT_TOTAL & co.) allow still, counted down as the header is read.
        self.text_left = _MAX_TEXT_TOTAL
        self.strings_left = _MAX_ARRAY_STRINGS
        self.values_left = _MAX_SMALL_ARRAY_VALUES

    def release(self) -> None:
        """Drop the memoryviews: the map cannot close while they exist."""
        for view in self.words or ():
            view.release()
        self.words = None

    # -- low-level reads, each bounded by the bytes left -----------------------------------

    def _truncated(self, what: str, need: int) -> GGUFError:
        left = self.size - self.pos
        return GGUFError(
            f"{self.path}: truncated or corrupt: {what} at offset {self.pos} needs "
            f"{need} bytes but the file has {left} left"
        )

    def _need(self, n: int, what: str) -> None:
        if n > self.size - self.pos:
            raise self._truncated(what, n)

    def _u32(self, what: str) -> int:
        self._need(4, what)
        (v,) = _U32.unpack_from(self.buf, self.pos)
        self.pos += 4
        return int(v)

    def _u64(self, what: str) -> int:
        self._need(8, what)
        (v,) = _U64.unpack_from(self.buf, self.pos)
        self.pos += 8
        return int(v)

    def _string(self, what: str, limit: int = _MAX_STRING_BYTES) -> str:
        start = self.pos
        n = self._u64(f"the length of {what}")
        left = self.size - self.pos
        if n > left:
            raise GGUFError(
                f"{self.path}: truncated or corrupt: {what} at offset {start} claims "
                f"{_count(n)} bytes but the file has {left} left"
            )
        if n > limit:
            raise GGUFError(
                f"{self.path}: corrupt: {what} at offset {start} is {format_size(n)} long "
                f"(at most {format_size(limit)} makes sense)"
            )
        if n > self.text_left:
            raise GGUFError(
                f"{self.path}: corrupt: the header's texts add up to more than "
                f"{format_size(_MAX_TEXT_TOTAL)} ({what} at offset {start})"
            )
        self.text_left -= n
        raw = self.buf[self.pos : self.pos + n]
        self.pos += n
        return raw.decode("utf-8", errors="replace")

    def _bound_claim(self, count: int, cap: int, what: str, at: int) -> None:
        """A count within the file's length but beyond what any model has: refused."""
        if count > cap:
            raise GGUFError(
                f"{self.path}: corrupt: {what} at offset {at} claims {_count(count)} entries "
                f"(more than the {cap:,} any model could need)"
            )

    def _bound_count(self, count: int, each: int, what: str, at: int) -> None:
        left = self.size - self.pos
        if count * each > left:
            raise GGUFError(
                f"{self.path}: truncated or corrupt: {what} at offset {at} claims "
                f"{_count(count)} entries, but the {left} bytes left hold at most "
                f"{left // each}"
            )

    # -- the file ---------------------------------------------------------------------------

    def parse(self) -> GGUFInfo:
        _check_magic(self.buf[:64], self.path)
        if sys.byteorder == "little":
            whole = memoryview(self.buf)
            self.words = [whole[k : k + (self.size - k) // 8 * 8].cast("Q") for k in range(8)]
            whole.release()
        self.pos = 4
        version = self._u32("the version")
        if version not in _SUPPORTED_VERSIONS:
            raise GGUFError(f"{self.path}: {_version_problem(version)}")
        at = self.pos
        n_tensors = self._u64("the tensor count")
        n_kv = self._u64("the metadata count")
        self._bound_count(n_tensors, _MIN_TENSOR_INFO_BYTES, "the tensor count", at)
        self._bound_count(n_kv, _MIN_KV_BYTES, "the metadata count", at + 8)
        self._bound_claim(n_tensors, _MAX_TENSORS, "the tensor count", at)
        self._bound_claim(n_kv, _MAX_KVS, "the metadata count", at + 8)

        metadata: dict[str, object] = {}
        for i in range(n_kv):
            key_at = self.pos
            key = self._string(f"metadata key #{i}", _MAX_KEY_BYTES)
            if key in metadata:
                raise GGUFError(
                    f"{self.path}: corrupt: metadata key {key!r} appears twice (offset {key_at})"
                )
            metadata[key] = self._value(key)

        tensors_raw = [self._tensor_info(i) for i in range(n_tensors)]
        alignment = metadata.get("general.alignment", _DEFAULT_ALIGNMENT)
        if not isinstance(alignment, int) or alignment <= 0 or alignment & (alignment - 1):
            raise GGUFError(
                f"{self.path}: corrupt: general.alignment is {alignment!r}, not a power of two"
            )
        data_offset = -(-self.pos // alignment) * alignment
        tensors = self._check_tensor_data(tensors_raw, data_offset, alignment)
        return self._derive(version, metadata, tensors, data_offset)

    def _value(self, key: str) -> object:
        at = self.pos
        vtype = self._u32(f"the type of {key!r}")
        if vtype == _STRING:
            return self._string(f"the value of {key!r}")
        if vtype == _ARRAY:
            return self._array(key, at)
        spec = _VALUE_TYPES.get(vtype)
        if spec is None:
            raise GGUFError(
                f"{self.path}: corrupt: {key!r} at offset {at} has unknown value type {vtype}"
            )
        _, fmt, n = spec
        self._need(n, f"the value of {key!r}")
        (v,) = struct.unpack_from("<" + fmt, self.buf, self.pos)
        self.pos += n
        return v

    def _array(self, key: str, at: int) -> ArrayInfo:
        etype = self._u32(f"the element type of {key!r}")
        count_at = self.pos
        count = self._u64(f"the length of {key!r}")
        what = f"array {key!r}"
        if etype == _STRING:
            self._bound_count(count, _MIN_STRING_BYTES, what, count_at)
            if count > self.strings_left:
                raise GGUFError(
                    f"{self.path}: corrupt: {what} at offset {count_at} claims {_count(count)} "
                    f"strings; with the arrays before it, more than the "
                    f"{_MAX_ARRAY_STRINGS:,} any model could need"
                )
            self.strings_left -= count
            self._skip_strings(key, count)
        elif etype == _ARRAY:
            # llama.cpp refuses them too; recursing would let a file nest arrays 80k deep.
            raise GGUFError(
                f"{self.path}: {what} at offset {at} holds arrays of arrays, which GGUF "
                "readers (llama.cpp included) do not support"
            )
        elif etype in _VALUE_TYPES:
            _, fmt, each = _VALUE_TYPES[etype]
            self._bound_count(count, each, what, count_at)
            if count <= min(_SMALL_ARRAY, self.values_left) and etype != _BOOL:
                values = struct.unpack_from(f"<{count}{fmt}", self.buf, self.pos)
                self.per_layer[key] = tuple(values)
                self.values_left -= count
            self.pos += count * each
        else:
            raise GGUFError(
                f"{self.path}: corrupt: array {key!r} at offset {at} has unknown element "
                f"type {etype}"
            )
        return ArrayInfo(_TYPE_NAMES.get(etype, str(etype)), count)

    def _skip_strings(self, key: str, count: int) -> None:
        """Hop over `count` length-prefixed strings: the hot loop for a 262k-token vocab.

        An absurd length makes the next length read fall outside the file or leaves `pos`
        past the end; only then is the array walked again, carefully, to name the bad element.
        """
        pos, size = self.pos, self.size
        hop = self._hop
        checkpoints: list[int] = []
        done = 0
        try:
            while done < count:
                checkpoints.append(pos)
                step = min(_CHECKPOINT_EVERY, count - done)
                pos = hop(pos, step)
                done += step
        except (IndexError, OverflowError, struct.error):
            pos = size + 1
        if pos > size:
            self._locate_bad_string(key, count, checkpoints)
        if key == "tokenizer.ggml.tokens":
            self.tokens_at = (count, checkpoints)
        self.pos = pos

    def _hop(self, pos: int, n: int) -> int:
        """Skip `n` strings from `pos` with no checks; reads past the end raise IndexError.

        Why eight memoryviews: `words[k][j]` is the little-endian u64 at byte k + 8j, and
        indexing a cast memoryview costs a third of a `struct.unpack_from` call. The loop is
        unrolled by eight for the same reason: this runs once per vocabulary token.
        """
        if self.words is None:
            unpack = _U64.unpack_from
            buf = self.buf
            for _ in range(n):
                pos += 8 + unpack(buf, pos)[0]
            return pos
        w = self.words
        for _ in range(n >> 3):
            pos += 8 + w[pos & 7][pos >> 3]
            pos += 8 + w[pos & 7][pos >> 3]
            pos += 8 + w[pos & 7][pos >> 3]
            pos += 8 + w[pos & 7][pos >> 3]
            pos += 8 + w[pos & 7][pos >> 3]
            pos += 8 + w[pos & 7][pos >> 3]
            pos += 8 + w[pos & 7][pos >> 3]
            pos += 8 + w[pos & 7][pos >> 3]
        for _ in range(n & 7):
            pos += 8 + w[pos & 7][pos >> 3]
        return pos

    def _locate_bad_string(self, key: str, count: int, checkpoints: list[int]) -> None:
        """Re-walk, with every check, from the last checkpoint that lies inside the file."""
        block = max(i for i, c in enumerate(checkpoints) if c <= self.size)
        self.pos = checkpoints[block]
        for index in range(block * _CHECKPOINT_EVERY, count):
            what = f"element {index} of {key!r}"
            start = self.pos
            n = self._u64(f"the length of {what}")
            if n > self.size - self.pos:
                raise GGUFError(
                    f"{self.path}: truncated or corrupt: {what} at offset {start} claims "
                    f"{_count(n)} bytes but the file has {self.size - self.pos} left"
                )
            self.pos += n
        raise GGUFError(f"{self.path}: truncated or corrupt: array {key!r} overruns the file")

    def _token_text(self, token_id: int | None) -> str | None:
        """The text of one vocabulary entry, read from the nearest checkpoint."""
        if token_id is None or self.tokens_at is None:
            return None
        count, checkpoints = self.tokens_at
        if not 0 <= token_id < count:
            return None
        pos = checkpoints[token_id // _CHECKPOINT_EVERY]
        for _ in range(token_id % _CHECKPOINT_EVERY):
            pos += 8 + _U64.unpack_from(self.buf, pos)[0]
        (n,) = _U64.unpack_from(self.buf, pos)
        if n > _MAX_TOKEN_BYTES:
            raise GGUFError(
                f"{self.path}: corrupt: the text of token {token_id} (a BOS or EOS token) is "
                f"{format_size(n)} long"
            )
        return self.buf[pos + 8 : pos + 8 + n].decode("utf-8", errors="replace")

    def _tensor_info(self, i: int) -> tuple[str, tuple[int, ...], int, int, int]:
        at = self.pos
        name = self._string(f"the name of tensor #{i}", _MAX_TENSOR_NAME_BYTES)
        n_dims = self._u32(f"the dimension count of tensor {name!r}")
        if n_dims > _MAX_DIMS:
            raise GGUFError(
                f"{self.path}: corrupt: tensor {name!r} at offset {at} claims {n_dims} "
                f"dimensions (at most {_MAX_DIMS})"
            )
        shape = tuple(self._u64(f"a dimension of tensor {name!r}") for _ in range(n_dims))
        type_id = self._u32(f"the type of tensor {name!r}")
        offset = self._u64(f"the data offset of tensor {name!r}")
        return name, shape, type_id, offset, at

    def _check_tensor_data(
        self,
        raw: list[tuple[str, tuple[int, ...], int, int, int]],
        data_offset: int,
        alignment: int,
    ) -> tuple[TensorInfo, ...]:
        tensors: list[TensorInfo] = []
        seen: set[str] = set()
        end = data_offset
        for name, shape, type_id, offset, at in raw:
            spec = _GGML_TYPES.get(type_id)
            if spec is None:
                raise GGUFError(
                    f"{self.path}: tensor {name!r} (offset {at}) has tensor type {type_id}, "
                    "which this version of localbvi does not know (a newer quantization?)"
                )
            type_name, block, block_bytes = spec
            if name in seen:
                raise GGUFError(f"{self.path}: corrupt: tensor {name!r} appears twice")
            seen.add(name)
            n_elements = 1
            for d in shape:
                n_elements *= d
            if shape and shape[0] % block:
                raise GGUFError(
                    f"{self.path}: corrupt: tensor {name!r} has a row of {shape[0]} values, "
                    f"not a multiple of the {type_name} block size {block}"
                )
            if offset % alignment:
                raise GGUFError(
                    f"{self.path}: corrupt: tensor {name!r} data offset {offset} is not "
                    f"aligned to {alignment} bytes"
                )
            n_bytes = n_elements // block * block_bytes
            end = max(end, data_offset + offset + n_bytes)
            tensors.append(TensorInfo(name, shape, type_name, offset, n_bytes))
        if end > self.size:
            raise GGUFError(
                f"{self.path}: model file is truncated: expected {format_size(end)}, found "
                f"{format_size(self.size)} (an interrupted download? download it again)"
            )
        return tuple(tensors)

    def _derive(
        self,
        version: int,
        metadata: dict[str, object],
        tensors: tuple[TensorInfo, ...],
        data_offset: int,
    ) -> GGUFInfo:
        arch = _str(metadata.get("general.architecture")) or "unknown"

        def hp(name: str) -> int | None:
            return self._hyperparameter(metadata, arch, name)

        for name in _HYPERPARAMETERS:
            hp(name)  # every one checked, whether or not this file's facts need it
        n_layers = hp("block_count")
        embd = hp("embedding_length")
        bos_id = _int(metadata.get("tokenizer.ggml.bos_token_id"))
        eos_id = _int(metadata.get("tokenizer.ggml.eos_token_id"))
        tokens = metadata.get("tokenizer.ggml.tokens")
        vocab = tokens.length if isinstance(tokens, ArrayInfo) else hp("vocab_size")
        return GGUFInfo(
            path=self.path,
            version=version,
            file_size=self.size,
            metadata=MappingProxyType(metadata),
            tensors=tensors,
            architecture=arch,
            name=_str(metadata.get("general.name")) or self.path.stem,
            size_label=_str(metadata.get("general.size_label")),
            parameter_count=sum(_n_elements(t.shape) for t in tensors),
            quantization=_quantization(metadata, tensors),
            context_length=hp("context_length"),
            n_layers=n_layers,
            chat_template=_str(metadata.get("tokenizer.chat_template")),
            bos_token=self._token_text(bos_id),
            eos_token=self._token_text(eos_id),
            bos_token_id=bos_id,
            eos_token_id=eos_id,
            kv_bytes_per_token=self._kv_bytes_per_token(metadata, arch, n_layers, embd),
            vocab_size=vocab,
            embedding_length=embd,
            data_offset=data_offset,
        )

    def _hyperparameter(self, metadata: dict[str, object], arch: str, name: str) -> int | None:
        """`{arch}.{name}` if it is an integer; GGUFError if it is one no model could have."""
        key = f"{arch}.{name}"
        value = _int(metadata.get(key))
        low, high, meaning = _HYPERPARAMETERS[name]
        if value is not None and not low <= value <= high:
            raise GGUFError(
                f"{self.path}: corrupt: {key} is {value:,}, but {meaning} is between "
                f"{low:,} and {high:,} (a damaged file?)"
            )
        return value

    def _kv_bytes_per_token(
        self, metadata: dict[str, object], arch: str, n_layers: int | None, embd: int | None
    ) -> int | None:
        """Sum over layers of n_head_kv x (key_length + value_length) x 2 bytes (f16)."""
        if n_layers is None or not 0 < n_layers <= _MAX_LAYERS:
            return None
        heads = self._per_layer_values(metadata, f"{arch}.attention.head_count", n_layers)
        kv_heads = self._per_layer_values(metadata, f"{arch}.attention.head_count_kv", n_layers)
        if kv_heads is None:
            kv_heads = heads  # no grouped-query attention: one KV head per query head
        if kv_heads is None:
            return None
        k_len = self._hyperparameter(metadata, arch, "attention.key_length")
        v_len = self._hyperparameter(metadata, arch, "attention.value_length")
        total = 0
        for layer in range(n_layers):
            head_dim = 0
            if not k_len or not v_len:
                n_head = heads[layer] if heads else 0
                if not n_head or not embd:
                    return None
                head_dim = embd // n_head
            total += kv_heads[layer] * ((k_len or head_dim) + (v_len or head_dim)) * 2
        return total

    def _per_layer_values(
        self, metadata: dict[str, object], key: str, n_layers: int
    ) -> list[int] | None:
        """A hyperparameter as one value per layer, or None if absent or not sensible."""
        value = metadata.get(key)
        scalar = _int(value)
        values = [scalar] * n_layers if scalar is not None else self.per_layer.get(key, ())
        ints = [v for v in values if isinstance(v, int) and v >= 0]
        return ints if len(ints) == n_layers else None


# Header hyperparameters a user sees or the RAM estimate uses: (lowest, highest, what it is).
# Outside these bounds the value is damage, not a model (llama.cpp reads most as uint32).
_HYPERPARAMETERS: dict[str, tuple[int, int, str]] = {
    "context_length": (1, 1 << 32, "a training context length in tokens"),
    "block_count": (0, _MAX_LAYERS, "a layer count"),
    "embedding_length": (0, 1 << 20, "an embedding width"),
    "vocab_size": (0, 1 << 31, "a vocabulary size"),
    "attention.head_count": (0, 1 << 16, "an attention head count"),
    "attention.head_count_kv": (0, 1 << 16, "a KV head count"),
    "attention.key_length": (0, 1 << 20, "a key width"),
    "attention.value_length": (0, 1 << 20, "a value width"),
}


def _version_problem(version: int) -> str:
    swapped = int.from_bytes(version.to_bytes(4, "little"), "big")
    if swapped in _SUPPORTED_VERSIONS:
        return "this is a big-endian GGUF file, which localbvi does not support"
    if version == 1:
        return "GGUF version 1 is obsolete (2023); download a current GGUF of this model"
    return f"GGUF version {version} is not supported (this reader knows versions 2 and 3)"


def _quantization(metadata: Mapping[str, object], tensors: tuple[TensorInfo, ...]) -> str:
    """The quantization a user would name: `general.file_type`, else the dominant tensor type."""
    ftype = _int(metadata.get("general.file_type"))
    if ftype is not None:
        name = _FILE_TYPES.get(ftype & ~_FILE_TYPE_GUESSED)
        if name is not None:
            return name
    by_bytes: Counter[str] = Counter()
    for t in tensors:
        by_bytes[t.type_name] += t.n_bytes
    return by_bytes.most_common(1)[0][0] if by_bytes else "unknown"


def _ram_contexts(info: GGUFInfo) -> list[int]:
    return sorted({2048, 4096} | ({info.context_length} if info.context_length else set()))


def _shown(text: str, limit: int) -> str:
    """Untrusted text from the header, on one line, short, without control sequences."""
    return shorten(" ".join(printable(text).split()), limit)


def _token_text(text: str | None, token_id: int | None) -> str:
    if token_id is None:
        return "none"
    return f"{text!r} (id {token_id})" if text is not None else f"id {token_id}"


def _count(n: int) -> str:
    """A claimed size, with its power of two when it is one (2^60 reads better than digits)."""
    if n > 1 << 32 and n & (n - 1) == 0:
        return f"2^{n.bit_length() - 1}"
    return str(n)


def _n_elements(shape: tuple[int, ...]) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


def _str(value: object) -> str | None:
    return value if isinstance(value, str) else None


def _int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None
