"""`localbvi search TEXT` and `localbvi pair REF`: GGUF models and their siblings on the Hub."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

__all__ = ["register"]

_N_CTX = 4096
_MAX_QUERY = 200


def _query(value: str) -> str:
    from localbvi.errors import UsageError

    if any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise UsageError("the search text contains control characters")
    text = " ".join(value.split())
    if not text:
        raise UsageError("give some text to search for, e.g. 'qwen 0.5b'")
    if len(text) > _MAX_QUERY:
        raise UsageError(f"the search text is over {_MAX_QUERY} characters; shorten it")
    return text


def _limit(value: str) -> int:
    from localbvi.store.hubapi import MAX_LIMIT

    try:
        n = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {value!r}") from None
    if not 1 <= n <= MAX_LIMIT:
        raise argparse.ArgumentTypeError(f"expected 1 to {MAX_LIMIT}, got {n}")
    return n


def register(sub: Any) -> None:
    p = sub.add_parser(
        "search",
        help="find GGUF models on the Hugging Face Hub, with quantizations and RAM fit",
        description="Search the Hub for GGUF repositories matching TEXT, most downloaded "
        "first, and list each one's quantizations with file size and whether it fits in "
        f"memory at a {_N_CTX}-token context. Gated repos (licence click needed) are marked.",
    )
    p.add_argument("text", metavar="TEXT", nargs="+", help="what to look for, e.g. qwen 0.5b")
    p.add_argument("--limit", type=_limit, default=10, help="most repositories (default 10)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(handler=_search)

    p = sub.add_parser(
        "pair",
        help="find the base (or instruct) sibling of a GGUF repo through the Hub's model tree",
        description="Follow the Hub's base_model tags from a GGUF repository to the model it "
        "was made from, then to its base model (or instruct fine-tune), and propose that "
        "model's GGUF repository as the sibling, showing every hop and the tag it came from.",
    )
    p.add_argument("ref", metavar="REF", help="a GGUF repository, org/name[:QUANT]")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument(
        "--save",
        action="store_true",
        help="add the pair to your catalog (models.toml in the config folder)",
    )
    p.set_defaults(handler=_pair)


def _search(args: argparse.Namespace) -> int:
    from localbvi.inspector import format_size
    from localbvi.store.hub import hub_endpoint
    from localbvi.store.hubapi import search_gguf

    text = _query(" ".join(args.text))
    results = search_gguf(text, limit=args.limit, n_ctx=_N_CTX)
    if args.json:
        rows = [
            {
                "repo": r.repo,
                "downloads": r.downloads,
                "gated": r.gated,
                "quants": [
                    {
                        "quant": o.quant,
                        "file": o.file,
                        "files": list(o.files),
                        "size": o.size,
                        "ram_fit": r.ram_fit.get(o.file, ""),
                        "ref": r.ref(o),
                    }
                    for o in r.quants
                ],
                "problem": r.problem,
            }
            for r in results
        ]
        json.dump(rows, sys.stdout, indent=2, ensure_ascii=False)
        sys.stdout.write("\n")
        return 0
    endpoint = hub_endpoint()
    if not results:
        print(f"no GGUF repositories match '{text}' on {endpoint}; try fewer or other words")
        return 0
    print(
        f"{len(results)} GGUF repositories for '{text}' on {endpoint}, most downloaded first "
        f"(RAM fit at a {_N_CTX}-token context):"
    )
    for r in results:
        gated = ""
        if r.gated:
            gated = f" · gated: accept the licence at {endpoint}/{r.repo}, then `hf auth login`"
        print(f"\n{r.repo} · {r.downloads:,} downloads{gated}")
        if r.problem:
            print(f"  (quantizations unavailable: {r.problem})")
        elif not r.quants:
            print("  (no .gguf files)")
        for o in r.quants:
            parts = f" ({len(o.files)} parts)" if len(o.files) > 1 else ""
            fit = r.ram_fit.get(o.file, "")
            size = format_size(o.size) if o.size > 0 else "size ?"
            print(f"  {o.quant:<8} {size:>9}  {fit:<9}  {r.ref(o)}{parts}")
    print("\ndownload one with `localbvi pull REF`; find its sibling with `localbvi pair REPO`")
    return 0


def _pair(args: argparse.Namespace) -> int:
    from localbvi.errors import HubError
    from localbvi.store.pairing import find_sibling, save_pair

    pairing = find_sibling(args.ref)
    saved = save_pair(pairing) if args.save and pairing.found else None
    if args.json:
        record = pairing.to_json()
        if saved is not None:
            record["saved"] = {
                "path": str(saved.path),
                "base_id": saved.base_id,
                "instruct_id": saved.instruct_id,
                "already": saved.already,
            }
        json.dump(record, sys.stdout, indent=2, ensure_ascii=False)
        sys.stdout.write("\n")
    else:
        if pairing.found:
            print(
                f"{pairing.start} is {pairing.start_kind}; its {pairing.sibling_kind} sibling: "
                f"{pairing.sibling}"
            )
        if pairing.hops:
            print("evidence:" if pairing.found else "followed before stopping:")
            for n, hop in enumerate(pairing.hops, 1):
                print(f"  {n}. {hop.source} {hop.relation} {hop.target}  [{hop.evidence}]")
        if saved is not None:
            verb = "already in" if saved.already else "saved to"
            print(
                f"{verb} {saved.path}: base '{saved.base_id}', instruct "
                f"'{saved.instruct_id}' (see `localbvi models`; compare them with "
                f"`localbvi compare --base {saved.base_id} --instruct {saved.instruct_id} "
                "PROMPT`)"
            )
        elif pairing.found:
            print(f"save the pair to your catalog: localbvi pair {pairing.start} --save")
    if not pairing.found:
        raise HubError(pairing.problem())
    return 0
