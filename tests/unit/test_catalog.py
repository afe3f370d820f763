"""The model catalog as a user meets it: the bundled pairs, their own catalog merged over it,
and the messages they read when a catalog file is wrong."""

from __future__ import annotations

from pathlib import Path

import pytest

from localbvi import catalog as catalog_module
from localbvi import paths
from localbvi.catalog import (
    DEFAULT_QUANT,
    bundled_catalog_path,
    load_catalog,
    parse_catalog_file,
)
from localbvi.errors import CatalogError

DATA_DIR = Path(__file__).resolve().parents[2] / "localbvi" / "data"

# The pairs the issue asks for, (base id, instruct id).
REQUIRED_PAIRS = [
    ("gemma-3-270m", "gemma-3-270m-it"),
    ("smollm2-135m", "smollm2-135m-instruct"),
    ("smollm2-360m", "smollm2-360m-instruct"),
    ("smollm2-1.7b", "smollm2-1.7b-instruct"),
    ("qwen2.5-0.5b", "qwen2.5-0.5b-instruct"),
    ("qwen2.5-1.5b", "qwen2.5-1.5b-instruct"),
    ("llama-3.2-1b", "llama-3.2-1b-instruct"),
    ("llama-3.1-8b", "llama-3.1-8b-instruct"),
    ("mistral-7b-v0.1", "mistral-7b-instruct-v0.1"),
]


def model(
    id: str,
    kind: str,
    sibling: str,
    *,
    extra: str = "",
    files: str | None = None,
    drop: str | None = None,
) -> str:
    """One [[model]] entry as a user would write it; `drop` leaves out one key's line."""
    if files is None:
        files = (
            f'Q4_K_M = {{ file = "{id}-Q4_K_M.gguf", size = 1000 }}\n'
            f'Q8_0 = {{ file = "{id}-Q8_0.gguf", size = 2000 }}'
        )
    lines = [
        "[[model]]",
        f'id = "{id}"',
        f'name = "Tiny {id}"',
        'family = "Tiny"',
        f'kind = "{kind}"',
        f'sibling = "{sibling}"',
        f'repo = "org/{id}-GGUF"',
        'params = "1M"',
        "context_length = 2048",
        'license = "apache-2.0"',
        "gated = false",
    ]
    if drop is not None:
        lines = [line for line in lines if not line.startswith(f"{drop} =")]
    return "\n".join([*lines, extra, "[model.files]", files, ""]) + "\n"


PAIR = model("tiny", "base", "tiny-it") + model("tiny-it", "instruct", "tiny")


def write(folder: Path, text: str, name: str = "models.toml") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(text, encoding="utf-8")
    return path


def catalog_error(path: Path) -> str:
    """The message a user sees when this catalog file is loaded as the bundled one."""
    with pytest.raises(CatalogError) as info:
        load_catalog(bundled=path, user=path.parent / "no-user-catalog.toml")
    return str(info.value)


# --- the bundled catalog -------------------------------------------------------------


def test_bundled_catalog_is_found_in_a_source_checkout() -> None:
    path = bundled_catalog_path()
    assert path.name == "models.toml"
    assert path.is_file()


