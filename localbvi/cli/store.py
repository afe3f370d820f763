"""`localbvi pull REF…`, `models`, `rm REF`, `import PATH`: the model store on the command line."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from localbvi.cli.common import progress_printer

__all__ = ["register"]

_N_CTX = 4096


def register(sub: Any) -> None:
    p = sub.add_parser(
        "pull",
        help="download models into the Hugging Face cache (resumes interrupted downloads)",
        description="Download models by reference: a catalog id[:QUANT], org/repo:QUANT or "
        "org/repo/file.gguf. An interrupted download continues where it stopped.",
    )
    p.add_argument("refs", metavar="REF", nargs="+", help="what to download")
    p.set_defaults(handler=_pull)

    p = sub.add_parser(
        "models",
        help="the catalog's base/instruct pairs and every model on disk",
        description="List the catalog's pairs (✓ = on disk) and every other model on disk, "
        f"with quantization, size and whether it fits in memory at a {_N_CTX}-token context. "
        "Models that LM Studio, Ollama, llama.cpp or GPT4All downloaded are listed too, with "
        "their source (used in place, never copied or deleted), and so are interrupted "
        "downloads, with how far they got and the command that resumes them.",
    )
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(handler=_models)

    p = sub.add_parser(
        "rm",
        help="delete a downloaded model and free its space",
        description="Delete a model from the Hugging Face cache (all parts, all revisions, "
        "and any interrupted download of it), or forget an imported file (deleted only if "
        "imported with --copy). Models of other tools (LM Studio, Ollama, llama.cpp, "
        "GPT4All) are never deleted.",
    )
    p.add_argument("ref", metavar="REF", help="catalog id[:QUANT], Hub ref, or imported path")
    p.set_defaults(handler=_rm)

    p = sub.add_parser(
        "import",
        help="add a local GGUF file to the model list",
        description="Check a local GGUF file and list it with the other models. The file "
        "stays where it is unless --copy is given.",
    )
    p.add_argument("path", metavar="PATH", type=Path, help="the .gguf file")
    p.add_argument("--copy", action="store_true", help="copy it into localbvi's data folder")
    p.set_defaults(handler=_import)


def _pull(args: argparse.Namespace) -> int:
    from localbvi.inspector import format_size, inspect_gguf
    from localbvi.store.library import available_memory, ram_fit
    from localbvi.store.refs import pull

    for ref in args.refs:
        resolved = pull(ref, on_progress=progress_printer())
        info = inspect_gguf(resolved.path)
        fit = ram_fit(info.file_size, _N_CTX, info=info)
        avail = available_memory()
        memory = (
            f"needs ~{format_size(info.estimate_ram(_N_CTX))} at {_N_CTX} tokens of context, "
            f"{format_size(avail)} available"
            if avail is not None
            else "available memory unknown"
        )
        print(f"{ref}: {resolved.path}")
        print(f"  {resolved.display_name}, {format_size(info.file_size)}; memory: {fit} ({memory})")
    return 0


def _models(args: argparse.Namespace) -> int:
    from localbvi.inspector import format_size

    rows = _model_rows()
    if args.json:
        json.dump(rows, sys.stdout, indent=2)
        sys.stdout.write("\n")
        return 0
    header = f"  {'REF':<40} {'KIND':<9} {'QUANT':<8} {'SIZE':>10}  {'RAM':<10} FROM"
    print(header)
    section = None
    titles = {
        "catalog": "catalog (✓ on disk):",
        "other": "\nother models on disk:",
        "partial": "\ninterrupted downloads (`localbvi pull REF` resumes, `localbvi rm REF` "
        "deletes):",
    }
    for row in rows:
        if row["section"] != section:
            section = row["section"]
            print(titles[section])
        if section == "partial":
            print(f"  {row['ref']:<40} {_partial_progress(row)}")
            continue
        mark = "✓" if row["on_disk"] else " "
        size = format_size(row["size"]) if row["on_disk"] else f"~{format_size(row['size'])}"
        print(
            f"{mark} {row['ref']:<40} {row['kind'] or '?':<9} {row['quant'] or '?':<8} "
            f"{size:>10}  {row['ram_fit']:<10} {_source_label(row['source'])}".rstrip()
        )
    return 0


def _source_label(source: str | None) -> str:
    from localbvi.store.foreign import tool_label

    label = tool_label(source or "")
    if label is not None:
        return f"{label} (read-only)"
    return {"hf-cache": "HF cache", "demo": "demo package", "imported": "imported"}.get(
        source or "", ""
    )


def _partial_progress(row: dict[str, Any]) -> str:
    """How far an interrupted download got, and what resumes it."""
    from localbvi.inspector import format_size

    kept = format_size(row["size"])
    if row["percent"] is not None:
        done = f"{row['percent']:.0f}% of {format_size(row['expected_size'])} ({kept} kept)"
    else:
        done = f"{kept} kept (full size unknown)"
    resume = row["resume"] or "pull the same model again to resume"
    return f"{done} · {'resume: ' + resume if row['resume'] else resume}"


def _model_rows() -> list[dict[str, Any]]:
    """Catalog entries (default quant plus any quant on disk), then everything else on disk."""
    from localbvi.catalog import DEFAULT_QUANT, load_catalog
    from localbvi.errors import GGUFError
    from localbvi.inspector import inspect_gguf
    from localbvi.store.library import LocalModel, available_memory, list_local, ram_fit

    local = list_local()
    avail = available_memory()
    by_ref: dict[str, LocalModel] = {m.ref: m for m in local}

    def fit(model: LocalModel | None, size: int) -> str:
        info = None
        if model is not None and model.path.is_file():
            try:
                info = inspect_gguf(model.path)
            except GGUFError:
                return "unreadable"
        return ram_fit(size, _N_CTX, info=info, available=avail)

    rows: list[dict[str, Any]] = []
    shown: set[str] = set()
    catalog = load_catalog()
    for base, instruct in catalog.pairs():
        for entry in (base, instruct):
            quants = [q for q in entry.files if f"{entry.id}:{q}" in by_ref]
            default = entry.file_for(None).quant
            if default not in quants:
                quants.insert(0, default if default in entry.files else DEFAULT_QUANT)
            for quant in quants:
                ref = f"{entry.id}:{quant}"
                model = by_ref.get(ref)
                size = model.size if model else entry.file_for(quant).size
                shown.add(ref)
                rows.append(
                    {
                        "section": "catalog",
                        "ref": ref,
                        "name": entry.name,
                        "kind": entry.kind,
                        "pair": base.id,
                        "quant": quant,
                        "size": size,
                        "on_disk": model is not None,
                        "path": str(model.path) if model else None,
                        "source": model.source if model else None,
                        "repo": entry.repo,
                        "ram_fit": fit(model, size),
                        "read_only": False,
                    }
                )
    for model in local:
        if model.ref in shown:
            continue
        rows.append(
            {
                "section": "other",
                "ref": model.ref,
                "name": model.display_name,
                "kind": model.entry.kind if model.entry else None,
                "pair": None,
                "quant": model.quant,
                "size": model.size,
                "on_disk": True,
                "path": str(model.path),
                "source": model.source,
                "repo": model.repo,
                "ram_fit": fit(model, model.size),
                "read_only": model.source in _FOREIGN,
            }
        )
    rows.extend(_partial_rows())
    return rows


_FOREIGN = ("lmstudio", "ollama", "llama.cpp", "gpt4all")


def _partial_rows() -> list[dict[str, Any]]:
    """Interrupted downloads in the HF cache: how far each got and the command to resume."""
    from localbvi.store.library import list_partials

    return [
        {
            "section": "partial",
            "ref": item.ref,
            "name": item.filename or item.repo,
            "kind": None,
            "pair": None,
            "quant": None,
            "size": item.size,
            "expected_size": item.expected,
            "percent": None if item.percent is None else round(item.percent, 1),
            "on_disk": False,
            "path": str(item.path),
            "source": "hf-cache",
            "repo": item.repo,
            "ram_fit": None,
            "resume": f"localbvi pull {item.ref}" if item.filename else None,
        }
        for item in list_partials()
    ]


def _rm(args: argparse.Namespace) -> int:
    from localbvi.inspector import format_size
    from localbvi.store.library import remove

    freed = remove(args.ref)
    if freed:
        print(f"removed {args.ref}: freed {format_size(freed)}")
    else:
        print(f"forgot {args.ref}: the file itself was left where it is (nothing freed)")
    return 0


def _import(args: argparse.Namespace) -> int:
    from localbvi.inspector import format_size
    from localbvi.store.library import import_model

    model = import_model(args.path, copy=args.copy)
    print(f"imported {model.display_name} ({format_size(model.size)}): use it as {model.ref}")
    return 0
