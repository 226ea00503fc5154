"""The SQLite implementations of :class:`NotesRepository` and :class:`WorkspaceDirectory`.

Notes live in the same SQLite file as the dek_store. ``title`` and ``body`` are BLOB
columns holding binary field tokens (no base64 on the hot path); ``seq`` (the rowid)
orders listings and scans, so pagination is a keyset walk of the ``(workspace_id, seq)``
index. Schema changes are named migrations recorded by :class:`SqliteDatabase`.
The logic is :mod:`notelett.repositories.sql`'s; this module holds the schema, the
column mapping, the tag index's write and lookup, and the write probe.

``tags`` holds the note's tags as one binary token (a BLOB) or, written before tags were
encrypted, their plaintext as JSON text. Their blind-index values live in ``note_tags``,
one row per (note, distinct tag), written in the note's transaction; its primary key
``(workspace_id, index_value, note_seq)`` makes a tag lookup one index range walk in the
listing's order (docs/queryable.md).
"""

from __future__ import annotations

import datetime as dt
import json
import time
from collections.abc import Sequence
from typing import Any

from field_encrypt.backends.sql.dialect import Session
from field_encrypt.backends.sql.sqlite import SqliteDialect
from field_encrypt.backends.sqlite.db import Migration, SqliteDatabase
from notelett.repositories.base import StoredTags, StoredValue
from notelett.repositories.sql import SqlNotesRepository, SqlWorkspaceDirectory

MIGRATIONS = (
    Migration(
        "notelett_0001_directory",
        """
        CREATE TABLE workspaces (
            id TEXT PRIMARY KEY,
            name TEXT NOT NULL,
            created_at REAL NOT NULL
        );
        CREATE TABLE users (
            id TEXT PRIMARY KEY,
            name TEXT NOT NULL,
            created_at REAL NOT NULL
        );
        CREATE TABLE memberships (
            user_id TEXT NOT NULL REFERENCES users (id),
            workspace_id TEXT NOT NULL REFERENCES workspaces (id),
            created_at REAL NOT NULL,
            PRIMARY KEY (user_id, workspace_id)
        ) WITHOUT ROWID
        """,
    ),
    Migration(
        "notelett_0002_notes",
        """
        CREATE TABLE notes (
            seq INTEGER PRIMARY KEY,
            id TEXT NOT NULL UNIQUE,
            workspace_id TEXT NOT NULL REFERENCES workspaces (id),
            title BLOB,
            body BLOB,
            tags TEXT NOT NULL,
            dek_id TEXT,
            revision INTEGER NOT NULL,
            created_at REAL NOT NULL,
            updated_at REAL NOT NULL,
            deleting INTEGER NOT NULL DEFAULT 0
        );
        CREATE INDEX notes_workspace ON notes (workspace_id, seq);
        CREATE INDEX notes_dek ON notes (dek_id);
        CREATE INDEX notes_deleting ON notes (deleting) WHERE deleting = 1
        """,
    ),
    Migration(
        "notelett_0003_write_probe",
        """
        CREATE TABLE notelett_write_probe (id INTEGER PRIMARY KEY, at REAL NOT NULL);
        INSERT INTO notelett_write_probe (id, at) VALUES (1, 0)
        """,
    ),
    Migration(
        "notelett_0004_note_tags",
        """
        CREATE TABLE note_tags (
            workspace_id TEXT NOT NULL,
            index_value TEXT NOT NULL,
            note_seq INTEGER NOT NULL,
            PRIMARY KEY (workspace_id, index_value, note_seq)
        ) WITHOUT ROWID;
        CREATE INDEX note_tags_note ON note_tags (note_seq)
        """,
    ),
)

PROBE_BUSY_TIMEOUT_MS = 100
"""How long the readiness write probe waits for SQLite's write lock."""

_COLUMNS = (
    "seq, id, workspace_id, title, body, tags, dek_id, revision, created_at, updated_at, deleting"
)


def tagged_query(count: int, *, table: str = "note_tags", column: str = "index_value") -> str:
    """The SQL of a tag lookup for ``count`` index values (bench/tag_lookup.py explains it,
    and runs it on a plaintext baseline table of the same shape)."""
    columns = ", ".join(f"n.{c.strip()}" for c in _COLUMNS.split(","))
    marks = ", ".join("?" * count)
    return (
        f"SELECT {columns} FROM {table} t JOIN notes n ON n.seq = t.note_seq "
        f"WHERE t.workspace_id = ? AND t.{column} IN ({marks}) AND t.note_seq < ? "
        "AND n.deleting = 0 ORDER BY t.note_seq DESC LIMIT ?"
    )


class SqliteNotesRepository(SqlNotesRepository):
    """Notes in the product's SQLite file."""

    value_columns = ("title", "body", "tags")
    index_column = (
        "(SELECT json_group_array(t.index_value) FROM note_tags t WHERE t.note_seq = notes.seq)"
    )
    live = "deleting = 0"
    dead = "deleting = 1"
    tags_cascade = False

    database: SqliteDatabase

    def __init__(self, database: SqliteDatabase) -> None:
        super().__init__(SqliteDialect(database), MIGRATIONS)

    def _stored(self, title: StoredValue, body: StoredValue, tags: StoredTags) -> dict[str, Any]:
        # a binary token as it is, plaintext tags as JSON text
        return {
            "title": title,
            "body": body,
            "tags": tags if isinstance(tags, bytes) else json.dumps(list(tags)),
        }

    def _values(self, columns: Sequence[Any]) -> tuple[StoredValue, StoredValue, StoredTags]:
        title, body, tags = columns
        return title, body, tags if isinstance(tags, bytes) else tuple(json.loads(tags))

    def _index_values(self, column: Any) -> tuple[str, ...]:
        return tuple(json.loads(column))

    def _stamp(self, when: dt.datetime) -> float:
        return when.timestamp()

    def _write_index(
        self, session: Session, workspace_id: str, seq: int, values: tuple[str, ...] | None
    ) -> None:
        if values:
            session.run_many(
                "INSERT OR IGNORE INTO note_tags (workspace_id, index_value, note_seq) "
                "VALUES (:w, :v, :seq)",
                [{"w": workspace_id, "v": value, "seq": seq} for value in values],
            )

    def _tagged(
        self, workspace_id: str, values: Sequence[str], *, before: int, limit: int
    ) -> list[Any]:
        return self.database.query(
            tagged_query(len(values)), (workspace_id, *values, before, limit)
        )

    def check_writable(self) -> None:
        with self.database.busy_timeout(PROBE_BUSY_TIMEOUT_MS):
            self.database.execute(
                "UPDATE notelett_write_probe SET at = ? WHERE id = 1", (time.time(),)
            )


class SqliteWorkspaceDirectory(SqlWorkspaceDirectory):
    """Workspaces, users and memberships in the product's SQLite file."""

    def __init__(self, database: SqliteDatabase) -> None:
        super().__init__(SqliteDialect(database), MIGRATIONS)
