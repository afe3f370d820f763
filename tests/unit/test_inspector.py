"""The GGUF header reader: facts from the real Gemma files, and bad files refused promptly.

The real files are checked against the `gguf` package's reader (slow, so run once per session);
crafted files are written here with `struct` so every corruption is exact and tiny.
"""

from __future__ import annotations

import os
import random
import shutil
import struct
import sys
import time
import tracemalloc
from collections.abc import Callable, Sequence
from pathlib import Path

import bounded_run
import pytest

from localbvi.errors import GGUFError
from localbvi.inspector import (
    ArrayInfo,
    GGUFInfo,
    TensorInfo,
    format_info,
    format_size,
    inspect_gguf,
)

TEMPLATE = Path(__file__).resolve().parents[2] / "localbvi" / "data" / "gemma3.jinja"
# Child processes measured through /proc, FIFOs, /dev/zero: see bounded_run.
linux_only = pytest.mark.skipif(sys.platform != "linux", reason="Linux: /proc, FIFOs, /dev")

# --- a tiny GGUF writer ------------------------------------------------------------------------

U8, I8, U16, I16, U32, I32, F32, BOOL, STRING, ARRAY, U64, I64, F64 = range(13)
FMT = {U8: "B", I8: "b", U16: "H", I16: "h", U32: "I", I32: "i", F32: "f", BOOL: "?"}
FMT |= {U64: "Q", I64: "q", F64: "d"}
GGML_F32, GGML_F16, GGML_Q8_0 = 0, 1, 8


def s(text: str) -> bytes:
    raw = text.encode()
    return struct.pack("<Q", len(raw)) + raw


def scalar(key: str, vtype: int, value: object) -> bytes:
    body = s(str(value)) if vtype == STRING else struct.pack("<" + FMT[vtype], value)
    return s(key) + struct.pack("<I", vtype) + body


def array(key: str, etype: int, values: Sequence[object]) -> bytes:
    head = s(key) + struct.pack("<IIQ", ARRAY, etype, len(values))
    if etype == STRING:
        return head + b"".join(s(str(v)) for v in values)
    return head + struct.pack(f"<{len(values)}{FMT[etype]}", *values)


def tensor(name: str, shape: tuple[int, ...], ggml_type: int, offset: int) -> bytes:
    dims = struct.pack(f"<I{len(shape)}Q", len(shape), *shape)
    return s(name) + dims + struct.pack("<IQ", ggml_type, offset)


def gguf(
    kvs: list[bytes],
    tensors: Sequence[bytes] = (),
    data: bytes = b"",
    version: int = 3,
    n_tensors: int | None = None,
    n_kv: int | None = None,
) -> bytes:
    head = b"GGUF" + struct.pack(
        "<IQQ",
        version,
        len(tensors) if n_tensors is None else n_tensors,
        len(kvs) if n_kv is None else n_kv,
    )
    body = head + b"".join(kvs) + b"".join(tensors)
    pad = -len(body) % 32
    return body + b"\0" * pad + data


TOKENS = ["<pad>", "<eos>", "<bos>", "hello", "world"]


def tiny_model(version: int = 3) -> bytes:
    """A complete, valid little model: llama-like metadata, a vocab, two tensors."""
    kvs = [
        scalar("general.architecture", STRING, "llama"),
        scalar("general.name", STRING, "Tiny"),
        scalar("general.size_label", STRING, "1K"),
        scalar("general.file_type", U32, 7),
        scalar("llama.context_length", U32, 4096),
        scalar("llama.block_count", U32, 2),
        scalar("llama.embedding_length", U32, 64),
        scalar("llama.attention.head_count", U32, 8),
        scalar("llama.attention.head_count_kv", U32, 2),
        scalar("llama.rope.freq_base", F32, 10000.0),
        scalar("general.some_flag", BOOL, True),
        array("tokenizer.ggml.tokens", STRING, TOKENS),
        array("tokenizer.ggml.scores", F32, [0.0] * len(TOKENS)),
        scalar("tokenizer.ggml.bos_token_id", U32, 2),
        scalar("tokenizer.ggml.eos_token_id", U32, 1),
        scalar("tokenizer.chat_template", STRING, "{{ messages }}\nsecond line"),
    ]
    tensors = [
        tensor("token_embd.weight", (64, 5), GGML_Q8_0, 0),  # 10 blocks x 34 bytes = 340
        tensor("output_norm.weight", (64,), GGML_F32, 352),  # 256 bytes, offset aligned to 32
    ]
    return gguf(kvs, tensors, data=b"\1" * 352 + b"\2" * 256, version=version)


