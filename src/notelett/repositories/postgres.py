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
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection

from field_encrypt import ConcurrentUpdateError, NotFoundError
from field_encrypt.backends.postgres.db import Migration, PostgresDatabase
from field_encrypt.backends.sharding import check_shard
from notelett.errors import InvalidCursorError
from notelett.repositories.base import NotePage, NoteRecord, StoredTags, StoredValue, Workspace

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
_WITH_INDEX = (
    f"{_COLUMNS}, ARRAY(SELECT t.index_value FROM note_tags t WHERE t.note_seq = notes.seq "
    "ORDER BY t.index_value)"
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


class PostgresNotesRepository:
    """Notes in the product's PostgreSQL database."""

    def __init__(self, database: PostgresDatabase) -> None:
        self.database = database
        database.migrate(MIGRATIONS)

    def __repr__(self) -> str:
        return f"PostgresNotesRepository({self.database!r})"

    def insert(self, note: NoteRecord) -> NoteRecord:
        title, title_text = _split(note.title)
        body, body_text = _split(note.body)
        tags, tags_token = _split_tags(note.tags)
        with self.database.transaction() as conn:  # a taken id raises AlreadyExistsError
            ((seq,),) = conn.exec_driver_sql(
                "INSERT INTO notes (id, workspace_id, title, title_text, body, body_text, tags, "
                "tags_token, dek_id, revision, created_at, updated_at) "
                "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, 1, %s, %s) RETURNING seq",
                (
                    note.id,
                    note.workspace_id,
                    title,
                    title_text,
                    body,
                    body_text,
                    tags,
                    tags_token,
                    note.dek_id,
                    note.created_at,
                    note.updated_at,
                ),
            ).all()
            _write_index(conn, note.workspace_id, seq, note.tag_index)
        return dataclasses.replace(note, revision=1, deleting=False)

    def get(self, note_id: str) -> NoteRecord:
        rows = self.database.query(
            f"SELECT {_WITH_INDEX} FROM notes WHERE id = %s AND NOT deleting", (note_id,)
        )
        if not rows:
            raise NotFoundError(f"note {note_id} not found")
        return _record(rows[0])

    def list_tagged(
        self, workspace_id: str, index_values: Sequence[str], *, cursor: str | None, limit: int
    ) -> NotePage:
        before = _position(cursor, default=2**63 - 1)
        values = list(dict.fromkeys(index_values))
        if not values:
            return NotePage(notes=[], cursor=None)
        rows = self.database.query(
            tagged_query(len(values)),
            tagged_params(workspace_id, values, before=before, limit=limit + 1),
        )
        more = len(rows) > limit
        rows = rows[:limit]
        return NotePage(
            notes=[_record(r) for r in rows], cursor=str(rows[-1][0]) if more and rows else None
        )

    def list_workspace(self, workspace_id: str, *, cursor: str | None, limit: int) -> NotePage:
        before = _position(cursor, default=2**63 - 1)
        rows = self.database.query(
            f"SELECT {_COLUMNS} FROM notes WHERE workspace_id = %s AND seq < %s AND NOT deleting "
            "ORDER BY seq DESC LIMIT %s",
            (workspace_id, before, limit + 1),
        )
        more = len(rows) > limit
        rows = rows[:limit]
        return NotePage(
            notes=[_record(r) for r in rows], cursor=str(rows[-1][0]) if more and rows else None
        )

    def replace(
        self,
        note_id: str,
        *,
        expected_revision: int,
        title: StoredValue,
        body: StoredValue,
        tags: StoredTags,
        dek_id: str | None,
        updated_at: dt.datetime,
        tag_index: tuple[str, ...] | None = None,
    ) -> NoteRecord:
        title_bin, title_text = _split(title)
        body_bin, body_text = _split(body)
        tags_plain, tags_token = _split_tags(tags)
        with self.database.transaction() as conn:
            rows = conn.exec_driver_sql(
                "UPDATE notes SET title = %s, title_text = %s, body = %s, body_text = %s, "
                "tags = %s, tags_token = %s, dek_id = %s, updated_at = %s, "
                "revision = revision + 1 WHERE id = %s AND revision = %s AND NOT deleting "
                "RETURNING seq, workspace_id",
                (
                    title_bin,
                    title_text,
                    body_bin,
                    body_text,
                    tags_plain,
                    tags_token,
                    dek_id,
                    updated_at,
                    note_id,
                    expected_revision,
                ),
            ).all()
            if rows and tag_index is not None:
                ((seq, workspace_id),) = rows
                conn.exec_driver_sql("DELETE FROM note_tags WHERE note_seq = %s", (seq,))
                _write_index(conn, workspace_id, seq, tag_index)
        if not rows:
            self.get(note_id)  # NotFoundError when it is gone or being deleted
            raise ConcurrentUpdateError(f"note {note_id} changed since it was read")
        return self.get(note_id)

    def mark_deleting(self, note_id: str, *, expected_revision: int | None) -> NoteRecord:
        sql = "UPDATE notes SET deleting = true WHERE id = %s AND NOT deleting"
        params: tuple[object, ...] = (note_id,)
        if expected_revision is not None:
            sql += " AND revision = %s"
            params += (expected_revision,)
        rows = self.database.query(f"{sql} RETURNING {_COLUMNS}", params)
        if rows:
            return _record(rows[0])
        self.get(note_id)  # NotFoundError when it is gone or already being deleted
        raise ConcurrentUpdateError(f"note {note_id} changed since it was read")

    def remove(self, note_id: str) -> bool:
        return bool(self.database.query("DELETE FROM notes WHERE id = %s RETURNING 1", (note_id,)))

    def pending_deletes(self, *, limit: int) -> list[NoteRecord]:
        rows = self.database.query(
            f"SELECT {_COLUMNS} FROM notes WHERE deleting ORDER BY seq LIMIT %s", (limit,)
        )
        return [_record(r) for r in rows]

    def scan(self, *, cursor: str | None, limit: int, shard: tuple[int, int] | None) -> NotePage:
        sql = f"SELECT {_WITH_INDEX} FROM notes WHERE seq > %s AND NOT deleting"
        params: list[object] = [_position(cursor, default=0)]
        if shard is not None:
            index, count = check_shard(shard)
            sql += " AND seq %% %s = %s"
            params += [count, index]
        rows = self.database.query(sql + " ORDER BY seq LIMIT %s", (*params, limit))
        return NotePage(
            notes=[_record(r) for r in rows],
            cursor=str(rows[-1][0]) if len(rows) == limit else None,
        )

    def count(self) -> int:
        ((count,),) = self.database.query("SELECT count(*) FROM notes WHERE NOT deleting")
        return int(count)

    def ping(self) -> None:
        self.database.query("SELECT 1")

    def check_writable(self) -> None:
        self.database.query("UPDATE notelett_write_probe SET at = now() WHERE id = 1")


class PostgresWorkspaceDirectory:
    """Workspaces, users and memberships in the product's PostgreSQL database."""

    def __init__(self, database: PostgresDatabase) -> None:
        self.database = database
        database.migrate(MIGRATIONS)

    def __repr__(self) -> str:
        return f"PostgresWorkspaceDirectory({self.database!r})"

    def is_member(self, user_id: str, workspace_id: str) -> bool:
        return bool(
            self.database.query(
                "SELECT 1 FROM memberships WHERE user_id = %s AND workspace_id = %s",
                (user_id, workspace_id),
            )
        )

    def add_workspace(self, workspace_id: str, *, name: str) -> None:
        self.database.query(
            "INSERT INTO workspaces (id, name) VALUES (%s, %s) ON CONFLICT DO NOTHING",
            (workspace_id, name),
        )

    def add_user(self, user_id: str, *, name: str) -> None:
        self.database.query(
            "INSERT INTO users (id, name) VALUES (%s, %s) ON CONFLICT DO NOTHING",
            (user_id, name),
        )

    def add_member(self, user_id: str, workspace_id: str) -> None:
        self.database.query(
            "INSERT INTO memberships (user_id, workspace_id) VALUES (%s, %s) "
            "ON CONFLICT DO NOTHING",
            (user_id, workspace_id),
        )

    def remove_member(self, user_id: str, workspace_id: str) -> bool:
        rows = self.database.query(
            "DELETE FROM memberships WHERE user_id = %s AND workspace_id = %s RETURNING 1",
            (user_id, workspace_id),
        )
        return bool(rows)

    def list_workspaces(self) -> list[Workspace]:
        rows = self.database.query("SELECT id, name FROM workspaces ORDER BY id")
        return [Workspace(id=row[0], name=row[1]) for row in rows]

    def list_members(self, workspace_id: str) -> list[str]:
        rows = self.database.query(
            "SELECT user_id FROM memberships WHERE workspace_id = %s ORDER BY user_id",
            (workspace_id,),
        )
        return [row[0] for row in rows]


def _split(value: StoredValue) -> tuple[bytes | None, str | None]:
    """A stored value as its (binary, text) column pair."""
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value), None
    return None, value


