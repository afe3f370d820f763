"""Export: what a user reads in the Markdown file, and what a script gets from the JSON."""

from __future__ import annotations

import json

from localbvi.sessions import SessionStore, render, to_json, to_markdown


def _chat(store: SessionStore) -> int:
    s = store.create("chat", "gemma-3-270m-it", "chat", title="Arithmetic", system="Be helpful.")
    store.add_message(s.id, "user", "What is 2+2?")
    store.add_message(
        s.id,
        "assistant",
        "It is 4.",
        stats={"tokens": 4, "tokens_per_s": 51.26, "stop_detail": "end of turn"},
    )
    store.add_message(s.id, "user", "And 3+3?")
    store.add_message(s.id, "assistant", "It is", status="cancelled")
    return s.id


def test_markdown_has_header_system_and_turns_in_order() -> None:
    with SessionStore() as store:
        md = to_markdown(store.get(_chat(store)))
    assert md.startswith("# Arithmetic\n")
    assert "- **Model:** `gemma-3-270m-it`" in md
    assert "- **Mode:** chat" in md
    assert "## System prompt\n\nBe helpful." in md
    order = [
        md.index(s)
        for s in (
            "## User\n\nWhat is 2+2?",
            "## Assistant\n\nIt is 4.",
            "## User\n\nAnd 3+3?",
            "## Assistant (cancelled)\n\nIt is",
        )
    ]
    assert order == sorted(order)
    assert "*4 tokens · 51.3 tokens/s · stopped: end of turn*" in md


def test_markdown_fences_a_completion_document_verbatim() -> None:
    with SessionStore() as store:
        s = store.create("completion", "gemma-3-270m", "completion")
        store.update_document(s.id, "def f():\n    ```\n# not a heading")
        md = to_markdown(store.get(s.id))
    assert "## Document\n\n````text\ndef f():\n    ```\n# not a heading\n````" in md


def test_json_holds_everything_to_rebuild_the_session() -> None:
    with SessionStore() as store:
        record = store.get(_chat(store))
    data = json.loads(to_json(record))
    assert data["localbvi_session"] == 1
    assert (data["id"], data["kind"], data["model"], data["mode"]) == (
        record.id,
        "chat",
        "gemma-3-270m-it",
        "chat",
    )
    assert data["system"] == "Be helpful."
    assert [(m["role"], m["content"], m["status"]) for m in data["messages"]] == [
        ("user", "What is 2+2?", "complete"),
        ("assistant", "It is 4.", "complete"),
        ("user", "And 3+3?", "complete"),
        ("assistant", "It is", "cancelled"),
    ]
    assert data["messages"][1]["stats"]["tokens"] == 4
    assert data["created_at"].endswith("Z")


def test_json_keeps_non_ascii_text_readable() -> None:
    with SessionStore() as store:
        s = store.create("chat", "m", "chat")
        store.add_message(s.id, "user", "Grüße 👋")
        text = render(store.get(s.id), "json")
    assert "Grüße 👋" in text
    assert json.loads(text)["messages"][0]["content"] == "Grüße 👋"


def _regenerated(store: SessionStore) -> int:
    """A chat whose first reply was regenerated and whose follow-up was edited."""
    s = store.create("chat", "gemma-3-270m-it", "chat", title="Colours")
    store.add_message(s.id, "user", "Name a colour")
    replaced = store.add_message(s.id, "assistant", "Blue, probably.")
    store.supersede(s.id, [replaced])
    store.add_message(s.id, "assistant", "Green.")
    edited = store.add_message(s.id, "user", "Another one?")
    cut = store.add_message(s.id, "assistant", "Red", status="cancelled")
    store.supersede(s.id, [edited, cut])
    store.add_message(s.id, "user", "And one more?")
    store.add_message(s.id, "assistant", "Yellow.")
    return s.id


def test_export_leaves_out_superseded_messages_unless_asked() -> None:
    with SessionStore() as store:
        record = store.get(_regenerated(store))
    md = to_markdown(record)
    for gone in ("Blue, probably.", "Another one?", "Red"):
        assert gone not in md
    headings = [line for line in md.splitlines() if line.startswith("## ")]
    assert headings == ["## User", "## Assistant", "## User", "## Assistant"]
    assert [m["content"] for m in json.loads(to_json(record))["messages"]] == [
        "Name a colour",
        "Green.",
        "And one more?",
        "Yellow.",
    ]
    everything = to_markdown(record, include_superseded=True)
    assert "## Assistant (superseded)\n\nBlue, probably." in everything
    assert "## User (superseded)\n\nAnother one?" in everything
    assert "## Assistant (cancelled, superseded)\n\nRed" in everything
    order = [everything.index(t) for t in ("Blue, probably.", "Green.", "Another one?", "Yellow.")]
    assert order == sorted(order)
    data = json.loads(render(record, "json", include_superseded=True))
    assert [(m["content"], m["superseded"]) for m in data["messages"]] == [
        ("Name a colour", False),
        ("Blue, probably.", True),
        ("Green.", False),
        ("Another one?", True),
        ("Red", True),
        ("And one more?", False),
        ("Yellow.", False),
    ]