def write(tmp_path: Path, data: bytes, name: str = "m.gguf") -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def refused(path: Path) -> str:
    """Inspect a bad file: it must raise GGUFError promptly; return the message."""
    start = time.perf_counter()
    with pytest.raises(GGUFError) as caught:
        inspect_gguf(path)
    assert time.perf_counter() - start < 0.5
    return str(caught.value)


# --- the real model ----------------------------------------------------------------------------


@pytest.fixture(scope="session")
def reference(gemma_base: Path) -> dict[str, object]:
    """Every key and tensor as the `gguf` package reads them (15-30 s: once per session)."""
    gguf_pkg = pytest.importorskip("gguf")
    reader = gguf_pkg.GGUFReader(gemma_base)
    fields: dict[str, object] = {}
    for f in reader.fields.values():
        if f.name.startswith("GGUF."):
            continue
        vtype = f.types[0]
        if vtype == gguf_pkg.GGUFValueType.ARRAY:
            fields[f.name] = ArrayInfo(f.types[-1].name, len(f.data))
        elif vtype == gguf_pkg.GGUFValueType.STRING:
            fields[f.name] = bytes(f.parts[f.data[0]]).decode()
        else:
            fields[f.name] = f.parts[f.data[0]].tolist()[0]
    tensors = [
        (t.name, tuple(int(d) for d in t.shape), t.tensor_type.name, int(t.n_bytes))
        for t in reader.tensors
    ]
    tokens = reader.fields["tokenizer.ggml.tokens"]
    vocab = [bytes(tokens.parts[i]).decode() for i in tokens.data[:3]]
    return {"fields": fields, "tensors": tensors, "vocab": vocab, "data_offset": reader.data_offset}


@pytest.mark.slow
def test_every_key_and_tensor_matches_the_gguf_package(
    gemma_base: Path, reference: dict[str, object]
) -> None:
    info = inspect_gguf(gemma_base)
    fields = reference["fields"]
    assert isinstance(fields, dict)
    assert set(info.metadata) == set(fields)
    for key, expected in fields.items():
        got = info.metadata[key]
        if isinstance(expected, float):
            assert got == pytest.approx(expected), key
        else:
            assert got == expected, key
    assert [(t.name, t.shape, t.type_name, t.n_bytes) for t in info.tensors] == reference["tensors"]
    assert info.data_offset == reference["data_offset"]
    vocab = reference["vocab"]
    assert isinstance(vocab, list)
    assert (info.bos_token, info.eos_token) == (vocab[2], vocab[1])


def test_gemma_base_facts(gemma_base: Path) -> None:
    info = inspect_gguf(gemma_base)
    assert info.version == 3
    assert info.file_size == gemma_base.stat().st_size
    assert info.architecture == "gemma3"
    assert info.quantization == "Q4_K_M"
    assert info.context_length == 32768
    assert info.n_layers == 18
    assert info.chat_template is None  # a true base model
    assert (info.bos_token, info.bos_token_id) == ("<bos>", 2)
    assert (info.eos_token, info.eos_token_id) == ("<eos>", 1)
    assert info.metadata["tokenizer.ggml.tokens"] == ArrayInfo("STRING", 262144)
    assert info.vocab_size == 262144
    assert 260_000_000 < info.parameter_count < 280_000_000  # "270M"
    # Gemma 3 270M: 1 KV head of 256 (K) + 256 (V) f16 values in each of 18 layers.
    assert info.kv_bytes_per_token == 18 * 1 * (256 + 256) * 2
    # The data region ends exactly at the end of the file.
    assert max(info.data_offset + t.offset + t.n_bytes for t in info.tensors) == info.file_size


def test_gemma_instruct_has_the_template_it_was_given(gemma_instruct: Path) -> None:
    info = inspect_gguf(gemma_instruct)
    assert info.chat_template == TEMPLATE.read_text()
    assert info.has_chat_template
    text = format_info(info)
    first = next(ln.strip() for ln in TEMPLATE.read_text().splitlines() if ln.strip())
    line = next(ln for ln in text.splitlines() if ln.startswith("chat template:"))
    assert line.split(":", 1)[1].strip().startswith("yes: " + first[:40])


def test_format_info_on_the_base_model(gemma_base: Path) -> None:
    info = inspect_gguf(gemma_base)
    lines = format_info(info).splitlines()
    rows = dict((k.strip(), v.strip()) for k, v in (ln.split(": ", 1) for ln in lines))
    assert rows["file"] == str(gemma_base)
    assert rows["size"] == "253 MB"
    assert rows["architecture"] == "gemma3"
    assert rows["quantization"] == "Q4_K_M"
    assert rows["context"] == "32,768 tokens"
    assert rows["layers"] == "18"
    assert rows["chat template"].startswith("no")
    assert rows["BOS"] == "'<bos>' (id 2)"
    assert rows["EOS"] == "'<eos>' (id 1)"
    assert {"RAM at 2,048 ctx", "RAM at 4,096 ctx", "RAM at 32,768 ctx"} <= set(rows)
    # the values line up in one column
    assert len({len(ln) - len(ln.split(":", 1)[1].lstrip()) for ln in lines}) == 1


