"""Model folders laid out the way LM Studio, Ollama, llama.cpp and GPT4All lay them out.

Each builder writes under the folder the autouse `isolated_home` fixture points the tool's
environment variable at (`LMSTUDIO_MODELS`, `OLLAMA_MODELS`, `LLAMA_CACHE`,
`GPT4ALL_MODELS`). `data` is the GGUF's bytes, or a path to hard-link (the real test model,
without copying 253 MB).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

__all__ = ["flat_model", "lmstudio_model", "ollama_manifest", "ollama_model", "place"]


def _root(var: str) -> Path:
    root = Path(os.environ[var])
    root.mkdir(parents=True, exist_ok=True)
    return root


def place(target: Path, data: bytes | Path) -> Path:
    """Write `data` at `target`, or hard-link the file `data` there."""
    target.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(data, Path):
        os.link(data, target)
    else:
        target.write_bytes(data)
    return target


def lmstudio_model(publisher: str, repo: str, filename: str, data: bytes | Path) -> Path:
    return place(_root("LMSTUDIO_MODELS") / publisher / repo / filename, data)


def flat_model(var: str, filename: str, data: bytes | Path) -> Path:
    """A file in llama.cpp's cache (`LLAMA_CACHE`) or GPT4All's folder (`GPT4ALL_MODELS`)."""
    return place(_root(var) / filename, data)


def _sha256(data: bytes | Path) -> str:
    if isinstance(data, bytes):
        return hashlib.sha256(data).hexdigest()
    digest = hashlib.sha256()
    with data.open("rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def ollama_manifest(name: str, text: str) -> Path:
    """Write the manifest of `[HOST/][NAMESPACE/]MODEL[:TAG]` (as `ollama list` names it)."""
    base, _, tag = name.partition(":")
    pieces = base.split("/")
    host = pieces[0] if len(pieces) == 3 else "registry.ollama.ai"
    namespace = pieces[-2] if len(pieces) >= 2 else "library"
    path = _root("OLLAMA_MODELS") / "manifests" / host / namespace / pieces[-1] / (tag or "latest")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def ollama_model(
    name: str, data: bytes | Path, *, file_type: str = "Q4_K_M", digest: str | None = None
) -> Path:
    """Ollama's layout: the GGUF as `blobs/sha256-HEX`, a config blob, and the manifest.

    `digest` (its sha256) saves hashing a big file again; returns the model blob's path.
    """
    root = _root("OLLAMA_MODELS")
    blobs = root / "blobs"
    model_hex = digest or _sha256(data)
    blob = blobs / f"sha256-{model_hex}"
    if not blob.exists():
        place(blob, data)
    config = json.dumps({"model_format": "gguf", "file_type": file_type}).encode()
    config_hex = _sha256(config)
    if not (blobs / f"sha256-{config_hex}").exists():
        place(blobs / f"sha256-{config_hex}", config)
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
        "config": {
            "mediaType": "application/vnd.docker.container.image.v1+json",
            "digest": f"sha256:{config_hex}",
            "size": len(config),
        },
        "layers": [
            {
                "mediaType": "application/vnd.ollama.image.model",
                "digest": f"sha256:{model_hex}",
                "size": blob.stat().st_size,
            },
            {
                "mediaType": "application/vnd.ollama.image.template",
                "digest": "sha256:" + "0" * 64,
                "size": 10,
            },
        ],
    }
    ollama_manifest(name, json.dumps(manifest))
    return blob
