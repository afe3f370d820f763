"""The model host: the CLI and the app open every kind of REF the same way, a failed load keeps
the previous model, and a download can be cancelled.

The agreement test runs the real llama.cpp on the real Gemma 3 270M files (base, and the
instruct-shaped copy with a chat template in its GGUF), a catalog pair served from the HF cache,
and a stand-in llama-server on 127.0.0.1 (as an ad hoc URL and as a settings `[[remote]]`).
"""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from localbvi.engine.fake import FakeEngine
from localbvi.engine.host import ModelHost, model_kind, open_model
from localbvi.engine.types import LoadConfig, LoadInfo
from localbvi.errors import DownloadError, GGUFError, ModelLoadError
from localbvi.settings import settings_path
from localbvi.store.hub import Progress
from localbvi.store.refs import ResolvedModel
from tests.helpers import SIZE, wait_until
from tests.remote.remote_fakes import llama_server_fake
from tests.store.ggufs import TINY_BASE, TINY_IT
from tests.store.hubserver import HubServer

REPO = "test/gemma-test-GGUF"
COMMIT = "0123456789abcdef0123456789abcdef01234567"

# The instruct entry's file is the base GGUF (no template in it): the catalog supplies the
# template and says "instruct", as the bundled catalog does for some models.
CATALOG = f"""
[[model]]
id = "gemma-test"
name = "Gemma Test"
family = "Gemma 3"
kind = "base"
sibling = "gemma-test-it"
repo = "{REPO}"
params = "270M"
context_length = 32768
license = "gemma"
[model.files]
Q4_K_M = {{ file = "gemma-test-Q4_K_M.gguf", size = 253000000 }}

[[model]]
id = "gemma-test-it"
name = "Gemma Test IT"
family = "Gemma 3"
kind = "instruct"
sibling = "gemma-test"
repo = "{REPO}"
params = "270M"
context_length = 32768
license = "gemma"
chat_template = "gemma3"
[model.files]
Q4_K_M = {{ file = "gemma-test-it-Q4_K_M.gguf", size = 253000000 }}
"""


def _catalog_pair_in_hf_cache(home: Path, gguf: Path) -> Path:
    """A user catalog pair whose two files are in the HF cache (links to `gguf`); the path of
    the instruct entry's file, which is what the app's picker opens for a downloaded model."""
    config = home / "config" / "models.toml"
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text(CATALOG, encoding="utf-8")
    folder = home / "hf" / "hub" / ("models--" + REPO.replace("/", "--"))
    snapshot = folder / "snapshots" / COMMIT
    snapshot.mkdir(parents=True)
    (folder / "refs").mkdir()
    (folder / "refs" / "main").write_text(COMMIT)
    for name in ("gemma-test-Q4_K_M.gguf", "gemma-test-it-Q4_K_M.gguf"):
        (snapshot / name).symlink_to(gguf)
    return snapshot / "gemma-test-it-Q4_K_M.gguf"


def _cli_opens(refs: list[str]) -> list[tuple[str, str]]:
    seen = []
    for ref in refs:
        opened = open_model(ref)
        try:
            seen.append((opened.kind, opened.display_name))
        finally:
            opened.engine.close()
    return seen


async def _app_opens(refs: list[str]) -> list[tuple[str, str]]:
    from localbvi.engine.local import LocalEngine
    from localbvi.tui import make_app

    app = make_app(LocalEngine, check_online=False)  # the settings file, the real store
    seen = []
    async with app.run_test(size=SIZE) as pilot:
        for ref in refs:
            app.open_model(ref)
            await wait_until(
                pilot,
                lambda: app.loading is None and app.model is not None and app.model.ref == ref,  # noqa: B023
                timeout=120,
                what=f"{ref} loaded",
            )
            assert app.model is not None
            seen.append((app.model.kind, app.model.display_name))
    return seen


@pytest.mark.slow
async def test_the_cli_and_the_app_agree_on_every_refs_kind_and_name(
    gemma_base: Path, gemma_instruct: Path, isolated_home: Path
) -> None:
    in_cache = _catalog_pair_in_hf_cache(isolated_home, gemma_base)
    with llama_server_fake() as server:
        settings = settings_path()
        settings.parent.mkdir(parents=True, exist_ok=True)
        settings.write_text(f'[[remote]]\nname = "box"\nbase_url = "{server.url}"\nkind = "base"\n')
        ad_hoc = server.url.removesuffix("/v1")  # the same server, not named as the remote
        refs = [
            str(gemma_base),  # a path: no template in the GGUF
            str(gemma_instruct),  # a path: the GGUF carries a chat template
            "gemma-test-it",  # a catalog id: the catalog's kind and template
            "gemma-test:Q4_K_M",
            str(in_cache),  # a catalog file named by its path in the HF cache
            ad_hoc,  # a server URL: it announces a chat template
            "box",  # a settings [[remote]]: its configured kind wins
        ]
        cli = _cli_opens(refs)
        app = await _app_opens(refs)
    assert cli == app
    assert [kind for kind, _ in cli] == [
        "base",
        "instruct",
        "instruct",
        "base",
        "instruct",
        "instruct",
        "base",
    ]
    names = [name for _, name in cli]
    assert names[2:5] == ["Gemma Test IT Q4_K_M", "Gemma Test Q4_K_M", "Gemma Test IT Q4_K_M"]
    assert names[5:] == ["gemma-big", "box"]  # the server's model name; the remote's name
    assert "gguf" not in names[0].lower()  # the model's own name, not its file name