def test_ram_estimate_matches_what_llama_cpp_allocates(gemma_base: Path) -> None:
    """Figures llama-cpp-python 0.3.36 printed loading this model on CPU (see estimate_ram)."""
    info = inspect_gguf(gemma_base)
    mib = 1024 * 1024
    assert info.kv_cache_bytes(2048) == 36 * mib
    assert info.kv_cache_bytes(32768) == 576 * mib
    # beyond weights and KV: at least llama.cpp's 514.5 MiB compute buffer, not wildly more
    rest = info.estimate_ram(2048) - info.weights_bytes - info.kv_cache_bytes(2048)
    assert 514.5 * mib <= rest <= 700 * mib
    assert info.estimate_ram(4096) - info.estimate_ram(2048) == 36 * mib
    with pytest.raises(ValueError):
        info.estimate_ram(0)


def test_to_json_is_json_ready(gemma_base: Path) -> None:
    import json

    info = inspect_gguf(gemma_base)
    data = json.loads(json.dumps(info.to_json()))
    assert data["architecture"] == "gemma3"
    assert data["has_chat_template"] is False
    assert data["metadata"]["tokenizer.ggml.tokens"] == {"array": "STRING", "length": 262144}
    assert data["tensor_count"] == len(info.tensors)
    assert sum(t["bytes"] for t in data["tensor_types"].values()) == info.weights_bytes
    assert data["estimated_ram"]["2048"] == info.estimate_ram(2048)


def test_truncated_download_says_expected_and_found(gemma_base: Path, tmp_path: Path) -> None:
    part = tmp_path / "partial.gguf"
    with gemma_base.open("rb") as src, part.open("wb") as dst:
        dst.write(src.read(12_000_000))
    message = refused(part)
    assert "model file is truncated: expected 253 MB, found 12 MB" in message


def test_a_file_cut_inside_the_vocabulary_names_the_element(
    gemma_base: Path, tmp_path: Path
) -> None:
    part = tmp_path / "partial.gguf"
    with gemma_base.open("rb") as src, part.open("wb") as dst:
        dst.write(src.read(3_000_000))  # the vocabulary spans ~1 kB to 4.4 MB
    message = refused(part)
    assert "truncated or corrupt" in message
    assert "of 'tokenizer.ggml.tokens'" in message


# --- crafted files: what is read ---------------------------------------------------------------


def test_tiny_model_reads_every_fact(tmp_path: Path) -> None:
    info = inspect_gguf(write(tmp_path, tiny_model()))
    assert info.metadata["llama.rope.freq_base"] == 10000.0
    assert info.metadata["general.some_flag"] is True
    assert info.metadata["tokenizer.ggml.scores"] == ArrayInfo("FLOAT32", 5)
    assert (info.architecture, info.name, info.size_label) == ("llama", "Tiny", "1K")
    assert info.quantization == "Q8_0"
    assert info.tensors == (
        TensorInfo("token_embd.weight", (64, 5), "Q8_0", 0, 340),
        TensorInfo("output_norm.weight", (64,), "F32", 352, 256),
    )
    assert info.parameter_count == 64 * 5 + 64
    assert (info.bos_token, info.eos_token) == ("<bos>", "<eos>")
    # 2 layers x 2 KV heads x (8 + 8) head dims (64 / 8 heads) x 2 bytes
    assert info.kv_bytes_per_token == 2 * 2 * 16 * 2
    rows = {k: v.strip() for k, v in (ln.split(":", 1) for ln in format_info(info).splitlines())}
    assert rows["chat template"] == "yes: {{ messages }}"
    assert rows["parameters"] == "1K (384)"


def test_version_2_is_read(tmp_path: Path) -> None:
    assert inspect_gguf(write(tmp_path, tiny_model(version=2))).version == 2


def test_bos_eos_past_the_first_thousands_of_tokens(tmp_path: Path) -> None:
    vocab = [f"tok{i}" for i in range(10_000)]
    data = gguf(
        [
            array("tokenizer.ggml.tokens", STRING, vocab),
            scalar("tokenizer.ggml.bos_token_id", U32, 4097),
            scalar("tokenizer.ggml.eos_token_id", U32, 9999),
        ]
    )
    info = inspect_gguf(write(tmp_path, data))
    assert (info.bos_token, info.eos_token) == ("tok4097", "tok9999")
    assert info.architecture == "unknown"
    assert info.name == "m"  # no general.name: the file name


