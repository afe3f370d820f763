"""Small synthetic GGUF files that the inspector accepts: a valid header and one F32 tensor."""

from __future__ import annotations

import struct

__all__ = ["TINY_BASE", "TINY_BASE_Q8", "TINY_IT", "make_gguf"]

_STRING = 8
_UINT32 = 4
_UINT16 = 2


def _str(text: str) -> bytes:
    raw = text.encode()
    return struct.pack("<Q", len(raw)) + raw


def make_gguf(
    name: str, n_bytes: int = 2 << 20, *, split: tuple[int, int] | None = None, seed: int = 1
) -> bytes:
    """A GGUF v3 file of about `n_bytes` (one F32 tensor of varied data, so hashes differ)."""
    kvs = [
        _str("general.architecture") + struct.pack("<I", _STRING) + _str("llama"),
        _str("general.name") + struct.pack("<I", _STRING) + _str(name),
    ]
    if split is not None:
        no, count = split
        kvs.append(_str("split.no") + struct.pack("<IH", _UINT16, no - 1))
        kvs.append(_str("split.count") + struct.pack("<IH", _UINT16, count))
    n_values = max(8, n_bytes // 4)
    tensor = _str(f"t{seed}") + struct.pack("<I", 1) + struct.pack("<Q", n_values)
    tensor += struct.pack("<I", 0) + struct.pack("<Q", 0)  # F32, offset 0
    header = b"GGUF" + struct.pack("<IQQ", 3, 1, len(kvs)) + b"".join(kvs) + tensor
    header += b"\0" * (-len(header) % 32)
    pattern = bytes((seed * 131 + i * 7) % 251 for i in range(4096))
    body = (pattern * (n_values * 4 // len(pattern) + 1))[: n_values * 4]
    return header + body


TINY_BASE = make_gguf("tiny base", 3 << 20, seed=1)
TINY_BASE_Q8 = make_gguf("tiny base q8", 4 << 20, seed=2)
TINY_IT = make_gguf("tiny instruct", 3 << 20, seed=3)