def test_installed_wheel_copy_is_preferred(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A wheel force-includes models.toml as localbvi/models.toml, next to catalog.py.
    package = tmp_path / "site-packages" / "localbvi"
    packaged = write(package, PAIR)
    monkeypatch.setattr(catalog_module, "_PACKAGE_DIR", package)
    assert bundled_catalog_path() == packaged
    assert [entry.id for entry in load_catalog(user=tmp_path / "none")] == ["tiny", "tiny-it"]


def test_bundled_catalog_has_every_required_pair_with_consistent_siblings() -> None:
    catalog = load_catalog()
    pairs = {(base.id, instruct.id) for base, instruct in catalog.pairs()}
    for base_id, instruct_id in REQUIRED_PAIRS:
        assert (base_id, instruct_id) in pairs
        base, instruct = catalog.get(base_id), catalog.get(instruct_id)
        assert (base.kind, instruct.kind) == ("base", "instruct")
        assert catalog.sibling(instruct) is base
        assert base.family == instruct.family
        assert base.source == instruct.source == bundled_catalog_path()


def test_every_bundled_model_offers_the_default_quant() -> None:
    for entry in load_catalog():
        default = entry.file_for()
        assert default.quant == DEFAULT_QUANT == "Q4_K_M"
        assert default.file.endswith(".gguf")
        # Sizes are approximate, but each must be in the range a model file really has.
        assert 50_000_000 < default.size < 10_000_000_000, entry.id


def test_bundled_models_leave_the_template_to_the_gguf() -> None:
    # Base models must stay template-less so that chat with them is refused unless the
    # lab swaps a template in explicitly.
    assert all(entry.chat_template is None for entry in load_catalog())


def test_bundled_catalog_lists_pairs_in_file_order() -> None:
    ids = [base.id for base, _ in load_catalog().pairs()]
    assert ids == [base for base, _ in REQUIRED_PAIRS]


# --- validation messages ---------------------------------------------------------------


def test_unknown_key_names_file_entry_and_the_likely_spelling(tmp_path: Path) -> None:
    path = write(tmp_path, model("tiny", "base", "tiny-it", extra='famly = "x"'))
    message = catalog_error(path)
    assert str(path) in message
    assert "model 'tiny'" in message
    assert "unknown key 'famly'" in message
    assert "did you mean 'family'?" in message
    assert "remove it" in message


def test_missing_field_names_the_field_and_the_fix(tmp_path: Path) -> None:
    path = write(tmp_path, model("tiny", "base", "tiny-it", drop="license"))
    message = catalog_error(path)
    assert message.startswith(f"{path}: model 'tiny': missing 'license'")
    assert "add it" in message


def test_entry_without_an_id_is_named_by_its_position(tmp_path: Path) -> None:
    path = write(tmp_path, PAIR + model("x", "base", "tiny-it", drop="id"))
    message = catalog_error(path)
    assert f"{path}: entry 3: missing 'id'" in message


def test_duplicate_id_in_one_file(tmp_path: Path) -> None:
    path = write(tmp_path, PAIR + model("tiny", "base", "tiny-it"))
    message = catalog_error(path)
    assert str(path) in message
    assert "model 'tiny' appears twice (entries 1 and 3)" in message
    assert "give each entry its own id" in message


def test_sibling_that_does_not_exist(tmp_path: Path) -> None:
    path = write(
        tmp_path, model("tiny", "base", "tiny-instruct") + model("tiny-it", "instruct", "tiny")
    )
    message = catalog_error(path)
    assert f"{path}: model 'tiny': sibling 'tiny-instruct' is not in the catalog" in message
    assert "did you mean 'tiny-it'?" in message
    assert "the id of an instruct model" in message


def test_sibling_of_the_same_kind(tmp_path: Path) -> None:
    path = write(tmp_path, model("tiny", "base", "tiny-it") + model("tiny-it", "base", "tiny"))
    message = catalog_error(path)
    assert f"{path}: model 'tiny': sibling 'tiny-it' is also base" in message
    assert "set 'sibling' to an instruct model" in message


def test_sibling_naming_itself(tmp_path: Path) -> None:
    path = write(tmp_path, model("tiny", "base", "tiny"))
    message = catalog_error(path)
    assert f"{path}: model 'tiny': 'sibling' names the entry itself" in message


def test_unknown_kind(tmp_path: Path) -> None:
    path = write(tmp_path, model("tiny", "chat", "tiny-it"))
    message = catalog_error(path)
    assert "model 'tiny': 'kind' is 'chat'" in message
    assert '"base" or "instruct"' in message


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        ('Q4_K_M = { file = "a.gguf" }', "files.Q4_K_M is missing 'size'"),
        ('Q4_K_M = { file = "a.gguf", size = 1, sha = "x" }', "files.Q4_K_M has unknown key 'sha'"),
        ('Q4_K_M = { file = "a.bin", size = 1 }', "files.Q4_K_M.file must be a .gguf path"),
        ('Q4_K_M = { file = "a.gguf", size = "1 GB" }', "files.Q4_K_M.size must be"),
        ('Q4_K_M = "a.gguf"', "files.Q4_K_M must be a table like"),
        ("", "'files' must be a table of quantizations"),
    ],
)
def test_malformed_files_table(tmp_path: Path, files: str, expected: str) -> None:
    path = write(tmp_path, model("tiny", "base", "tiny-it", files=files))
    message = catalog_error(path)
    assert message.startswith(f"{path}: model 'tiny': ")
    assert expected in message


def test_toml_syntax_error_shows_file_line_and_column(tmp_path: Path) -> None:
    path = write(tmp_path, '[[model]]\nid = "tiny"\nname = Tiny\n')
    message = catalog_error(path)
    assert message.startswith(f"{path}: not valid TOML: ")
    assert "line 3, column 8" in message


def test_unknown_top_level_key(tmp_path: Path) -> None:
    path = write(tmp_path, "models = 1\n" + PAIR)
    message = catalog_error(path)
    assert f"{path}: unknown top-level key 'models'" in message
    assert "[[model]]" in message


def test_missing_bundled_catalog_says_to_reinstall(tmp_path: Path) -> None:
    message = catalog_error(tmp_path / "models.toml")
    assert "bundled model catalog is missing; reinstall localbvi" in message


# --- the user catalog --------------------------------------------------------------------


def test_user_catalog_replaces_and_adds_entries(tmp_path: Path) -> None:
    bundled = write(tmp_path / "bundled", PAIR)
    user_text = (
        model("tiny-it", "instruct", "tiny").replace("org/tiny-it-GGUF", "me/better-tiny-it")
        + model("extra", "base", "extra-it")
        + model("extra-it", "instruct", "extra")
    )
    user = write(paths.user_catalog_path().parent, user_text)

    catalog = load_catalog(bundled=bundled)

    assert list(catalog.entries) == ["tiny", "tiny-it", "extra", "extra-it"]
    replaced = catalog.get("tiny-it")
    assert replaced.repo == "me/better-tiny-it"
    assert replaced.source == user
    assert catalog.get("tiny").source == bundled
    assert [(b.id, i.id) for b, i in catalog.pairs()] == [
        ("tiny", "tiny-it"),
        ("extra", "extra-it"),
    ]