def test_token_id_outside_the_vocab_has_no_text(tmp_path: Path) -> None:
    data = gguf(
        [
            array("tokenizer.ggml.tokens", STRING, TOKENS),
            scalar("tokenizer.ggml.eos_token_id", U32, 77),
        ]
    )
    info = inspect_gguf(write(tmp_path, data))
    assert (info.eos_token_id, info.eos_token) == (77, None)
    assert "EOS:" in format_info(info) and "id 77" in format_info(info)


def test_per_layer_kv_heads_and_explicit_head_dims(tmp_path: Path) -> None:
    data = gguf(
        [
            scalar("general.architecture", STRING, "x"),
            scalar("x.block_count", U32, 3),
            scalar("x.embedding_length", U32, 512),
            array("x.attention.head_count", I32, [8, 8, 8]),
            array("x.attention.head_count_kv", I32, [4, 0, 2]),  # layer 1 has no attention
            scalar("x.attention.key_length", U32, 128),
            scalar("x.attention.value_length", U32, 64),
        ]
    )
    info = inspect_gguf(write(tmp_path, data))
    assert info.metadata["x.attention.head_count_kv"] == ArrayInfo("INT32", 3)
    assert info.kv_bytes_per_token == (4 + 0 + 2) * (128 + 64) * 2


def test_absurd_layer_count_is_refused_not_looped_over(tmp_path: Path) -> None:
    data = gguf(
        [
            scalar("general.architecture", STRING, "x"),
            scalar("x.block_count", U64, 1 << 60),
            scalar("x.embedding_length", U32, 512),
            scalar("x.attention.head_count", U32, 8),
        ]
    )
    message = refused(write(tmp_path, data))
    assert "x.block_count is 1,152,921,504,606,846,976" in message
    assert "a layer count is between 0 and 65,536" in message


def test_quantization_falls_back_to_the_dominant_tensor_type(tmp_path: Path) -> None:
    data = gguf(
        [],
        [tensor("a", (32, 4), GGML_F16, 0), tensor("b", (32,), GGML_F32, 256)],
        data=b"\0" * 384,
    )
    assert inspect_gguf(write(tmp_path, data)).quantization == "F16"


@pytest.mark.parametrize(
    ("n", "text"),
    [
        (0, "0 B"),
        (999, "999 B"),
        (12_345, "12 kB"),
        (253_000_000, "253 MB"),
        (12_000_000, "12 MB"),
        (1_100_000_000, "1.1 GB"),
        (1_000_000_000, "1 GB"),
        (999_999_999, "1 GB"),
        (9_960_000, "10 MB"),
    ],
)
def test_format_size(n: int, text: str) -> None:
    assert format_size(n) == text


# --- crafted files: what is refused -----------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"", "the file is empty"),
        (b"GG", "not a GGUF file"),
        (b"PK\x03\x04" + b"\0" * 100, "not a GGUF file: it starts with b'PK\\x03\\x04'"),
        (b"<!DOCTYPE html><html>Not found</html>", "HTML page"),
        (b"version https://git-lfs.github.com/spec/v1\noid sha256:ab", "Git LFS pointer"),
        (b"GGUF\x01\x00\x00\x00" + b"\0" * 16, "GGUF version 1 is obsolete"),
        (b"GGUF\x63\x00\x00\x00" + b"\0" * 16, "GGUF version 99 is not supported"),
        (b"GGUF\x00\x00\x00\x03" + b"\0" * 16, "big-endian"),
    ],
)
def test_not_a_readable_gguf(tmp_path: Path, data: bytes, expected: str) -> None:
    assert expected in refused(write(tmp_path, data))


def test_missing_file_and_folder(tmp_path: Path) -> None:
    assert "no such file" in refused(tmp_path / "nope.gguf")
    assert "is a folder" in refused(tmp_path)


def test_truncated_at_every_offset(tmp_path: Path) -> None:
    whole = tiny_model()
    # the header ends after the last tensor info: name, n_dims, one dim, type, offset
    header_end = whole.index(b"output_norm.weight") + len("output_norm.weight") + 4 + 8 + 4 + 8
    path = write(tmp_path, whole)
    for cut in reversed(range(len(whole))):  # shrinking one file is faster than writing many
        os.truncate(path, cut)
        message = refused(path)
        if cut >= header_end:
            assert "model file is truncated: expected" in message, cut
        elif cut >= 8:
            assert "truncated or corrupt" in message, cut


