"""Models that LM Studio, Ollama, llama.cpp and GPT4All downloaded: listed, used, never deleted."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
from ggufs import TINY_BASE, TINY_IT, make_gguf
from othertools import flat_model, lmstudio_model, ollama_manifest, ollama_model

from localbvi.cli import main
from localbvi.errors import RefError
from localbvi.store import foreign
from localbvi.store.refs import resolve

GGUF = make_gguf("other tool", 6000, seed=7)


def _models_json(capsys: pytest.CaptureFixture[str]) -> dict[str, dict[str, object]]:
    assert main(["models", "--json"]) == 0
    return {row["ref"]: row for row in json.loads(capsys.readouterr().out)}


def test_models_lists_every_tool_with_its_source(capsys: pytest.CaptureFixture[str]) -> None:
    lm = lmstudio_model("bartowski", "Foo-GGUF", "Foo-Q5_K_M.gguf", GGUF)
    blob = ollama_model("llama3.2:1b", GGUF, file_type="Q8_0")
    ollama_model("someone/tiny:latest", make_gguf("tiny", 5000, seed=8))
    cpp = flat_model("LLAMA_CACHE", "ggml-org_bar-GGUF_bar-Q4_0.gguf", GGUF)
    g4a = flat_model("GPT4ALL_MODELS", "Baz-Q4_0.gguf", GGUF)

    rows = _models_json(capsys)
    expected = {
        "lmstudio:bartowski/Foo-GGUF/Foo-Q5_K_M.gguf": ("lmstudio", lm, "Q5_K_M"),
        "ollama:llama3.2:1b": ("ollama", blob, "Q8_0"),
        "llamacpp:ggml-org_bar-GGUF_bar-Q4_0.gguf": ("llama.cpp", cpp, "Q4_0"),
        "gpt4all:Baz-Q4_0.gguf": ("gpt4all", g4a, "Q4_0"),
    }
    for ref, (source, path, quant) in expected.items():
        row = rows[ref]
        assert (row["source"], row["path"], row["quant"]) == (source, str(path), quant)
        assert row["on_disk"] is True and row["read_only"] is True
        assert row["size"] == len(GGUF)
    assert rows["ollama:someone/tiny:latest"]["source"] == "ollama"

    assert main(["models"]) == 0
    out = capsys.readouterr().out
    line = next(x for x in out.splitlines() if "ollama:llama3.2:1b" in x)
    assert "Q8_0" in line and "Ollama (read-only)" in line
    assert "LM Studio (read-only)" in out and "GPT4All (read-only)" in out


def test_only_real_gguf_files_inside_the_folder_count(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lmstudio_model("pub", "repo", "model-Q4_K_M.gguf", GGUF)
    lmstudio_model("pub", "repo", "mmproj-model-f16.gguf", GGUF)  # a vision projector
    lmstudio_model("pub", "repo", "fake-Q4_K_M.gguf", b"not a gguf at all" * 10)
    lmstudio_model("pub", "repo", "notes.txt", b"hello")
    lmstudio_model("pub", "repo", "big-00001-of-00002.gguf", GGUF)
    lmstudio_model("pub", "repo", "big-00002-of-00002.gguf", b"second part")
    lmstudio_model("pub", "repo", "half-00001-of-00002.gguf", GGUF)  # part 2 missing
    flat_model("GPT4ALL_MODELS", "incomplete-Big-Q4_0.gguf", GGUF)  # GPT4All mid-download
    outside = tmp_path / "elsewhere" / "secret-Q4_0.gguf"
    outside.parent.mkdir()
    outside.write_bytes(GGUF)
    root = Path(os.environ["LMSTUDIO_MODELS"])
    (root / "pub" / "repo" / "link-out-Q4_0.gguf").symlink_to(outside)
    (root / "pub" / "linked-dir").symlink_to(outside.parent, target_is_directory=True)
    (root / "pub" / "repo" / "link-in-Q4_0.gguf").symlink_to(root / "pub/repo/model-Q4_K_M.gguf")

    refs = {r: row for r, row in _models_json(capsys).items() if r.startswith("lmstudio:")}
    assert sorted(refs) == [
        "lmstudio:pub/repo/big-00001-of-00002.gguf",
        "lmstudio:pub/repo/link-in-Q4_0.gguf",
        "lmstudio:pub/repo/model-Q4_K_M.gguf",
    ]
    assert refs["lmstudio:pub/repo/big-00001-of-00002.gguf"]["size"] == len(GGUF) + 11
    assert not any(r.startswith("gpt4all:") for r in _models_json(capsys))
    with pytest.raises(RefError, match="not among LM Studio's models"):
        resolve("lmstudio:pub/repo/link-out-Q4_0.gguf")


def test_malformed_ollama_manifests_are_skipped(capsys: pytest.CaptureFixture[str]) -> None:
    good = ollama_model("good:1b", GGUF)
    digest = good.name.removeprefix("sha256-")
    ollama_manifest("broken:json", "{ this is not json")
    ollama_manifest("nolayers:x", json.dumps({"schemaVersion": 2}))
    ollama_manifest("listnot:x", json.dumps([1, 2, 3]))
    model_layer = {"mediaType": "application/vnd.ollama.image.model"}
    ollama_manifest(
        "baddigest:x", json.dumps({"layers": [{**model_layer, "digest": "sha256:../../etc"}]})
    )
    ollama_manifest(
        "noblob:x", json.dumps({"layers": [{**model_layer, "digest": "sha256:" + "1" * 64}]})
    )
    text = Path(os.environ["OLLAMA_MODELS"]) / "blobs" / ("sha256-" + "2" * 64)
    text.write_text("a template, not weights")
    ollama_manifest(
        "notgguf:x", json.dumps({"layers": [{**model_layer, "digest": "sha256:" + "2" * 64}]})
    )
    ollama_manifest("huge:x", json.dumps({"layers": [], "pad": "x" * (2 << 20)}))
    unreadable = ollama_manifest("dir:x", "")
    unreadable.unlink()
    unreadable.mkdir()  # a folder where a manifest should be

    refs = [r for r in _models_json(capsys) if r.startswith("ollama:")]
    assert refs == ["ollama:good:1b"]
    assert resolve("ollama:good:1b").path == good
    assert digest in str(resolve("ollama:good:1b").path)
    with pytest.raises(RefError, match="not among Ollama's models"):
        resolve("ollama:broken:json")


def test_rm_never_deletes_another_tools_model(capsys: pytest.CaptureFixture[str]) -> None:
    blob = ollama_model("llama3.2:1b", GGUF)
    lm = lmstudio_model("pub", "repo", "model-Q4_K_M.gguf", GGUF)
    for ref, tool in (
        ("ollama:llama3.2:1b", "Ollama"),
        (str(blob), "Ollama"),
        ("lmstudio:pub/repo/model-Q4_K_M.gguf", "LM Studio"),
        (str(lm), "LM Studio"),
    ):
        assert main(["rm", ref]) == 1
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("localbvi: error: ")
        assert f"belongs to {tool}" in err and "nothing was removed" in err
    assert blob.read_bytes() == GGUF and lm.read_bytes() == GGUF
    assert main(["rm", "ollama:llama3.2:1b"]) == 1
    assert "run `ollama rm llama3.2:1b`" in capsys.readouterr().err


def test_foreign_refs_resolve_and_pull_downloads_nothing(
    capsys: pytest.CaptureFixture[str],
) -> None:
    blob = ollama_model("hf.co/org/repo:Q4_K_M", GGUF)
    ollama_model("qwen:latest", GGUF)
    resolved = resolve("ollama:hf.co/org/repo:Q4_K_M")
    assert resolved.path == blob
    assert resolve("ollama:qwen").path == resolve("ollama:qwen:latest").path
    assert "(Ollama)" in resolved.display_name
    assert main(["pull", "ollama:qwen"]) == 0
    assert f"ollama:qwen: {blob}" in capsys.readouterr().out  # the same blob: same bytes
    for bad in ("ollama:../../etc/passwd", "lmstudio:only-a-file.gguf", "gpt4all:a/b.gguf"):
        with pytest.raises(RefError) as err:
            resolve(bad)
        assert "\n" not in str(err.value)


def test_the_scan_is_bounded_and_fast(monkeypatch: pytest.MonkeyPatch) -> None:
    for i in range(60):
        flat_model("LLAMA_CACHE", f"m{i:03d}-Q4_0.gguf", GGUF)
    start = time.perf_counter()
    assert len(foreign.scan()) == 60
    elapsed = time.perf_counter() - start
    assert elapsed < 2.0, f"scanning 60 small models took {elapsed:.2f} s"
    monkeypatch.setattr(foreign, "MAX_ENTRIES", 10)
    assert len(foreign.scan()) == 10  # a huge folder costs a bounded amount of work


def test_default_locations_follow_home(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for var in ("LMSTUDIO_MODELS", "OLLAMA_MODELS", "LLAMA_CACHE", "GPT4ALL_MODELS"):
        monkeypatch.delenv(var)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.delenv("XDG_DATA_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("OLLAMA_MODELS", str(tmp_path / ".ollama" / "models"))  # not /usr/share
    lm = tmp_path / ".lmstudio/models/pub/repo/a-Q4_0.gguf"
    old_lm = tmp_path / ".cache/lm-studio/models/pub/repo/b-Q4_0.gguf"
    cpp = tmp_path / ".cache/llama.cpp/c-Q4_0.gguf"
    g4a = tmp_path / ".local/share/nomic.ai/GPT4All/d-Q4_0.gguf"
    for path in (lm, old_lm, cpp, g4a):
        path.parent.mkdir(parents=True)
        path.write_bytes(GGUF)
    refs = {m.ref: m.path for m in foreign.scan()}
    assert refs == {
        "lmstudio:pub/repo/a-Q4_0.gguf": lm,
        "lmstudio:pub/repo/b-Q4_0.gguf": old_lm,
        "llamacpp:c-Q4_0.gguf": cpp,
        "gpt4all:d-Q4_0.gguf": g4a,
    }


@pytest.mark.slow
def test_a_discovered_model_loads_and_completes(
    gemma_base: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    blob = ollama_model("gemma3:270m", gemma_base)  # a hard link: nothing copied
    assert blob.stat().st_ino == gemma_base.stat().st_ino
    code = main(
        [
            "complete",
            "-m",
            "ollama:gemma3:270m",
            "--max-tokens",
            "8",
            "--temperature",
            "0",
            "--no-save",
            "What is 2+2?",
        ]
    )
    out, err = capsys.readouterr()
    assert code == 0, err
    assert out.strip(), "the model produced no text"
    assert "tok/s" in err or "tokens" in err


@pytest.mark.parametrize(
    "ref",
    [
        "ollama:" + "a" * 5000,
        "ollama:a\x00b",
        "lmstudio:pub/repo/x\x1b[31m.gguf",
        "lmstudio:only-a-file.gguf",
        "gpt4all:../escape.gguf",
        "llamacpp:" + "b" * 5000 + ".gguf",
    ],
)
def test_bad_foreign_refs_are_one_short_line(ref: str, capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (["rm", ref], ["info", ref], ["pull", ref]):
        assert main(argv) == 1
        err = capsys.readouterr().err
        assert err.startswith("localbvi: error: ") and err.count("\n") == 1, err[:300]
        assert len(err) < 400 and "\x1b" not in err and "\x00" not in err


def test_older_ollama_blob_names_are_found(capsys: pytest.CaptureFixture[str]) -> None:
    blob = ollama_model("old:7b", GGUF)
    old_name = blob.with_name(blob.name.replace("sha256-", "sha256:"))
    blob.rename(old_name)
    assert _models_json(capsys)["ollama:old:7b"]["path"] == str(old_name)


def test_lm_studio_copies_of_catalog_files_are_listed_as_the_catalog_models(
    tiny_catalog: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # The catalog's own repository, as LM Studio lays out a Hub download.
    own = lmstudio_model("test", "tiny-GGUF", "tiny-Q4_K_M.gguf", TINY_BASE)
    # A re-upload under another publisher: same file name, the catalog's size.
    reupload = lmstudio_model("lmstudio-community", "tiny-it-GGUF", "tiny-it-Q4_K_M.gguf", TINY_IT)
    # Same file name as a catalog file, but not its size: some other model.
    impostor = lmstudio_model("someone", "other-GGUF", "tiny-Q8_0.gguf", GGUF)
    lmstudio_model("someone", "other-GGUF", "unrelated-Q4_K_M.gguf", GGUF)

    rows = _models_json(capsys)
    base = rows["lmstudio:test/tiny-GGUF/tiny-Q4_K_M.gguf"]
    assert (base["name"], base["kind"], base["quant"]) == ("Tiny Q4_K_M", "base", "Q4_K_M")
    assert (base["source"], base["path"], base["read_only"]) == ("lmstudio", str(own), True)
    assert base["repo"] == "test/tiny-GGUF"
    it = rows["lmstudio:lmstudio-community/tiny-it-GGUF/tiny-it-Q4_K_M.gguf"]
    assert (it["name"], it["kind"], it["path"]) == (
        "Tiny Instruct Q4_K_M",
        "instruct",
        str(reupload),
    )
    other = rows["lmstudio:someone/other-GGUF/tiny-Q8_0.gguf"]
    assert (other["name"], other["kind"], other["path"]) == ("tiny-Q8_0.gguf", None, str(impostor))
    unrelated = rows["lmstudio:someone/other-GGUF/unrelated-Q4_K_M.gguf"]
    assert (unrelated["name"], unrelated["kind"]) == ("unrelated-Q4_K_M.gguf", None)

    # The text listing names them the same way, still read-only in LM Studio's folder.
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    lines = {x.split()[1]: x.split() for x in out.splitlines() if "lmstudio:" in x}
    assert lines["lmstudio:test/tiny-GGUF/tiny-Q4_K_M.gguf"][2:4] == ["base", "Q4_K_M"]
    assert lines["lmstudio:lmstudio-community/tiny-it-GGUF/tiny-it-Q4_K_M.gguf"][2] == "instruct"
    assert lines["lmstudio:someone/other-GGUF/tiny-Q8_0.gguf"][2] not in ("base", "instruct")
    assert all("LM Studio (read-only)" in " ".join(words) for words in lines.values())
