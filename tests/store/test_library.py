"""What is on disk: imports, removal, and the RAM-fit estimate."""

from __future__ import annotations

from pathlib import Path

import pytest
from ggufs import TINY_BASE, make_gguf
from hubserver import HubServer
from huggingface_hub import scan_cache_dir

from localbvi.errors import GGUFError, RefError
from localbvi.inspector import inspect_gguf
from localbvi.store.library import import_model, list_local, ram_fit, remove
from localbvi.store.refs import resolve


def _refs() -> list[str]:
    return [m.ref for m in list_local() if m.source != "demo"]


def test_import_records_the_file_in_place(tmp_path: Path) -> None:
    model = tmp_path / "mine-Q5_K_M.gguf"
    model.write_bytes(make_gguf("My Model", 5000))
    imported = import_model(model)
    assert (imported.path, imported.display_name, imported.quant) == (model, "My Model", "Q5_K_M")
    assert _refs() == [str(model)]
    assert resolve(str(model)).path == model

    assert remove(str(model)) == 0  # forgotten, never deleted: it is the user's file
    assert model.exists() and _refs() == []


def test_import_copy_then_rm_frees_the_copy(tmp_path: Path, isolated_home: Path) -> None:
    model = tmp_path / "mine.gguf"
    model.write_bytes(make_gguf("Mine", 5000))
    imported = import_model(model, copy=True)
    assert imported.path.is_relative_to(isolated_home / "data")
    assert remove(str(imported.path)) == model.stat().st_size
    assert not imported.path.exists() and model.exists()


def test_import_refuses_a_file_that_is_not_gguf(tmp_path: Path) -> None:
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"hello")
    with pytest.raises(GGUFError):
        import_model(bad)
    assert _refs() == []


def test_rm_deletes_a_downloaded_model_and_says_how_much(
    hub: HubServer, tiny_catalog: Path, hf_cache: Path
) -> None:
    resolve("tiny")
    resolve("tiny:Q8_0")
    assert remove("tiny") == len(TINY_BASE)
    assert _refs() == ["tiny:Q8_0"]  # the other quant of the same repo stays
    assert remove("test/tiny-GGUF:Q8_0") > 0
    assert _refs() == []
    assert scan_cache_dir(hf_cache).repos == frozenset()
    with pytest.raises(RefError, match="not on disk"):
        remove("tiny")


def test_list_local_names_catalog_files_by_catalog_id(hub: HubServer, tiny_catalog: Path) -> None:
    resolve("test/tiny-it-GGUF/tiny-it-Q4_K_M.gguf")
    hub.add_repo("org/other-GGUF", {"other-Q6_K.gguf": make_gguf("o", 1000)})
    resolve("org/other-GGUF:Q6_K")
    models = {m.ref: m for m in list_local() if m.source != "demo"}
    assert set(models) == {"tiny-it:Q4_K_M", "org/other-GGUF/other-Q6_K.gguf"}
    assert models["tiny-it:Q4_K_M"].entry is not None
    assert models["org/other-GGUF/other-Q6_K.gguf"].quant == "Q6_K"


def test_ram_fit(gemma_base: Path) -> None:
    info = inspect_gguf(gemma_base)
    need = info.estimate_ram(4096)
    assert ram_fit(info.file_size, info=info, available=need * 2) == "fits"
    assert ram_fit(info.file_size, info=info, available=int(need * 1.1)) == "tight"
    assert ram_fit(info.file_size, info=info, available=need // 2) == "won't fit"
    # without a header: the file size alone already decides the extremes
    assert ram_fit(10**9, available=10**8) == "won't fit"
    assert ram_fit(10**6, available=10**10) == "fits"