def test_truncated_inside_a_key_a_string_array_and_tensor_info(tmp_path: Path) -> None:
    whole = tiny_model()
    key = whole.index(b"llama.context_length")
    msg = refused(write(tmp_path, whole[: key + 3]))
    # 16 keys need at least 16 x 13 bytes: the count alone proves the cut
    assert "the metadata count at offset 16 claims 16 entries" in msg
    msg = refused(write(tmp_path, whole[: whole.index(b"second line")]))
    assert "the value of 'tokenizer.chat_template'" in msg
    vocab = whole.index(b"hello")
    msg = refused(write(tmp_path, whole[: vocab + 2]))
    assert "element 3 of 'tokenizer.ggml.tokens'" in msg
    info = whole.index(b"output_norm.weight")
    msg = refused(write(tmp_path, whole[: info + len("output_norm.weight") + 2]))
    assert "tensor 'output_norm.weight'" in msg


def test_absurd_string_length(tmp_path: Path) -> None:
    data = gguf([s("general.name") + struct.pack("<IQ", STRING, 1 << 60) + b"x" * 10])
    message = refused(write(tmp_path, data))
    assert "claims 2^60 bytes but the file has" in message
    assert "'general.name'" in message


@pytest.mark.parametrize("etype", [STRING, U8, U64])
def test_absurd_array_count(tmp_path: Path, etype: int) -> None:
    data = gguf([s("tokenizer.ggml.tokens") + struct.pack("<IIQ", ARRAY, etype, 1 << 60)])
    message = refused(write(tmp_path, data))
    assert "array 'tokenizer.ggml.tokens'" in message and "claims 2^60 entries" in message


def test_absurd_string_inside_a_string_array(tmp_path: Path) -> None:
    body = s("tokenizer.ggml.tokens") + struct.pack("<IIQ", ARRAY, STRING, 3)
    body += s("a") + struct.pack("<Q", (1 << 64) - 1) + b"bc"
    message = refused(write(tmp_path, gguf([body])))
    assert "element 1 of 'tokenizer.ggml.tokens'" in message
    assert "claims 18446744073709551615 bytes" in message


def test_absurd_tensor_and_key_counts(tmp_path: Path) -> None:
    msg = refused(write(tmp_path, gguf([], n_tensors=1 << 60)))
    assert "the tensor count" in msg and "2^60 entries" in msg
    msg = refused(write(tmp_path, gguf([], n_kv=1 << 60)))
    assert "the metadata count" in msg and "2^60 entries" in msg


@pytest.mark.parametrize(
    ("tensors", "expected"),
    [
        ([tensor("t", (1, 1, 1, 1, 1), GGML_F32, 0)], "claims 5 dimensions"),
        ([tensor("t", (4,), 77, 0)], "tensor type 77"),
        ([tensor("t", (33,), GGML_Q8_0, 0)], "not a multiple of the Q8_0 block size 32"),
        ([tensor("t", (4,), GGML_F32, 3)], "not aligned"),
        ([tensor("t", (4,), GGML_F32, 0), tensor("t", (4,), GGML_F32, 32)], "appears twice"),
        ([tensor("t", (1 << 60, 1 << 60), GGML_F32, 0)], "model file is truncated"),
    ],
)
def test_corrupt_tensor_infos(tmp_path: Path, tensors: list[bytes], expected: str) -> None:
    data = gguf([], tensors, data=b"\0" * 64)
    assert expected in refused(write(tmp_path, data))


def test_nested_arrays_are_refused(tmp_path: Path) -> None:
    nested = s("a") + struct.pack("<IIQ", ARRAY, ARRAY, 1) + struct.pack("<IQ", U8, 1) + b"\1"
    assert "arrays of arrays" in refused(write(tmp_path, gguf([nested])))


def test_unknown_value_type_and_duplicate_key(tmp_path: Path) -> None:
    msg = refused(write(tmp_path, gguf([s("k") + struct.pack("<I", 42) + b"\0" * 8])))
    assert "'k'" in msg and "unknown value type 42" in msg
    dup = scalar("general.name", STRING, "a")
    assert "appears twice" in refused(write(tmp_path, gguf([dup, dup])))


