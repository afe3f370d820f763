"""Malformed, huge or hostile model references: one short readable error, never a crash.

Through the real CLI (`localbvi.cli.main`): `pull`, `rm` and `complete -m` each take a REF.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from localbvi.cli import main
from localbvi.errors import RefError
from localbvi.store.refs import parse_ref, resolve

HUGE = 100_000

BAD_REFS = {
    "ipv6-unclosed": "http://[::1",
    "ipv6-unclosed-https": "https://[::1/v1",
    "bad-port": "http://localhost:99999999999",
    "huge-url": "http://" + "a" * HUGE,
    "file-url": "file:///etc/passwd",
    "huge-id": "x" * HUGE,
    "huge-quant": "a/b:" + "Q" * HUGE,
    "huge-repo": "org/" + "a" * HUGE,
    "huge-org": "o" * 200 + "/repo:Q4_K_M",
    "huge-hub-file": "org/repo/" + "a" * 60_000 + ".gguf",
    "long-hub-file-part": "org/repo/" + "b" * 300 + ".gguf",
    "huge-path": "/" + "a" * 60_000 + ".gguf",
    "long-path-part": "/tmp/" + "p" * 300 + ".gguf",
    "deep-path": "./" + ("d" * 200 + "/") * 30 + "m.gguf",
    "huge-relative-gguf": "a" * HUGE + ".gguf",
    "escape-in-path": "./model\x1b]0;owned\x07\x1b[31m.gguf",
    "hub-file-with-nul": "org/repo/a\x00b.gguf",
    "path-with-nul": "/tmp/a\x00b.gguf",
}


def _one_error_line(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    start = time.monotonic()
    code = main(argv)
    elapsed = time.monotonic() - start
    captured = capsys.readouterr()
    err = captured.err
    assert code in (1, 2), err
    assert err.startswith("localbvi: error: ") and err.count("\n") == 1, err[:500]
    assert "internal error" not in err and "Traceback" not in err, err[:500]
    assert len(err) < 300, err[:500]
    assert "\x1b" not in err and "\x00" not in err and "\x07" not in err
    assert elapsed < 10
    assert captured.out == ""
    return err


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """Nothing here may reach a network: a reference that got that far is a bug anyway."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.mark.parametrize("ref", BAD_REFS.values(), ids=BAD_REFS.keys())
def test_pull_of_a_bad_reference_is_one_short_line(
    capsys: pytest.CaptureFixture[str], ref: str
) -> None:
    _one_error_line(capsys, ["pull", ref])


@pytest.mark.parametrize("ref", BAD_REFS.values(), ids=BAD_REFS.keys())
def test_rm_of_a_bad_reference_is_one_short_line(
    capsys: pytest.CaptureFixture[str], ref: str
) -> None:
    _one_error_line(capsys, ["rm", ref])


COMPLETE_REFS = [pytest.param(ref, id=key) for key, ref in BAD_REFS.items()]


@pytest.mark.parametrize("ref", COMPLETE_REFS)
def test_complete_with_a_bad_model_is_one_short_line(
    capsys: pytest.CaptureFixture[str], ref: str
) -> None:
    _one_error_line(capsys, ["complete", "-m", ref, "hello"])


@pytest.mark.parametrize(
    "ref",
    [r for k, r in BAD_REFS.items() if not k.startswith(("ipv6", "bad-port", "huge-url"))],
    ids=[k for k in BAD_REFS if not k.startswith(("ipv6", "bad-port", "huge-url"))],
)
def test_resolve_raises_ref_error(ref: str) -> None:
    with pytest.raises(RefError) as err:
        resolve(ref, download=False)
    assert len(str(err.value)) < 280


def test_too_long_names_say_so() -> None:
    for ref in (BAD_REFS["huge-hub-file"], BAD_REFS["long-hub-file-part"], BAD_REFS["huge-id"]):
        with pytest.raises(RefError, match="long"):
            parse_ref(ref)
    with pytest.raises(RefError, match="long"):
        resolve(BAD_REFS["deep-path"], download=False)


def test_a_server_address_cannot_be_pulled(capsys: pytest.CaptureFixture[str]) -> None:
    err = _one_error_line(capsys, ["pull", "http://127.0.0.1:8080/v1"])
    assert "server" in err


def test_a_long_path_that_exists_is_still_used(tmp_path: Path) -> None:
    """The limits are about nonsense, not about deep folders that really exist."""
    from ggufs import make_gguf

    deep = tmp_path.joinpath(*["folder-" + "n" * 40] * 12)
    deep.mkdir(parents=True)
    model = deep / "model-Q8_0.gguf"
    model.write_bytes(make_gguf("deep", 5000))
    assert resolve(str(model), download=False).path == model


@pytest.mark.parametrize("ref", BAD_REFS.values(), ids=BAD_REFS.keys())
def test_import_of_a_bad_path_is_one_short_line(
    capsys: pytest.CaptureFixture[str], ref: str
) -> None:
    _one_error_line(capsys, ["import", ref])


def test_rm_with_imported_models_still_refuses_nonsense_readably(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from ggufs import make_gguf

    model = tmp_path / "mine-Q8_0.gguf"
    model.write_bytes(make_gguf("mine", 5000))
    assert main(["import", str(model)]) == 0
    capsys.readouterr()
    for ref in (BAD_REFS["huge-path"], BAD_REFS["long-path-part"], BAD_REFS["huge-id"]):
        _one_error_line(capsys, ["rm", ref])
    assert main(["rm", str(model)]) == 0
    assert model.exists()  # imported in place: forgotten, never deleted