@pytest.mark.slow
def test_a_broken_file_is_refused_before_the_loaded_model_is_dropped(
    gemma_base: Path, tmp_path: Path
) -> None:
    truncated = tmp_path / "truncated.gguf"
    truncated.write_bytes(gemma_base.read_bytes()[: 4 << 20])
    host = ModelHost()
    try:
        host.open(str(gemma_base), LoadConfig(n_ctx=512))
        with pytest.raises(GGUFError, match="truncated"):
            host.open(str(truncated))
        assert host.engine.info is not None and host.engine.info.path == str(gemma_base)
        assert host.model is not None and host.model.ref == str(gemma_base)
    finally:
        host.close()


# --- with the FakeEngine: what the host does around the engine --------------------------------


def _resolver(folder: Path) -> tuple[list[str], object]:
    """A resolver over real (tiny) GGUF files in `folder`, named by their file names."""
    asked: list[str] = []

    def resolve(ref: str, *, download: bool, on_progress: object, cancel: object) -> ResolvedModel:
        asked.append(ref)
        path = folder / ref
        if not path.exists():
            path.write_bytes(TINY_BASE)
        return ResolvedModel(path, ref, path.name, None, None, None)

    return asked, resolve


class ForgetfulEngine(FakeEngine):
    """A FakeEngine that loses its model when a load fails (as a crashed llama.cpp would)."""

    def load(self, path: str, config: LoadConfig) -> LoadInfo:
        try:
            return super().load(path, config)
        except ModelLoadError:
            self._info = None
            raise


@pytest.mark.parametrize("engine_type", [FakeEngine, ForgetfulEngine])
def test_a_failed_load_keeps_the_previous_model(tmp_path: Path, engine_type: type) -> None:
    engine = engine_type(fail_load=lambda path: "bad" in path)
    _, resolve = _resolver(tmp_path)
    host = ModelHost(engine, resolve=resolve)  # type: ignore[arg-type]
    first = host.open("good.gguf")
    with pytest.raises(ModelLoadError, match=r"bad\.gguf"):
        host.open("bad.gguf")
    assert host.engine.info is not None
    assert host.engine.info.path == str(tmp_path / "good.gguf")
    assert host.model == first
    if engine_type is ForgetfulEngine:  # the host loaded it again, with the same options
        assert engine.loads == [first.info.path, str(tmp_path / "bad.gguf"), first.info.path]


def test_cancel_during_a_download_stops_it_and_keeps_the_model(
    tmp_path: Path, isolated_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    hub = HubServer().start()
    try:
        hub.add_repo("test/tiny-it-GGUF", {"tiny-it-Q4_K_M.gguf": TINY_IT})
        hub.throttle_bps = 4e6  # about a second for the file: time to press cancel
        monkeypatch.setenv("HF_ENDPOINT", hub.url)
        local = tmp_path / "local.gguf"
        local.write_bytes(TINY_BASE)
        engine = FakeEngine()
        host = ModelHost(engine)
        host.open(str(local))
        cancel = threading.Event()
        reports: list[Progress] = []

        def on_progress(p: Progress) -> None:
            reports.append(p)
            if p.done > 0:
                cancel.set()

        with pytest.raises(DownloadError, match="cancel"):
            host.open(
                "test/tiny-it-GGUF/tiny-it-Q4_K_M.gguf", on_progress=on_progress, cancel=cancel
            )
        assert reports and reports[-1].done < len(TINY_IT)
        assert engine.loads == [str(local)]  # nothing else was loaded, nothing unloaded
        assert host.engine.info is not None and host.engine.info.path == str(local)
    finally:
        hub.stop()


def _info(source: str | None) -> LoadInfo:
    return LoadInfo(
        path="m.gguf",
        load_s=0.1,
        n_ctx=512,
        n_ctx_train=2048,
        n_threads=2,
        n_layers=1,
        gpu_offload_supported=False,
        n_gpu_layers=0,
        chat_template="{{ messages }}" if source else None,
        template_source=source,  # type: ignore[arg-type]
        bos_token="<bos>",
        eos_token="<eos>",
    )


@pytest.mark.parametrize(
    ("known", "template_source", "kind"),
    [
        (None, None, "base"),
        (None, "gguf", "instruct"),  # the model file (or the server) brings a template
        (None, "override", "base"),  # a supplied template is no evidence by itself
        ("instruct", "override", "instruct"),  # the catalog's instruct entry with its template
        ("base", "gguf", "base"),  # the catalog (or the [[remote]]) knows better
    ],
)
def test_one_rule_for_base_or_instruct(
    known: str | None, template_source: str | None, kind: str
) -> None:
    assert model_kind(_info(template_source), known) == kind  # type: ignore[arg-type]
