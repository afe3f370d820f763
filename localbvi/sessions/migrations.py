"""Numbered schema upgrades of the sessions database, keyed on `PRAGMA user_version`.

Version N of the schema is what `MIGRATIONS[:N]` builds. Each upgrade runs in its own
transaction together with the `user_version` bump, so a crash mid-upgrade leaves the database
at the previous version and the next start simply runs it again. Never edit a released
migration: append a new one.
"""

from __future__ import annotations

import sqlite3

from localbvi.errors import SessionStoreError

__all__ = ["MIGRATIONS", "SCHEMA_VERSION", "migrate", "schema_version"]

MIGRATIONS: tuple[tuple[str, ...], ...] = (
    # 1: sessions and their messages.
    (
        """
        CREATE TABLE sessions (
            id          INTEGER PRIMARY KEY,
            kind        TEXT NOT NULL CHECK (kind IN ('chat', 'completion', 'compare')),
            model       TEXT NOT NULL,
            mode        TEXT NOT NULL,
            title       TEXT NOT NULL DEFAULT '',
            system      TEXT NOT NULL DEFAULT '',
            document    TEXT NOT NULL DEFAULT '',
            meta        TEXT NOT NULL DEFAULT '{}',
            created_at  REAL NOT NULL,
            updated_at  REAL NOT NULL
        )
        """,
        """
        CREATE TABLE messages (
            id          INTEGER PRIMARY KEY,
            session_id  INTEGER NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
            role        TEXT NOT NULL,
            content     TEXT NOT NULL,
            status      TEXT NOT NULL DEFAULT 'complete'
                        CHECK (status IN ('complete', 'cancelled', 'error')),
            stats       TEXT NOT NULL DEFAULT '{}',
            created_at  REAL NOT NULL
        )
        """,
        "CREATE INDEX messages_by_session ON messages (session_id, id)",
        "CREATE INDEX sessions_by_update ON sessions (updated_at DESC, id DESC)",
    ),
    # 2: messages replaced by "regenerate" or "edit last" are kept, marked superseded.
    (
        "ALTER TABLE messages ADD COLUMN superseded INTEGER NOT NULL DEFAULT 0"
        " CHECK (superseded IN (0, 1))",
    ),
)

SCHEMA_VERSION = len(MIGRATIONS)
"""The schema version this localbvi writes."""


def schema_version(conn: sqlite3.Connection) -> int:
    """The database's `PRAGMA user_version` (0 for a new, empty file)."""
    row = conn.execute("PRAGMA user_version").fetchone()
    return int(row[0])


def migrate(conn: sqlite3.Connection) -> int:
    """Bring the database up to `SCHEMA_VERSION`; returns the version it started at.

    `conn` must be in autocommit mode (`isolation_level=None`) so that each upgrade is exactly
    one explicit transaction.
    """
    start = schema_version(conn)
    if start > SCHEMA_VERSION:
        raise SessionStoreError(
            f"the sessions database has schema version {start}, newer than this localbvi "
            f"understands ({SCHEMA_VERSION}): upgrade localbvi, or move the file aside"
        )
    for version in range(start + 1, SCHEMA_VERSION + 1):
        # IMMEDIATE takes the write lock first, so two processes starting at once do not both
        # run an upgrade: the second waits, then sees the new version and skips it.
        conn.execute("BEGIN IMMEDIATE")
        try:
            if schema_version(conn) >= version:
                conn.execute("COMMIT")
                continue
            for statement in MIGRATIONS[version - 1]:
                conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {version:d}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
    return start