def test_claimed_sizes_are_not_allocated(tmp_path: Path) -> None:
    """A file claiming a 400 MB string must not make the reader reserve 400 MB."""
    data = gguf([s("general.name") + struct.pack("<IQ", STRING, 400_000_000) + b"x" * 100])
    path = write(tmp_path, data)
    tracemalloc.start()
    try:
        with pytest.raises(GGUFError):
            inspect_gguf(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1_000_000


@pytest.mark.parametrize("mutate", ["random", "flip"])
def test_garbage_raises_only_gguf_errors(tmp_path: Path, mutate: str) -> None:
    """Random files and randomly damaged models: a GGUFError or a result, never a crash."""
    whole = tiny_model()
    rng = random.Random(1234)
    makers: dict[str, Callable[[], bytes]] = {
        "random": lambda: b"GGUF\x03\0\0\0" + rng.randbytes(rng.randrange(0, 2000)),
        "flip": lambda: bytes(
            b ^ (1 << rng.randrange(8)) if rng.random() < 0.01 else b for b in whole
        ),
    }
    for _ in range(300):
        path = write(tmp_path, makers[mutate]())
        start = time.perf_counter()
        try:
            info = inspect_gguf(path)
        except GGUFError as e:
            assert str(e)
        else:
            assert isinstance(info, GGUFInfo)
        assert time.perf_counter() - start < 0.5


def test_real_file_copy_with_a_corrupt_vocab_length(gemma_base: Path, tmp_path: Path) -> None:
    """The fast vocab walk notices a damaged length deep inside 262k tokens."""
    ref = inspect_gguf(gemma_base)
    assert ref.bos_token == "<bos>"
    copy = tmp_path / "copy.gguf"
    shutil.copyfile(gemma_base, copy)
    with copy.open("r+b") as f:
        head = f.read(8_000_000)
        pos = head.index(b"tokenizer.ggml.tokens") + len("tokenizer.ggml.tokens") + 4 + 4 + 8
        for _ in range(100_000):  # walk to token 100,000 and damage its length
            pos += 8 + struct.unpack_from("<Q", head, pos)[0]
        f.seek(pos)
        f.write(struct.pack("<Q", 1 << 60))
    message = refused(copy)
    assert "element 100000 of 'tokenizer.ggml.tokens'" in message
    assert "claims 2^60 bytes" in message


# --- caps on what a file may claim ------------------------------------------------------------


def sparse(path: Path, head: bytes, size: int) -> Path:
    """`head`, then zeros up to `size` bytes that take no disk space."""
    path.write_bytes(head)
    os.truncate(path, size)
    return path


GB = 1 << 30


def test_nonsense_hyperparameters_are_gguf_errors(tmp_path: Path) -> None:
    base = [scalar("general.architecture", STRING, "llama")]
    for key, vtype, value, expected in [
        ("llama.context_length", I32, -5, "llama.context_length is -5"),
        ("llama.context_length", U32, 0, "a training context length in tokens is between 1"),
        ("llama.context_length", U64, 1 << 40, "is 1,099,511,627,776"),
        ("llama.block_count", I32, -1, "a layer count is between 0 and 65,536"),
        ("llama.embedding_length", I64, -640, "an embedding width"),
        ("llama.attention.head_count_kv", I32, -2, "a KV head count"),
        ("llama.attention.key_length", U32, 1 << 31, "a key width"),
        ("llama.vocab_size", I32, -1, "a vocabulary size"),
    ]:
        message = refused(write(tmp_path, gguf([*base, scalar(key, vtype, value)])))
        assert expected in message and "corrupt" in message, message


def test_sizes_no_model_has_are_refused_before_reading(tmp_path: Path) -> None:
    long_name = tensor("x" * 64, (4,), GGML_F32, 0)
    assert "tensor #0" in refused(write(tmp_path, gguf([], [long_name], data=b"\0" * 32)))
    key = s("k" * 65536) + struct.pack("<IB", U8, 1)
    assert "metadata key #0" in refused(write(tmp_path, gguf([key])))
    # a 17 MB chat template (the file holds it: zeros, sparse)
    head = gguf([s("tokenizer.chat_template") + struct.pack("<IQ", STRING, 17_000_000)])
    message = refused(sparse(tmp_path / "t.gguf", head, len(head) + 17_000_000))
    assert "'tokenizer.chat_template'" in message and "is 17 MB long" in message
    # three 15 MB strings: each is allowed, together they are not
    kvs = [s(f"k{i}") + struct.pack("<IQ", STRING, 15_000_000) + b"\0" * 15_000_000 for i in "ab"]
    kvs.append(s("kc") + struct.pack("<IQ", STRING, 15_000_000))
    head = gguf(kvs)
    message = refused(sparse(tmp_path / "t.gguf", head, len(head) + 15_000_000))
    assert "texts add up to more than 34 MB" in message


def test_a_huge_bos_token_text_is_refused(tmp_path: Path) -> None:
    data = gguf(
        [
            array("tokenizer.ggml.tokens", STRING, ["<pad>", "b" * 2000]),
            scalar("tokenizer.ggml.bos_token_id", U32, 1),
        ]
    )
    assert "the text of token 1 (a BOS or EOS token) is 2 kB long" in refused(write(tmp_path, data))


@linux_only
@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (lambda p: p.mkdir(), "is a folder, not a GGUF file"),
        (lambda p: os.mkfifo(p), "is a named pipe (FIFO), not a GGUF file"),
        (lambda p: p.symlink_to("/dev/zero"), "is a device, not a GGUF file"),
    ],
    ids=["folder", "fifo", "dev-zero"],
)
def test_special_files_are_refused_at_once(
    tmp_path: Path, make: Callable[[Path], None], expected: str
) -> None:
    path = tmp_path / "x.gguf"
    make(path)
    # in a child process: were the check missing, reading a FIFO would hang this test run
    outcome = bounded_run.python(
        "-c",
        "import sys\nfrom localbvi.inspector import inspect_gguf\nfrom localbvi.errors import "
        "GGUFError\ntry:\n    inspect_gguf(sys.argv[1])\nexcept GGUFError as e:\n    print(e)",
        str(path),
        timeout=15,
    )
    assert outcome.returncode == 0, outcome.stderr
    assert outcome.stdout.strip() == f"{path}: {expected}; give the path of a .gguf model file"
    assert outcome.seconds < 10


