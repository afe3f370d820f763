"""Login token, Hub search and base/instruct pairing against the Hub stand-in on loopback.

The stand-in holds a small model tree like the Hub's: an original base model `acme/Foo-1B`, its
instruct fine-tune by the same publisher and a community one, GGUF copies of both by two
quantizers, a repo without metadata, a loop, and a gated repo.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from ggufs import TINY_BASE
from hubapi_server import HubApiServer

from localbvi.cli import main
from localbvi.errors import DownloadError, HubError
from localbvi.store import auth
from localbvi.store.hub import download
from localbvi.store.hubapi import HubApi, hub_reachable, quant_options, search_gguf

GOOD = "hf_good_token"
MB = 1_000_000


@pytest.fixture
def api_hub(monkeypatch: pytest.MonkeyPatch) -> Iterator[HubApiServer]:
    server = HubApiServer().start()
    server.add_model("acme/Foo-1B", tags=["transformers", "license:apache-2.0"], downloads=900)
    server.add_model(
        "acme/Foo-1B-Instruct",
        tags=["transformers", "base_model:finetune:acme/Foo-1B"],
        card_data={"base_model": "acme/Foo-1B", "license": "apache-2.0"},
        downloads=5000,
    )
    server.add_model(
        "fan/Foo-1B-Instruct-uncensored",
        tags=["base_model:finetune:acme/Foo-1B"],
        downloads=9000,
    )
    server.add_model(
        "quanter/Foo-1B-Instruct-GGUF",
        files={
            "Foo-1B-Instruct-Q4_K_M.gguf": b"q4",
            "Foo-1B-Instruct-Q8_0.gguf": b"q8",
            "f16/Foo-1B-Instruct-F16-00001-of-00002.gguf": b"a",
            "f16/Foo-1B-Instruct-F16-00002-of-00002.gguf": b"b",
            "Foo-1B-Instruct-BF16.gguf": b"bf",
            "mmproj-Foo-1B-F16.gguf": b"mm",
            "README.md": b"readme",
        },
        sizes={
            "Foo-1B-Instruct-Q4_K_M.gguf": 400 * MB,
            "Foo-1B-Instruct-Q8_0.gguf": 530 * MB,
            "f16/Foo-1B-Instruct-F16-00001-of-00002.gguf": 500 * MB,
            "f16/Foo-1B-Instruct-F16-00002-of-00002.gguf": 500 * MB,
            "Foo-1B-Instruct-BF16.gguf": 2000 * MB,
        },
        tags=["gguf", "base_model:quantized:acme/Foo-1B-Instruct"],
        card_data={"base_model": "acme/Foo-1B-Instruct"},
        gguf={"context_length": 8192, "total": 1_100_000_000},
        downloads=800,
    )
    server.add_model(
        "acme/Foo-1B-Instruct-GGUF",
        files={"foo-1b-instruct-q4_k_m.gguf": b"q4"},
        sizes={"foo-1b-instruct-q4_k_m.gguf": 410 * MB},
        tags=["gguf", "base_model:quantized:acme/Foo-1B-Instruct"],
        downloads=3000,
    )
    server.add_model(
        "quanter/Foo-1B-GGUF",
        files={"Foo-1B-Q4_K_M.gguf": b"q4", "Foo-1B-Q8_0.gguf": b"q8"},
        sizes={"Foo-1B-Q4_K_M.gguf": 400 * MB, "Foo-1B-Q8_0.gguf": 530 * MB},
        tags=["gguf", "base_model:quantized:acme/Foo-1B"],
        gguf={"context_length": 8192, "total": 1_100_000_000},
        downloads=100,
    )
    server.add_model(
        "popular/Foo-1B-GGUF",
        files={"Foo-1B.Q4_K_M.gguf": b"q4"},
        tags=["gguf", "base_model:quantized:acme/Foo-1B"],
        downloads=7000,
    )
    server.add_model("nometa/Mystery-GGUF", files={"mystery-Q4_K_M.gguf": b"x"}, tags=["gguf"])
    server.add_model(
        "loop/A-GGUF", files={"a-Q4_K_M.gguf": b"x"}, tags=["gguf", "base_model:quantized:loop/B"]
    )
    server.add_model("loop/B", tags=["base_model:finetune:loop/C"])
    server.add_model("loop/C", tags=["base_model:finetune:loop/B"])
    server.add_model(
        "gate/Locked-GGUF",
        files={"locked-Q4_K_M.gguf": TINY_BASE},
        tags=["gguf"],
        gated=True,
        downloads=50,
    )
    # Only the cards say where these come from (no base_model tags): the authors' claims.
    server.add_model(
        "card/Bar-GGUF",
        files={"bar-Q4_K_M.gguf": b"x"},
        tags=["gguf"],
        card_data={"base_model": ["card/Bar-Chat", "card/Other"]},
    )
    server.add_model("card/Bar-Chat", card_data={"base_model": "card/Bar"})
    server.add_model("card/Bar")
    server.add_model(
        "card/Bar-Base-GGUF",
        files={"bar-base-Q4_K_M.gguf": b"x"},
        tags=["gguf", "base_model:quantized:card/Bar"],
    )
    # A chain longer than anyone publishes: followed 6 links, then given up.
    server.add_model(
        "long/L0-GGUF",
        files={"l0-Q4_K_M.gguf": b"x"},
        tags=["gguf", "base_model:quantized:long/L1"],
    )
    for n in range(1, 10):
        server.add_model(f"long/L{n}", tags=[f"base_model:finetune:long/L{n + 1}"])
    monkeypatch.setenv("HF_ENDPOINT", server.url)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    for name in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_TOKEN_PATH"):
        monkeypatch.delenv(name, raising=False)
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("LOCALBVI_FAKE_AVAILABLE_RAM", str(1200 * MB))
    yield server
    server.stop()


def run(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(args)
    out, err = capsys.readouterr()
    return code, out, err


def one_error_line(err: str) -> str:
    assert err.startswith("localbvi: error: "), err
    assert err.count("\n") == 1, err
    return err


# --- the token ---------------------------------------------------------------------------


def test_no_token_sends_no_authorization(api_hub: HubApiServer) -> None:
    assert auth.find_token() is None
    search_gguf("foo", limit=2)
    assert api_hub.auth_for("/api/") and set(api_hub.auth_for("/api/")) == {None}


def test_token_from_hf_token_is_sent_on_metadata_requests(
    api_hub: HubApiServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_TOKEN", " hf_env_token\n")
    search_gguf("foo", limit=2)
    assert set(api_hub.auth_for("/api/")) == {"Bearer hf_env_token"}


def test_token_from_hf_home_token_file_written_by_login(
    api_hub: HubApiServer, isolated_home: Path
) -> None:
    (isolated_home / "hf").mkdir(exist_ok=True)
    (isolated_home / "hf" / "token").write_text("hf_login_token\n")
    found = auth.find_token()
    assert found is not None and found.source == str(isolated_home / "hf" / "token")
    search_gguf("foo", limit=1)
    assert set(api_hub.auth_for("/api/")) == {"Bearer hf_login_token"}


def test_hf_token_path_wins_over_hf_home_and_env_wins_over_both(
    api_hub: HubApiServer, isolated_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (isolated_home / "hf").mkdir(exist_ok=True)
    (isolated_home / "hf" / "token").write_text("hf_home_token")
    elsewhere = isolated_home / "secrets" / "hf-token"
    elsewhere.parent.mkdir()
    elsewhere.write_text("hf_path_token")
    monkeypatch.setenv("HF_TOKEN_PATH", str(elsewhere))
    assert auth.hub_token() == "hf_path_token"
    monkeypatch.setenv("HF_TOKEN", "hf_env_token")
    assert auth.hub_token() == "hf_env_token"


def test_logged_in_user_downloads_a_gated_file(
    api_hub: HubApiServer, isolated_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(DownloadError) as refused:
        download("gate/Locked-GGUF", "locked-Q4_K_M.gguf")
    message = str(refused.value)
    assert "hf auth login" in message and "HF_TOKEN" in message
    token_file = isolated_home / "login" / "token"
    token_file.parent.mkdir()
    token_file.write_text(GOOD)
    monkeypatch.setenv("HF_TOKEN_PATH", str(token_file))
    path = download("gate/Locked-GGUF", "locked-Q4_K_M.gguf")
    assert path.read_bytes() == TINY_BASE
    assert f"Bearer {GOOD}" in api_hub.auth_for("/gate/Locked-GGUF/resolve/")


def test_a_refused_token_says_where_it_came_from(
    api_hub: HubApiServer, isolated_home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    api_hub.gate_metadata = True
    (isolated_home / "hf").mkdir(exist_ok=True)
    (isolated_home / "hf" / "token").write_text("hf_wrong")
    code, _out, err = run(["pair", "gate/Locked-GGUF"], capsys)
    assert code == 1
    line = one_error_line(err)
    assert str(isolated_home / "hf" / "token") in line and "hf auth login" in line
    assert "hf_wrong" not in line


# --- search --------------------------------------------------------------------------------


def test_quant_options_join_split_files_and_skip_projectors() -> None:
    options = quant_options(
        [
            ("m-Q4_K_M.gguf", 4),
            ("Q8/m-Q8_0-00002-of-00002.gguf", 5),
            ("Q8/m-Q8_0-00001-of-00002.gguf", 6),
            ("mmproj-m-F16.gguf", 9),
            ("m-IQ4_XS.gguf", 3),
            ("notes.txt", 1),
        ]
    )
    assert [(o.quant, o.file, o.size) for o in options] == [
        ("IQ4_XS", "m-IQ4_XS.gguf", 3),
        ("Q4_K_M", "m-Q4_K_M.gguf", 4),
        ("Q8_0", "Q8/m-Q8_0-00001-of-00002.gguf", 11),
    ]


def test_search_lists_gguf_repos_by_downloads_with_quants_sizes_and_fit(
    api_hub: HubApiServer, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(["search", "foo", "1b", "instruct", "--limit", "5"], capsys)
    assert code == 0 and err == ""
    assert out.index("acme/Foo-1B-Instruct-GGUF · 3,000") < out.index(
        "quanter/Foo-1B-Instruct-GGUF · 800"
    )
    assert "fan/Foo-1B-Instruct-uncensored" not in out  # not a GGUF repo
    section = out[out.index("quanter/Foo-1B-Instruct-GGUF") :]
    rows = [" ".join(line.split()) for line in section.splitlines()[1:6]]
    assert rows == [
        "Q4_K_M 400 MB fits quanter/Foo-1B-Instruct-GGUF:Q4_K_M",
        "Q8_0 530 MB fits quanter/Foo-1B-Instruct-GGUF:Q8_0",
        "F16 1 GB tight quanter/Foo-1B-Instruct-GGUF:F16 (2 parts)",
        "BF16 2 GB won't fit quanter/Foo-1B-Instruct-GGUF:BF16",
        "",
    ]
    query = next(q for q in api_hub.queries if q["path"] == "/api/models")
    assert query["search"] == "foo 1b instruct" and query["filter"] == "gguf"
    assert query["sort"] == "downloads" and query["limit"] == "5"


def test_search_json_marks_gated_repos(
    api_hub: HubApiServer, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(["search", "locked", "--json"], capsys)
    assert code == 0
    rows = json.loads(out)
    assert [r["repo"] for r in rows] == ["gate/Locked-GGUF"]
    assert rows[0]["gated"] is True
    assert rows[0]["quants"][0]["ref"] == "gate/Locked-GGUF:Q4_K_M"
    code, out, _ = run(["search", "locked"], capsys)
    assert "gated: accept the licence" in out and "hf auth login" in out


def test_search_without_results_says_so(
    api_hub: HubApiServer, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(["search", "nothing-like-this"], capsys)
    assert code == 0 and "no GGUF repositories match 'nothing-like-this'" in out


USAGE_ERRORS = [
    ["search", "   "],
    ["search", "foo", "--limit", "0"],
    ["search", "foo", "--limit", "x"],
    ["search", "foo\x1b[2J"],
]


@pytest.mark.parametrize("args", USAGE_ERRORS, ids=["blank", "zero", "word", "control"])
def test_search_usage_errors_exit_2(
    api_hub: HubApiServer, capsys: pytest.CaptureFixture[str], args: list[str]
) -> None:
    try:
        code = main(args)
    except SystemExit as exited:  # argparse's own errors
        code = int(str(exited.code))
    assert code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "error:" in err and "\x1b" not in err
    assert api_hub.queries == []


# --- errors --------------------------------------------------------------------------------


def test_unreachable_hub_is_one_line_that_says_what_to_do(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    code, _, err = run(["search", "foo"], capsys)
    assert code == 1
    line = one_error_line(err)
    assert "cannot reach http://127.0.0.1:9" in line and "offline" in line and "PROXY" in line


def test_offline_mode_refuses_before_any_request(
    api_hub: HubApiServer, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(["--offline", "pair", "quanter/Foo-1B-GGUF"], capsys)
    assert code == 1 and "offline mode is on" in one_error_line(err)
    assert api_hub.queries == []


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        (b"<html>login</html>", "not JSON"),
        (b'{"a": 1}', "not a JSON list"),
        (b"[" * 9_000_000, "over the 8 MB limit"),
    ],
    ids=["html", "object", "oversized"],
)
def test_broken_or_oversized_answers_are_refused(
    api_hub: HubApiServer, capsys: pytest.CaptureFixture[str], body: bytes, problem: str
) -> None:
    api_hub.raw_list = body
    code, _, err = run(["search", "foo"], capsys)
    assert code == 1
    line = one_error_line(err)
    assert problem in line and "did not answer like the Hugging Face Hub" in line


@pytest.mark.parametrize(
    ("status", "advice"),
    [
        (429, "wait a minute and try again; logged-in users get a higher limit (`hf auth login`)"),
        (503, "try again later (see https://status.huggingface.co)"),
        (502, "check your proxy, or try again later"),
    ],
)
def test_refusals_say_what_to_do(
    api_hub: HubApiServer, capsys: pytest.CaptureFixture[str], status: int, advice: str
) -> None:
    api_hub.fail_status = status
    code, _, err = run(["search", "foo"], capsys)
    assert code == 1
    line = one_error_line(err)
    assert str(status) in line and advice in line


def test_a_dead_proxy_is_named(
    api_hub: HubApiServer, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("HTTP_PROXY", "http://user:secret@127.0.0.1:9")
    code, _, err = run(["search", "foo"], capsys)
    assert code == 1
    line = one_error_line(err)
    assert "through the proxy http://127.0.0.1:9" in line and "HTTPS_PROXY" in line
    assert "secret" not in line
    assert api_hub.queries == []  # the request never got past the proxy


def test_a_slow_hub_times_out_with_advice(api_hub: HubApiServer) -> None:
    api_hub.delay_s = 2.0
    with HubApi(timeout_s=0.3) as api, pytest.raises(HubError, match="did not answer in time"):
        api.model_info("acme/Foo-1B")


def test_missing_repo(api_hub: HubApiServer, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(["pair", "nobody/Nothing-GGUF"], capsys)
    assert code == 1
    line = one_error_line(err)
    assert "nobody/Nothing-GGUF was not found" in line and "hf auth login" in line


# --- pairing -------------------------------------------------------------------------------


def test_pair_instruct_gguf_finds_the_base_gguf_of_the_same_publisher(
    api_hub: HubApiServer, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(["pair", "quanter/Foo-1B-Instruct-GGUF:Q4_K_M"], capsys)
    assert code == 0 and err == ""
    lines = out.splitlines()
    assert lines[0] == (
        "quanter/Foo-1B-Instruct-GGUF is instruct; its base sibling: quanter/Foo-1B-GGUF"
    )
    assert lines[2] == (
        "  1. quanter/Foo-1B-Instruct-GGUF quantized from acme/Foo-1B-Instruct  "
        "[tag base_model:quantized:acme/Foo-1B-Instruct]"
    )
    assert lines[3] == (
        "  2. acme/Foo-1B-Instruct fine-tuned from acme/Foo-1B  "
        "[tag base_model:finetune:acme/Foo-1B]"
    )
    assert lines[4].startswith("  3. acme/Foo-1B has the GGUF copy quanter/Foo-1B-GGUF  ")
    assert "filter base_model:quantized:acme/Foo-1B (2 found, same publisher" in lines[4]
    assert "--save" in lines[-1]


def test_pair_base_gguf_finds_the_publishers_instruct_fine_tune(
    api_hub: HubApiServer, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(["pair", "popular/Foo-1B-GGUF", "--json"], capsys)
    assert code == 0
    record = json.loads(out)
    assert record["kind"] == "base" and record["sibling_kind"] == "instruct"
    # acme's own fine-tune beats the more downloaded community one; no GGUF by `popular`,
    # so the most downloaded GGUF of it.
    assert record["sibling"] == "acme/Foo-1B-Instruct-GGUF"
    hops = [(h["from"], h["relation"], h["to"]) for h in record["evidence"]]
    assert hops == [
        ("popular/Foo-1B-GGUF", "quantized from", "acme/Foo-1B"),
        ("acme/Foo-1B", "has the instruct fine-tune", "acme/Foo-1B-Instruct"),
        ("acme/Foo-1B-Instruct", "has the GGUF copy", "acme/Foo-1B-Instruct-GGUF"),
    ]
    assert "the original publisher's" in record["evidence"][1]["evidence"]


def test_pair_without_metadata_lists_what_was_tried(
    api_hub: HubApiServer, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(["pair", "nometa/Mystery-GGUF"], capsys)
    assert code == 1 and out == ""
    line = one_error_line(err)
    assert "no sibling found for nometa/Mystery-GGUF" in line
    assert "tag base_model:quantized:… on nometa/Mystery-GGUF or cardData.base_model: none" in line


def test_a_loop_in_the_metadata_is_reported_not_followed(
    api_hub: HubApiServer, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(["pair", "loop/A-GGUF", "--json"], capsys)
    assert code == 1
    record = json.loads(out)
    assert record["found"] is False and record["loop"] == ["loop/B", "loop/C", "loop/B"]
    assert "loop (loop/B → loop/C → loop/B)" in one_error_line(err)
    info_requests = [q for q in api_hub.queries if q["path"].startswith("/api/models/loop/")]
    assert len(info_requests) == 3


def test_pair_falls_back_to_the_cards_base_model_field(
    api_hub: HubApiServer, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(["pair", "card/Bar-GGUF", "--json"], capsys)
    assert code == 0
    record = json.loads(out)
    assert record["kind"] == "instruct" and record["sibling"] == "card/Bar-Base-GGUF"
    evidence = [h["evidence"] for h in record["evidence"]]
    assert evidence[0] == "cardData.base_model = card/Bar-Chat (first of 2)"
    assert evidence[1] == "cardData.base_model = card/Bar"


def test_a_long_chain_is_followed_at_most_six_links(
    api_hub: HubApiServer, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(["pair", "long/L0-GGUF"], capsys)
    assert code == 1
    assert out.count("fine-tuned from") + out.count("quantized from") == 6
    assert "stopped after 6 links without reaching a base model" in one_error_line(err)
    asked = [q["path"] for q in api_hub.queries if q["path"].startswith("/api/models/long/")]
    assert len(asked) == 7  # the start and the six repos it led to, nothing more


def test_pair_save_writes_the_catalog_and_models_lists_it(
    api_hub: HubApiServer, isolated_home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(["pair", "quanter/Foo-1B-Instruct-GGUF", "--save"], capsys)
    assert code == 0, err
    catalog = isolated_home / "config" / "models.toml"
    assert f"saved to {catalog}: base 'foo-1b', instruct 'foo-1b-instruct'" in out
    text = catalog.read_text()
    assert "# Paired by `localbvi pair quanter/Foo-1B-Instruct-GGUF`" in text
    assert "context_length = 8192" in text and 'params = "1.1B"' in text

    code, out, _ = run(["models", "--json"], capsys)
    assert code == 0
    rows = {row["ref"]: row for row in json.loads(out)}
    assert rows["foo-1b-instruct:Q4_K_M"]["repo"] == "quanter/Foo-1B-Instruct-GGUF"
    assert rows["foo-1b-instruct:Q4_K_M"]["kind"] == "instruct"
    assert rows["foo-1b:Q4_K_M"]["kind"] == "base" and rows["foo-1b:Q4_K_M"]["pair"] == "foo-1b"
    assert rows["foo-1b:Q4_K_M"]["size"] == 400 * MB

    code, out, _ = run(["pair", "quanter/Foo-1B-GGUF", "--save"], capsys)
    assert code == 0 and f"already in {catalog}" in out
    assert catalog.read_text() == text


# --- the app's online check ------------------------------------------------------------------


class _Proxy(BaseHTTPRequestHandler):
    """A forward proxy stand-in: answers every request itself and remembers its target."""

    seen: list[str]

    def do_HEAD(self) -> None:
        self.seen.append(self.path)
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


def test_online_check_asks_the_hub_over_http_through_the_proxy(
    api_hub: HubApiServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert hub_reachable() is True
    assert api_hub.queries[-1]["path"] == "/api/models"

    monkeypatch.setenv("HF_ENDPOINT", "http://hub.invalid")
    assert hub_reachable(1.0) is False  # no proxy: the name does not even resolve

    seen: list[str] = []
    handler = type("Proxy", (_Proxy,), {"seen": seen})
    proxy = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=proxy.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{proxy.server_address[1]}")
        assert hub_reachable(1.0) is True
        assert seen and seen[0].startswith("http://hub.invalid/api/models")
    finally:
        proxy.shutdown()
        proxy.server_close()

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert hub_reachable() is False


def test_pair_save_into_an_unwritable_folder_is_one_line(
    api_hub: HubApiServer, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("LOCALBVI_CONFIG_DIR", "/dev/null/config")  # under a file: unwritable
    code, _, err = run(["pair", "quanter/Foo-1B-Instruct-GGUF", "--save"], capsys)
    assert code == 1
    line = one_error_line(err)
    assert "cannot write your catalog /dev/null/config/models.toml" in line
