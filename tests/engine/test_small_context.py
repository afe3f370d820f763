"""A context smaller than llama.cpp's padding (`--ctx 16`) is held to, with the usual errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from localbvi.cli import main


def test_a_prompt_longer_than_a_tiny_context_is_a_clear_error(
    gemma_base: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["complete", "-m", str(gemma_base), "--ctx", "16", "--max-tokens", "5",
                 "word " * 40])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 1
    assert "context holds 16" in err and "--ctx" in err, err
    assert "broadcast" not in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1, err


def test_a_reply_stops_when_a_tiny_context_is_full(
    gemma_base: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["complete", "-m", str(gemma_base), "--ctx", "16", "--max-tokens", "50",
                 "--temperature", "0", "one two three"])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 0, err
    assert "context full" in err, err