# --- hostile files, end to end: `localbvi info` in a child process ------------------------------


@pytest.fixture(scope="module")
def gemma_head(gemma_base: Path) -> tuple[bytes, int]:
    """The real model's header (metadata, vocabulary, tensor infos) and its file size."""
    info = inspect_gguf(gemma_base)
    with gemma_base.open("rb") as f:
        return f.read(info.data_offset), info.file_size


def _patched_u32(head: bytes, key: str, vtype: int, fmt: str, value: int) -> bytes:
    at = head.index(s(key)) + len(s(key))
    assert struct.unpack_from("<I", head, at) == (U32,)  # same width: nothing else moves
    return head[:at] + struct.pack(f"<I{fmt}", vtype, value) + head[at + 8 :]


def _with_template(head: bytes, template: str) -> bytes:
    """The header with a chat template key added first (32-byte multiple: data stays aligned)."""
    kv = scalar("tokenizer.chat_template", STRING, template)
    kv = scalar("tokenizer.chat_template", STRING, template + " " * (-len(kv) % 32))
    n_tensors, n_kv = struct.unpack_from("<QQ", head, 8)
    return head[:8] + struct.pack("<QQ", n_tensors, n_kv + 1) + kv + head[24:]


def _flipped(head: bytes, seed: int) -> bytes:
    rng = random.Random(seed)
    data = bytearray(head)
    for _ in range(30):
        at = rng.randrange(len(data))
        data[at] ^= 1 << rng.randrange(8)
    return bytes(data)


Corpus = dict[str, tuple[Path, str | None]]


