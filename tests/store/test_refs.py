"""Model references: what each form of REF means, and nonsense refused with a readable error."""

from __future__ import annotations

from pathlib import Path

import pytest

from localbvi.errors import RefError
from localbvi.store.refs import guess_quant, parse_ref, split_parts


@pytest.mark.parametrize(
    ("ref", "path"),
    [
        ("./model.gguf", "model.gguf"),
        ("/models/x.gguf", "/models/x.gguf"),
        ("model.gguf", "model.gguf"),
        ("models/model.gguf", "models/model.gguf"),
    ],
)
def test_paths(ref: str, path: str) -> None:
    parsed = parse_ref(ref)
    assert parsed.kind == "path"
    assert parsed.path == Path(path)


def test_home_path_is_expanded() -> None:
    assert parse_ref("~/m.gguf").path == Path.home() / "m.gguf"


def test_catalog_id_with_and_without_quant() -> None:
    plain = parse_ref("qwen2.5-0.5b-instruct")
    assert (plain.kind, plain.catalog_id, plain.quant) == ("catalog", "qwen2.5-0.5b-instruct", None)
    quant = parse_ref("qwen2.5-0.5b-instruct:q8_0")
    assert (quant.catalog_id, quant.quant) == ("qwen2.5-0.5b-instruct", "Q8_0")


def test_hub_repo_with_quant_defaults_to_q4_k_m() -> None:
    assert parse_ref("org/repo-GGUF:Q5_K_S").quant == "Q5_K_S"
    parsed = parse_ref("org/repo-GGUF")
    assert (parsed.kind, parsed.repo, parsed.quant) == ("hub-quant", "org/repo-GGUF", "Q4_K_M")


def test_hub_file() -> None:
    parsed = parse_ref("org/repo/sub/dir/model-IQ3_XXS.gguf")
    assert parsed.kind == "hub-file"
    assert (parsed.repo, parsed.filename) == ("org/repo", "sub/dir/model-IQ3_XXS.gguf")
    assert parsed.quant == "IQ3_XXS"


@pytest.mark.parametrize(
    "ref",
    [
        "org/repo/../../etc/passwd.gguf",
        "org/repo/a/../b.gguf",
        "org/repo//b.gguf",
        "org/repo/readme.md",
        "org/repo:Q4 K",
        "bad id!",
        "",
        "org/re po:Q4_K_M",
    ],
)
def test_nonsense_is_refused(ref: str) -> None:
    with pytest.raises(RefError) as err:
        parse_ref(ref)
    assert str(err.value)


def test_split_parts() -> None:
    assert split_parts("m-Q4_K_M-00002-of-00003.gguf") == [
        "m-Q4_K_M-00001-of-00003.gguf",
        "m-Q4_K_M-00002-of-00003.gguf",
        "m-Q4_K_M-00003-of-00003.gguf",
    ]
    assert split_parts("m-Q4_K_M.gguf") == ["m-Q4_K_M.gguf"]


@pytest.mark.parametrize(
    ("name", "quant"),
    [
        ("gemma-3-270m-it-Q4_K_M.gguf", "Q4_K_M"),
        ("SmolLM2-135M.Q8_0.gguf", "Q8_0"),
        ("gemma-3-270m-q4_k_m.gguf", "Q4_K_M"),
        ("model-IQ4_XS.gguf", "IQ4_XS"),
        ("model-BF16.gguf", "BF16"),
        ("model-Q4_K_M-00001-of-00002.gguf", "Q4_K_M"),
        ("model.gguf", None),
    ],
)
def test_guess_quant(name: str, quant: str | None) -> None:
    assert guess_quant(name) == quant


def test_a_relative_path_to_an_existing_file_is_a_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "models" / "sub").mkdir(parents=True)
    (tmp_path / "models" / "sub" / "x.gguf").write_bytes(b"GGUF")
    monkeypatch.chdir(tmp_path)
    parsed = parse_ref("models/sub/x.gguf")
    assert parsed.kind == "path" and parsed.path == Path("models/sub/x.gguf")
    assert parse_ref("org/repo/x.gguf").kind != "path"  # no such file: a Hub file ref
