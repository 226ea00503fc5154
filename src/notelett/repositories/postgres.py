"""The PostgreSQL implementations of :class:`NotesRepository` and :class:`WorkspaceDirectory`.

Notes live in the same database as the dek_store (``FIELD_ENCRYPT_DATABASE``). A stored field
is a binary token, a text token or plaintext, so each encrypted field has two columns:
``title`` (``bytea``) for binary tokens and ``title_text`` (``text``) for the others; at most
one is set. ``seq`` (an identity column) orders listings and scans, so pagination is a keyset
walk of the ``(workspace_id, seq)`` index, and ``seq % n`` splits a scan into shards. Schema
changes are named migrations recorded by :class:`PostgresDatabase`.

A note's tags are one binary token in ``tags_token`` (``bytea``; ``tags`` is then empty)
or, written before tags were encrypted, plaintext in ``tags``. Their blind-index values
live in ``note_tags``, one row per (note, distinct tag), written in the note's transaction;
its primary key ``(workspace_id, index_value, note_seq)`` makes a tag lookup one index
range scan in the listing's order (docs/queryable.md).

The logic is :mod:`notelett.repositories.sql`'s; this module holds the schema, the
column mapping, the tag index's batch write, the tag lookup's query shape and the write probe.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from field_encrypt.backends.postgres.db import Migration, PostgresDatabase
from field_encrypt.backends.sql.dialect import Session
from field_encrypt.backends.sql.postgres import PostgresDialect
from notelett.repositories.base import StoredTags, StoredValue
from notelett.repositories.sql import SqlNotesRepository, SqlWorkspaceDirectory

MIGRATIONS = (
    Migration(
        "notelett_0001_directory",
        """
        CREATE TABLE workspaces (
            id text PRIMARY KEY,
            name text NOT NULL,
            created_at timestamptz NOT NULL DEFAULT now()
        );
        CREATE TABLE users (
            id text PRIMARY KEY,
            name text NOT NULL,
            created_at timestamptz NOT NULL DEFAULT now()
        );
        CREATE TABLE memberships (
            user_id text NOT NULL REFERENCES users (id),
            workspace_id text NOT NULL REFERENCES workspaces (id),
            created_at timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (user_id, workspace_id)
        );
        """,
    ),
    Migration(
        "notelett_0002_notes",
        """
        CREATE TABLE notes (
            seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            id text NOT NULL UNIQUE,
            workspace_id text NOT NULL REFERENCES workspaces (id),
            title bytea,
            title_text text,
            body bytea,
            body_text text,
            tags text[] NOT NULL,
            dek_id text,
            revision bigint NOT NULL,
            created_at timestamptz NOT NULL,
            updated_at timestamptz NOT NULL,
            deleting boolean NOT NULL DEFAULT false,
            CHECK (title IS NULL OR title_text IS NULL),
            CHECK (body IS NULL OR body_text IS NULL)
        );
        CREATE INDEX notes_workspace ON notes (workspace_id, seq);
        CREATE INDEX notes_dek ON notes (dek_id);
        CREATE INDEX notes_deleting ON notes (seq) WHERE deleting;
        """,
    ),
    Migration(
        "notelett_0003_write_probe",
        """
        CREATE TABLE notelett_write_probe (id int PRIMARY KEY, at timestamptz NOT NULL);
        INSERT INTO notelett_write_probe (id, at) VALUES (1, now());
        """,
    ),
    Migration(
        "notelett_0004_note_tags",
        """
        ALTER TABLE notes ADD COLUMN tags_token bytea;
        CREATE TABLE note_tags (
            workspace_id text NOT NULL,
            index_value text NOT NULL,
            note_seq bigint NOT NULL REFERENCES notes (seq) ON DELETE CASCADE,
            PRIMARY KEY (workspace_id, index_value, note_seq)
        );
        CREATE INDEX note_tags_note ON note_tags (note_seq);
        """,
    ),
)

_COLUMNS = (
    "seq, id, workspace_id, title, title_text, body, body_text, tags, tags_token, dek_id, "
    "revision, created_at, updated_at, deleting"
)


def tagged_query(count: int, *, table: str = "note_tags", column: str = "index_value") -> str:
    """The SQL of a tag lookup for ``count`` index values (named parameters ``w``, ``v0``..,
    ``before``, ``n``; bench/tag_lookup.py explains it, and runs it on a plaintext baseline
    table of the same shape).

    One backward walk of the primary key per value, each already in the listing's order
    and limited, merged: the plan stays an index range scan whatever the planner guesses
    about a parameter (a generic plan for ``= ANY(array)`` sorted a bitmap scan, or walked
    every row of ``note_tags_note``).
    """
    columns = ", ".join(f"n.{c.strip()}" for c in _COLUMNS.split(","))
    walks = " UNION ALL ".join(
        f"(SELECT t.note_seq FROM {table} t JOIN notes n ON n.seq = t.note_seq "
        f"WHERE t.workspace_id = %(w)s AND t.{column} = %(v{i})s AND t.note_seq < %(before)s "
        "AND NOT n.deleting ORDER BY t.note_seq DESC LIMIT %(n)s)"
        for i in range(count)
    )
    return (
        f"SELECT {columns} FROM ({walks}) m JOIN notes n ON n.seq = m.note_seq "
        "ORDER BY m.note_seq DESC LIMIT %(n)s"
    )


def tagged_params(
    workspace_id: str, values: Sequence[str], *, before: int, limit: int
) -> dict[str, object]:
    """The parameters of :func:`tagged_query`."""
    return {
        "w": workspace_id,
        "before": before,
        "n": limit,
        **{f"v{i}": v for i, v in enumerate(values)},
    }


class PostgresNotesRepository(SqlNotesRepository):
    """Notes in the product's PostgreSQL database."""

    value_columns = ("title", "title_text", "body", "body_text", "tags", "tags_token")
    index_column = (
        "ARRAY(SELECT t.index_value FROM note_tags t WHERE t.note_seq = notes.seq "
        "ORDER BY t.index_value)"
    )
    live = "NOT deleting"
    dead = "deleting"
    tags_cascade = True  # note_tags.note_seq REFERENCES notes ON DELETE CASCADE

    database: PostgresDatabase

    def __init__(self, database: PostgresDatabase) -> None:
        super().__init__(PostgresDialect(database), MIGRATIONS)

    def _stored(self, title: StoredValue, body: StoredValue, tags: StoredTags) -> dict[str, Any]:
        # a field's binary token in its bytea column, a text token or plaintext in its text
        # column; a tag token in tags_token (tags then empty), plaintext tags in tags
        stored = dict(zip(("title", "title_text"), _split(title), strict=True))
        stored.update(zip(("body", "body_text"), _split(body), strict=True))
        if isinstance(tags, bytes):
            return {**stored, "tags": [], "tags_token": tags}
        return {**stored, "tags": list(tags), "tags_token": None}

    def _values(self, columns: Sequence[Any]) -> tuple[StoredValue, StoredValue, StoredTags]:
        title, title_text, body, body_text, tags, tags_token = columns
        return (
            title if title is not None else title_text,
            body if body is not None else body_text,
            bytes(tags_token) if tags_token is not None else tuple(tags),
        )

    def _index_values(self, column: Any) -> tuple[str, ...]:
        return tuple(column)

    def _write_index(
        self, session: Session, workspace_id: str, seq: int, values: tuple[str, ...] | None
    ) -> None:
        # one statement for the whole batch
        if values:
            session.conn.exec_driver_sql(
                "INSERT INTO note_tags (workspace_id, index_value, note_seq) "
                "SELECT %s, v, %s FROM unnest(%s::text[]) AS v ON CONFLICT DO NOTHING",
                (workspace_id, seq, list(values)),
            )

    def _tagged(
        self, workspace_id: str, values: Sequence[str], *, before: int, limit: int
    ) -> list[Any]:
        rows: list[Any] = self.database.query(
            tagged_query(len(values)),
            tagged_params(workspace_id, values, before=before, limit=limit),
        )
        return rows

    def check_writable(self) -> None:
        self.database.query("UPDATE notelett_write_probe SET at = now() WHERE id = 1")


class PostgresWorkspaceDirectory(SqlWorkspaceDirectory):
    """Workspaces, users and memberships in the product's PostgreSQL database."""

    def __init__(self, database: PostgresDatabase) -> None:
        super().__init__(PostgresDialect(database), MIGRATIONS)


def _split(value: StoredValue) -> tuple[bytes | None, str | None]:
    """A stored value as its (binary, text) column pair."""
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value), None
    return None, value
