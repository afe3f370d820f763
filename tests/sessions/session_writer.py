"""A process that records a chat the way localbvi does, for the kill -9 durability test.

Usage: session_writer.py DB. It writes a user message, "streams" an assistant reply token by
token (held in memory, like the app), saves it when complete, and repeats. After each commit it
prints `committed N` so the test knows what must survive; it never stops on its own.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from localbvi.sessions import SessionStore


def content(n: int) -> str:
    """Message n's text: long enough that a torn write would show."""
    return f"message {n}: " + f"token{n} " * 200


def main() -> None:
    store = SessionStore(Path(sys.argv[1]))
    session = store.create("chat", model="gemma-3-270m", mode="chat", title="durability")
    print(f"session {session.id}", flush=True)
    n = 0
    while True:
        store.add_message(session.id, "user", content(n))
        print(f"committed {n}", flush=True)
        n += 1
        reply = []
        for i in range(20):  # the streaming reply: nothing is saved until it is complete
            reply.append(f"token{n} ")
            if i == 10:
                print(f"streaming {n}", flush=True)
            time.sleep(0.0005)
        store.add_message(session.id, "assistant", content(n), stats={"tokens": 200})
        print(f"committed {n}", flush=True)
        n += 1


if __name__ == "__main__":
    main()
