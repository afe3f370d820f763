"""Automatic base/instruct pairing through the Hub's model tree.

A GGUF repo made from a model carries the tag `base_model:quantized:ORIG`; a fine-tune carries
`base_model:finetune:PARENT` (the card's own `base_model` field says the same in the author's
words). So, from an instruct GGUF: GGUF → (quantized) → instruct model → (finetune, to the root)
→ base model → the GGUF repos tagged `base_model:quantized:BASE`. From a base GGUF the last
steps run the other way: the fine-tunes tagged `base_model:finetune:BASE`, the original
publisher's first. Every hop is kept with the tag or field it came from, so a user can check
the proposal. Links are followed at most `MAX_HOPS` times and a repo seen twice is a loop,
reported, never followed.

`save_pair` writes the pair into the user catalog (`models.toml` in the config folder), where
`localbvi models`, the app and every `REF` then find it.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from localbvi import paths
from localbvi.engine.types import Kind
from localbvi.errors import CatalogError, HubError, printable, shorten
from localbvi.store.hubapi import (
    HubApi,
    HubNotFoundError,
    ModelInfo,
    QuantOption,
    RepoSummary,
    is_repo_id,
)

__all__ = ["MAX_HOPS", "Hop", "Pairing", "SavedPair", "find_sibling", "save_pair"]

MAX_HOPS = 6
"""Links followed from the given repo before giving up (real chains are 2-4 long)."""
CANDIDATES = 50
"""Repos asked for per tag filter (most downloaded first)."""
FINETUNES_TRIED = 3
"""Instruct candidates whose GGUF copies are looked for, best first."""


# Names that announce a chat/instruct model. Used only to rank a base model's fine-tunes and
# to refuse calling a model "base" when its name says otherwise; the tags decide the rest.
_INSTRUCT_NAME = re.compile(r"(instruct|chat|(?<![a-z])it(?![a-z])|-sft|assistant)", re.I)


@dataclass(frozen=True)
class Hop:
    """One link of the evidence chain: `source` → `target`, and what said so."""

    source: str
    target: str
    relation: str
    """"quantized from", "fine-tuned from", "has the GGUF copy", "has the instruct fine-tune"."""
    evidence: str
    """The tag, field or query the link came from."""

    def to_json(self) -> dict[str, str]:
        return {
            "from": self.source,
            "to": self.target,
            "relation": self.relation,
            "evidence": self.evidence,
        }


@dataclass(frozen=True)
class Pairing:
    """The proposal for one repo: a sibling with its evidence, or what was tried."""

    start: str
    start_kind: Kind | None
    sibling: str | None
    hops: tuple[Hop, ...]
    tried: tuple[str, ...] = ()
    loop: tuple[str, ...] = ()
    """The repos of a loop in the metadata (first and last the same), when one stopped us."""
    start_is_gguf: bool = True
    infos: dict[str, ModelInfo] = field(default_factory=dict, compare=False, repr=False)

    @property
    def found(self) -> bool:
        return self.sibling is not None

    @property
    def sibling_kind(self) -> Kind | None:
        if self.start_kind is None:
            return None
        return "base" if self.start_kind == "instruct" else "instruct"

    def to_json(self) -> dict[str, Any]:
        return {
            "repo": self.start,
            "kind": self.start_kind,
            "sibling": self.sibling,
            "sibling_kind": self.sibling_kind if self.found else None,
            "found": self.found,
            "evidence": [hop.to_json() for hop in self.hops],
            "tried": list(self.tried),
            "loop": list(self.loop),
        }

    def problem(self) -> str:
        """One line for a result without a sibling."""
        if self.loop:
            chain = " → ".join(self.loop)
            return (
                f"the Hub's metadata for {self.start} goes round in a loop ({chain}); no "
                "sibling can be proposed: pair them by hand in models.toml"
            )
        tried = "; ".join(self.tried) or "nothing to follow"
        return f"no sibling found for {self.start}: {tried}"


class _Stop(Exception):
    """Ends the walk early; `tried` and `loop` say why."""


class _Walk:
    """The state of one pairing: hops so far, what was tried, repos seen, model infos."""

    def __init__(self, api: HubApi, start: str) -> None:
        self.api = api
        self.start = start
        self.hops: list[Hop] = []
        self.tried: list[str] = []
        self.seen: list[str] = [start]
        self.loop: tuple[str, ...] = ()
        self.infos: dict[str, ModelInfo] = {}

    def info(self, repo: str, named_by: str) -> ModelInfo:
        if repo not in self.infos:
            try:
                self.infos[repo] = self.api.model_info(repo)
            except HubNotFoundError as exc:
                if repo == self.start:
                    raise
                self.tried.append(f"{named_by} names {repo}, which is not on the Hub")
                raise _Stop from exc
        return self.infos[repo]

    def link(self, source: str, target: str, relation: str, evidence: str) -> None:
        if target in self.seen:
            index = self.seen.index(target)
            self.loop = (*self.seen[index:], target)
            self.hops.append(Hop(source, target, relation, evidence))
            raise _Stop
        if len(self.hops) >= MAX_HOPS:
            self.tried.append(f"stopped after {MAX_HOPS} links without reaching a base model")
            raise _Stop
        self.seen.append(target)
        self.hops.append(Hop(source, target, relation, evidence))


def _parent(info: ModelInfo, relation: str) -> tuple[str | None, str, str]:
    """(parent, evidence, what was looked at) for one relation; a card fallback if no tags.

    The Hub derives `base_model:*` tags from the card's `base_model` field; a card field with
    no tag at all is the author's claim the Hub did not classify, accepted as a last resort.
    """
    looked = f"tag base_model:{relation}:… on {info.id}"
    targets = [t for t in info.tag_targets(relation) if is_repo_id(t)]
    if targets:
        note = "" if len(targets) == 1 else f" (first of {len(targets)})"
        return targets[0], f"tag base_model:{relation}:{targets[0]}{note}", looked
    if not any(t.startswith("base_model:") for t in info.tags):
        cards = [c for c in info.card_base_models if is_repo_id(c)]
        if cards:
            note = "" if len(cards) == 1 else f" (first of {len(cards)})"
            return cards[0], f"cardData.base_model = {cards[0]}{note}", looked
        looked += " or cardData.base_model"
    return None, "", looked


def _short(text: str) -> str:
    return shorten(printable(text), 100)


def find_sibling(ref: str) -> Pairing:
    """The proposed base sibling of an instruct GGUF repo, or instruct sibling of a base one."""
    repo = ref.split(":", 1)[0].strip().strip("/")
    if not is_repo_id(repo):
        raise HubError(
            f"'{_short(ref)}' is not a Hub repository (org/name); give a GGUF repo such as "
            "bartowski/Qwen2.5-0.5B-Instruct-GGUF (find one with `localbvi search`)"
        )
    with HubApi() as api:
        walk = _Walk(api, repo)
        start_kind: Kind | None = None
        sibling: str | None = None
        start_is_gguf = True
        try:
            start = walk.info(repo, "the command line")
            start_is_gguf = start.is_gguf or bool(start.tag_targets("quantized"))
            original = _to_original(walk, start)
            root = _to_root(walk, original)
            if root.id != original.id:
                start_kind = "instruct"
                sibling = _pick_gguf(walk, root.id, prefer=start.author)
            else:
                start_kind = "base"
                sibling = _instruct_gguf(walk, original, prefer=start.author)
        except _Stop:
            pass
        return Pairing(
            start=repo,
            start_kind=start_kind,
            sibling=sibling,
            hops=tuple(walk.hops),
            tried=tuple(walk.tried),
            loop=walk.loop,
            start_is_gguf=start_is_gguf,
            infos=dict(walk.infos),
        )


def _to_original(walk: _Walk, start: ModelInfo) -> ModelInfo:
    """From a GGUF repo up its `quantized` links to the model it was converted from."""
    current = start
    while current.is_gguf or current.tag_targets("quantized"):
        parent, evidence, looked = _parent(current, "quantized")
        if parent is None:
            walk.tried.append(f"{looked}: none, so the model it was made from is unknown")
            raise _Stop
        walk.link(current.id, parent, "quantized from", evidence)
        current = walk.info(parent, evidence)
    return current


def _to_root(walk: _Walk, original: ModelInfo) -> ModelInfo:
    """From a model up its `finetune` links to the model nothing was fine-tuned from."""
    current = original
    while True:
        parent, evidence, looked = _parent(current, "finetune")
        if parent is None:
            if current.id == original.id and _INSTRUCT_NAME.search(current.id.split("/")[-1]):
                walk.tried.append(
                    f"{looked}: none, yet {current.id} is named like an instruct model, so its "
                    "base model is unknown"
                )
                raise _Stop
            return current
        walk.link(current.id, parent, "fine-tuned from", evidence)
        current = walk.info(parent, evidence)


def _rank(rows: Sequence[RepoSummary], prefer: str, exclude: Sequence[str]) -> list[RepoSummary]:
    """Same publisher first, then most downloaded; never a repo already in the chain."""
    skip = {e.lower() for e in exclude}
    usable = [r for r in rows if r.id.lower() not in skip]
    return sorted(usable, key=lambda r: (r.author.lower() != prefer.lower(), -r.downloads))


def _why(choice: RepoSummary, rows: Sequence[RepoSummary], prefer: str) -> str:
    reason = (
        f"same publisher as {prefer}"
        if choice.author.lower() == prefer.lower()
        else "most downloaded"
    )
    return f"{len(rows)} found, {reason}, {choice.downloads:,} downloads"


def _pick_gguf(walk: _Walk, model: str, *, prefer: str) -> str:
    """The GGUF copy of `model`: by the same publisher as `prefer`, else most downloaded."""
    query = f"base_model:quantized:{model}"
    rows = walk.api.list_models(filter=query, limit=CANDIDATES)
    ranked = _rank(rows, prefer, walk.seen)
    if not ranked:
        walk.tried.append(f"models with tag {query}: none, so {model} has no GGUF copy")
        raise _Stop
    choice = ranked[0]
    walk.link(
        model, choice.id, "has the GGUF copy", f"filter {query} ({_why(choice, rows, prefer)})"
    )
    return choice.id


def _instruct_gguf(walk: _Walk, base: ModelInfo, *, prefer: str) -> str:
    """A GGUF of `base`'s instruct fine-tune: the original publisher's first."""
    query = f"base_model:finetune:{base.id}"
    rows = walk.api.list_models(filter=query, limit=CANDIDATES)
    publisher = base.author.lower()
    candidates = sorted(
        (r for r in rows if r.id not in walk.seen),
        key=lambda r: (
            r.author.lower() != publisher,
            not _INSTRUCT_NAME.search(r.id.split("/")[-1]),
            -r.downloads,
        ),
    )
    if not candidates:
        walk.tried.append(f"models with tag {query}: none, so {base.id} has no known fine-tune")
        raise _Stop
    for candidate in candidates[:FINETUNES_TRIED]:
        gguf_query = f"base_model:quantized:{candidate.id}"
        rows_ = walk.api.list_models(filter=gguf_query, limit=CANDIDATES)
        ggufs = _rank(rows_, prefer, [*walk.seen, candidate.id])
        if not ggufs:
            walk.tried.append(f"models with tag {gguf_query}: none")
            continue
        who = "the original publisher's" if candidate.author.lower() == publisher else "another"
        walk.link(
            base.id,
            candidate.id,
            "has the instruct fine-tune",
            f"filter {query} ({len(rows)} found, {who}, {candidate.downloads:,} downloads)",
        )
        choice = ggufs[0]
        walk.link(
            candidate.id,
            choice.id,
            "has the GGUF copy",
            f"filter {gguf_query} ({_why(choice, rows_, prefer)})",
        )
        return choice.id
    raise _Stop


# --- saving into the user catalog -------------------------------------------------------


@dataclass(frozen=True)
class SavedPair:
    path: Path
    base_id: str
    instruct_id: str
    already: bool
    """True when the catalog already had this pair (nothing written)."""


_ID_CLEAN = re.compile(r"[^a-z0-9._-]+")


def _slug(repo: str) -> str:
    name = repo.split("/", 1)[1].lower()
    name = re.sub(r"[-_.]?gguf$", "", name)
    name = _ID_CLEAN.sub("-", name).strip("-._") or "model"
    return name[:80]


def _toml_str(text: str) -> str:
    """A TOML basic string: quotes, backslashes and every control character escaped."""
    out = ['"']
    for ch in text:
        if ch in ('"', "\\"):
            out.append("\\" + ch)
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def _params(n: int | None) -> str:
    if not n:
        return "unknown"
    for unit, scale in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= scale:
            return f"{n / scale:.3g}{unit}"
    return str(n)


def _entry_text(
    *,
    id_: str,
    sibling: str,
    kind: Kind,
    repo: str,
    info: ModelInfo,
    family: str,
    options: Sequence[QuantOption],
) -> str:
    files: dict[str, QuantOption] = {}
    for option in options:  # smallest first; a quant named twice keeps its first file
        if option.quant != "?" and option.size > 0 and option.quant not in files:
            files[option.quant] = option
    if not files:
        raise HubError(f"{repo} lists no GGUF file with a quantization name and a size to save")
    context = info.context_length
    lines = [
        "[[model]]",
        f"id = {_toml_str(id_)}",
        f"name = {_toml_str(repo.split('/', 1)[1])}",
        f"family = {_toml_str(family)}",
        f"kind = {_toml_str(kind)}",
        f"sibling = {_toml_str(sibling)}",
        f"repo = {_toml_str(repo)}",
        f"params = {_toml_str(_params(info.params))}",
        f"context_length = {context or 4096}"
        + ("" if context else "  # the Hub did not say; 4096 assumed"),
        f"license = {_toml_str(info.license or 'unknown')}",
        f"gated = {'true' if info.gated else 'false'}",
        "[model.files]",
    ]
    lines += [
        f"{quant} = {{ file = {_toml_str(o.file)}, size = {o.size} }}" for quant, o in files.items()
    ]
    return "\n".join(lines) + "\n"


def save_pair(pairing: Pairing) -> SavedPair:
    """Append the pair to the user catalog, after checking the whole catalog still loads."""
    from localbvi.catalog import load_catalog
    from localbvi.store.hubapi import quant_options

    if pairing.sibling is None or pairing.start_kind is None:
        raise HubError(pairing.problem())
    if not pairing.start_is_gguf:
        raise HubError(
            f"{pairing.start} holds no GGUF files, so the pair cannot be saved; pair from its "
            f"GGUF copy instead (find one with `localbvi search {pairing.start.split('/')[1]}`)"
        )
    path = paths.user_catalog_path()
    catalog = load_catalog()
    other_kind: Kind = "base" if pairing.start_kind == "instruct" else "instruct"
    repos: dict[str, Kind] = {pairing.start: pairing.start_kind, pairing.sibling: other_kind}
    existing = {e.repo.lower(): e for e in catalog}
    mine = existing.get(pairing.start.lower())
    theirs = existing.get(pairing.sibling.lower())
    if mine is not None and theirs is not None and mine.sibling == theirs.id:
        base, instruct = (mine, theirs) if mine.kind == "base" else (theirs, mine)
        return SavedPair(path, base.id, instruct.id, already=True)

    ids: dict[str, str] = {}
    taken = set(catalog.entries)
    for repo in repos:
        slug = _slug(repo)
        candidate = slug
        if candidate in taken:
            candidate = f"{slug}-{repo.split('/')[0].lower()}"
            candidate = _ID_CLEAN.sub("-", candidate)
        n = 2
        while candidate in taken:
            candidate = f"{slug}-{n}"
            n += 1
        taken.add(candidate)
        ids[repo] = candidate

    original = pairing.hops[0].target if pairing.hops else pairing.start
    family = original.split("/", 1)[1]
    texts: list[str] = []
    with HubApi() as api:
        for repo, kind in repos.items():
            info = pairing.infos.get(repo) or api.model_info(repo)
            other = pairing.sibling if repo == pairing.start else pairing.start
            texts.append(
                _entry_text(
                    id_=ids[repo],
                    sibling=ids[other],
                    kind=kind,
                    repo=repo,
                    info=info,
                    family=family,
                    options=quant_options(api.tree(repo)),
                )
            )
    evidence = "".join(
        f"#   {h.source} {h.relation} {h.target} ({h.evidence})\n" for h in pairing.hops
    )
    block = (
        f"\n# Paired by `localbvi pair {pairing.start}` from the Hub's model tree:\n"
        + printable(evidence)
        + "\n".join(texts)
    )
    try:
        old = path.read_text(encoding="utf-8") if path.is_file() else ""
    except (OSError, UnicodeDecodeError) as exc:
        raise CatalogError(f"{path}: cannot read your catalog ({exc}); fix or move it") from exc
    new = old + ("" if not old or old.endswith("\n") else "\n") + block
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(new, encoding="utf-8")
        try:
            load_catalog(user=tmp)
        except CatalogError as exc:
            raise CatalogError(
                f"the pair was not saved: it would break your catalog ({exc})"
            ) from exc
        os.replace(tmp, path)
    except OSError as exc:
        raise CatalogError(
            f"cannot write your catalog {path} ({exc.strerror or exc}); check the folder"
        ) from exc
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
    base_repo = next(r for r, k in repos.items() if k == "base")
    instruct_repo = next(r for r, k in repos.items() if k == "instruct")
    return SavedPair(path, ids[base_repo], ids[instruct_repo], already=False)