def _split_tags(tags: StoredTags) -> tuple[list[str], bytes | None]:
    """Stored tags as their (plaintext ``tags``, ``tags_token``) column pair."""
    if isinstance(tags, bytes):
        return [], tags
    return list(tags), None


def _write_index(
    conn: Connection, workspace_id: str, seq: int, values: tuple[str, ...] | None
) -> None:
    if values:
        conn.exec_driver_sql(
            "INSERT INTO note_tags (workspace_id, index_value, note_seq) "
            "SELECT %s, v, %s FROM unnest(%s::text[]) AS v ON CONFLICT DO NOTHING",
            (workspace_id, seq, list(values)),
        )


def _position(cursor: str | None, *, default: int) -> int:
    if cursor is None:
        return default
    if not cursor.isdigit() or len(cursor) > 19:
        raise InvalidCursorError()
    return int(cursor)


def _record(row: tuple[Any, ...]) -> NoteRecord:
    (
        _,
        note_id,
        workspace_id,
        title,
        title_text,
        body,
        body_text,
        tags,
        tags_token,
        dek_id,
        revision,
        created,
        updated,
        deleting,
    ) = row[:14]
    return NoteRecord(
        id=note_id,
        workspace_id=workspace_id,
        title=title if title is not None else title_text,
        body=body if body is not None else body_text,
        tags=bytes(tags_token) if tags_token is not None else tuple(tags),
        dek_id=dek_id,
        revision=int(revision),
        created_at=created,
        updated_at=updated,
        deleting=bool(deleting),
        tag_index=tuple(row[14]) if len(row) > 14 else None,
    )