def hostile_files(tmp: Path, head: bytes, size: int) -> Corpus:
    """The corpus: name -> (file, what `info` says; None where reading it may also succeed)."""
    tokens_at = head.index(s("tokenizer.ggml.tokens")) + len(s("tokenizer.ggml.tokens"))
    tmp.mkdir(exist_ok=True)
    fifo = tmp / "fifo" / "x.gguf"
    fifo.parent.mkdir()
    os.mkfifo(fifo)
    dev_zero = tmp / "zero" / "x.gguf"
    dev_zero.parent.mkdir()
    dev_zero.symlink_to("/dev/zero")
    folder = tmp / "folder.gguf"
    folder.mkdir()
    files: Corpus = {
        "fifo": (fifo, "x.gguf"),
        "dev-zero link": (dev_zero, "x.gguf"),
        "folder": (folder, "folder"),
        "sparse 64 GB of zeros": (sparse(tmp / "zeros.gguf", b"", 64 * GB), "not a GGUF file"),
    }

    def add(name: str, data: bytes, expected: str | None, length: int = 0) -> None:
        path = tmp / f"{len(files)}.gguf"
        files[name] = (sparse(path, data, max(length, len(data))), expected)

    # sparse 64 GB files whose few header bytes claim what the zeros after them could hold
    add("2^31 tensors", gguf([], n_tensors=1 << 31), "more than the 65,536", 64 * GB)
    add("2^32 keys", gguf([], n_kv=1 << 32), "more than the 65,536", 64 * GB)
    many_strings = s("tokenizer.ggml.tokens") + struct.pack("<IIQ", ARRAY, STRING, 1 << 32)
    add("2^32 strings", gguf([many_strings]), "more than the 4,194,304", 64 * GB)
    huge = s("tokenizer.chat_template") + struct.pack("<IQ", STRING, 60 * GB)
    add("a 60 GB chat template", gguf([huge]), "is 64 GB long", 64 * GB)
    add("a 60 GB key", gguf([struct.pack("<Q", 60 * GB)]), "metadata key #0", 64 * GB)
    # the real model's header with one value damaged (the tensor data: sparse zeros)
    add(
        "negative context length",
        _patched_u32(head, "gemma3.context_length", I32, "i", -5),
        "gemma3.context_length is -5",
        size,
    )
    add(
        "absurd layer count",
        _patched_u32(head, "gemma3.block_count", U32, "I", 0xFFFFFFFF),
        "gemma3.block_count is 4,294,967,295",
        size,
    )
    add(
        "absurd embedding width",
        _patched_u32(head, "gemma3.embedding_length", U32, "I", 0xFFFFFFFF),
        "an embedding width",
        size,
    )
    vocab_2_40 = head[: tokens_at + 8] + struct.pack("<Q", 1 << 40) + head[tokens_at + 16 :]
    add("2^40 vocabulary entries", vocab_2_40, "claims 2^40 entries", size)
    with_template = _with_template(head, "{{ x }}\n" + "y" * 10_000_000)
    add("a 10 MB chat template", with_template, None, size + len(with_template) - len(head))
    cuts = {"3": 3, "10": 10, "23": 23, "4096": 4096, "half": len(head) // 2}
    cuts |= {"end-1": len(head) - 1, "end": len(head)}
    for label, cut in cuts.items():
        add(f"cut at {label}", head[:cut], "truncat" if cut > 3 else "not a GGUF file")
    for seed in range(5):
        add(f"30 flipped bits, seed {seed}", _flipped(head, seed), None, size)
    return files


INFO_CASES = [
    "fifo",
    "dev-zero link",
    "folder",
    "sparse 64 GB of zeros",
    "2^31 tensors",
    "2^32 keys",
    "2^32 strings",
    "a 60 GB chat template",
    "a 60 GB key",
    "negative context length",
    "absurd layer count",
    "absurd embedding width",
    "2^40 vocabulary entries",
    "a 10 MB chat template",
    *[f"cut at {c}" for c in ("3", "10", "23", "4096", "half", "end-1", "end")],
    *[f"30 flipped bits, seed {seed}" for seed in range(5)],
]


@pytest.fixture(scope="module")
def hostile(tmp_path_factory: pytest.TempPathFactory, gemma_head: tuple[bytes, int]) -> Corpus:
    return hostile_files(tmp_path_factory.mktemp("hostile"), *gemma_head)


@linux_only
@pytest.mark.slow
@pytest.mark.parametrize("name", INFO_CASES)
def test_info_on_a_hostile_file_is_one_line(hostile: Corpus, name: str) -> None:
    path, expected = hostile[name]
    outcome = bounded_run.python("-m", "localbvi", "info", str(path), timeout=30)
    assert "Traceback" not in outcome.stderr + outcome.stdout
    assert outcome.seconds < 10, outcome.seconds
    assert outcome.max_rss_mb < 512, outcome.max_rss_mb
    assert outcome.leftovers == ()
    if expected is None and outcome.returncode == 0:
        assert "chat template:" in outcome.stdout
        return
    assert outcome.returncode == 1, outcome
    assert outcome.stderr.startswith("localbvi: error: ") and outcome.stderr.count("\n") == 1
    if expected is not None:
        assert expected in outcome.stderr, outcome.stderr


@linux_only
@pytest.mark.slow
def test_a_10_mb_template_is_read_but_not_rendered(hostile: Corpus) -> None:
    path, _ = hostile["a 10 MB chat template"]
    code = (
        "import sys\nfrom localbvi.inspector import inspect_gguf\n"
        "from localbvi.engine.templates import render_chat\nfrom localbvi.errors import "
        "TemplateError\ninfo = inspect_gguf(sys.argv[1])\nprint(len(info.chat_template))\n"
        "try:\n    render_chat(info.chat_template, [], bos_token='', eos_token='', "
        "origin=info.path.name)\nexcept TemplateError as e:\n    print(e)"
    )
    outcome = bounded_run.python("-c", code, str(path))
    assert outcome.returncode == 0, outcome.stderr
    length, message = outcome.stdout.splitlines()
    assert 10_000_000 < int(length) < 10_000_100
    assert message.startswith(f"the chat template of {path.name} is 10,000,")
    assert "not a chat template" in message and "models.toml" in message
    assert outcome.seconds < 10 and outcome.max_rss_mb < 512 and outcome.leftovers == ()


def test_format_info_shows_header_texts_short_and_inert(tmp_path: Path) -> None:
    data = gguf(
        [
            scalar("general.architecture", STRING, "llama\x1b]0;pwned\x07"),
            scalar("general.name", STRING, "\x1b[2J" + "N" * 100_000),
            scalar("general.size_label", STRING, "1B\nfake: line"),
            scalar("tokenizer.chat_template", STRING, "{{ '\x1b[31m' }}"),
        ]
    )
    text = format_info(inspect_gguf(write(tmp_path, data)))
    assert "\x1b" not in text and "\x07" not in text
    rows = dict(line.split(":", 1) for line in text.splitlines())
    assert len(rows) == len(text.splitlines()) == 13  # no line smuggled in
    assert rows["architecture"].strip() == "llama"
    assert rows["name"].strip() == "N" * 119 + "…"
    assert rows["parameters"].strip() == "1B fake: line (0)"
    assert rows["chat template"].strip() == "yes: {{ '' }}"