def test_user_entry_may_pair_with_a_bundled_model() -> None:
    write(
        paths.user_catalog_path().parent,
        model("gemma-3-270m", "base", "gemma-3-270m-it").replace(
            "org/gemma-3-270m-GGUF", "me/gemma-3-270m-GGUF"
        ),
    )
    bundled = load_catalog(user=Path("/nonexistent/models.toml"))
    catalog = load_catalog()

    base = catalog.get("gemma-3-270m")
    assert base.repo == "me/gemma-3-270m-GGUF"
    assert catalog.sibling(base).repo == bundled.get("gemma-3-270m-it").repo
    assert len(catalog) == len(bundled)


def test_no_user_catalog_is_fine() -> None:
    assert not paths.user_catalog_path().exists()
    catalog = load_catalog()
    assert {entry.source for entry in catalog} == {bundled_catalog_path()}


def test_error_in_user_catalog_names_the_user_file() -> None:
    user = write(
        paths.user_catalog_path().parent, model("mine", "base", "gemma-3-270m-it", drop="repo")
    )
    with pytest.raises(CatalogError, match="missing 'repo'") as info:
        load_catalog()
    assert str(info.value).startswith(f"{user}: model 'mine': ")


def test_user_sibling_that_breaks_a_bundled_pair_is_reported(tmp_path: Path) -> None:
    bundled = write(tmp_path / "bundled", PAIR)
    user = write(paths.user_catalog_path().parent, model("tiny-it", "base", "tiny"))
    with pytest.raises(CatalogError) as info:
        load_catalog(bundled=bundled)
    assert f"{bundled}: model 'tiny': sibling 'tiny-it' (from {user}) is also base" in str(
        info.value
    )


# --- looking entries up ----------------------------------------------------------------


def test_file_for_defaults_to_q4_k_m_and_ignores_case(tmp_path: Path) -> None:
    entry = load_catalog(bundled=write(tmp_path, PAIR), user=tmp_path / "none").get("tiny")
    assert entry.file_for().file == "tiny-Q4_K_M.gguf"
    assert entry.file_for("q8_0").file == "tiny-Q8_0.gguf"


def test_file_for_unknown_quant_lists_what_is_available(tmp_path: Path) -> None:
    entry = load_catalog(bundled=write(tmp_path, PAIR), user=tmp_path / "none").get("tiny")
    with pytest.raises(CatalogError) as info:
        entry.file_for("Q2_K")
    assert str(info.value) == (
        "model 'tiny' has no Q2_K file (available: Q4_K_M, Q8_0); pick one, e.g. `tiny:Q4_K_M`"
    )


def test_unknown_id_suggests_close_matches(tmp_path: Path) -> None:
    catalog = load_catalog(bundled=write(tmp_path, PAIR), user=tmp_path / "none")
    assert catalog.find("tiny-i") is None
    with pytest.raises(CatalogError) as info:
        catalog.get("tiny-i")
    assert str(info.value) == (
        "unknown model id 'tiny-i' (did you mean 'tiny-it' or 'tiny'?); "
        "run `localbvi models` to list them"
    )


# --- chat-template overrides -------------------------------------------------------------


def test_bundled_template_name_resolves_to_its_text(tmp_path: Path) -> None:
    text = model("tiny", "base", "tiny-it", extra='chat_template = "gemma3"')
    entry = parse_catalog_file(write(tmp_path, text))[0]
    assert entry.chat_template == (DATA_DIR / "gemma3.jinja").read_text(encoding="utf-8")


def test_template_file_is_read_relative_to_the_catalog(tmp_path: Path) -> None:
    (tmp_path / "mine.jinja").write_text("{{ messages[0].content }}", encoding="utf-8")
    path = write(tmp_path, model("tiny", "base", "tiny-it", extra='chat_template = "mine.jinja"'))
    assert parse_catalog_file(path)[0].chat_template == "{{ messages[0].content }}"


def test_inline_template_is_kept_verbatim(tmp_path: Path) -> None:
    inline = "{% for m in messages %}{{ m.content }}{% endfor %}"
    path = write(tmp_path, model("tiny", "base", "tiny-it", extra=f"chat_template = '{inline}'"))
    assert parse_catalog_file(path)[0].chat_template == inline


def test_unknown_template_name_lists_the_bundled_ones(tmp_path: Path) -> None:
    path = write(tmp_path, model("tiny", "base", "tiny-it", extra='chat_template = "gemma4"'))
    message = catalog_error(path)
    assert f"{path}: model 'tiny': chat_template 'gemma4' is not a bundled template" in message
    assert "(bundled: gemma3" in message
