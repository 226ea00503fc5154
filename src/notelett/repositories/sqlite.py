"""The SQLite implementations of :class:`NotesRepository` and :class:`WorkspaceDirectory`.

Notes live in the same SQLite file as the dek_store. ``title`` and ``body`` are BLOB
columns holding binary field tokens (no base64 on the hot path); ``seq`` (the rowid)
orders listings and scans, so pagination is a keyset walk of the ``(workspace_id, seq)``
index. Schema changes are named migrations recorded by :class:`SqliteDatabase`.

``tags`` holds the note's tags as one binary token (a BLOB) or, written before tags were
encrypted, their plaintext as JSON text. Their blind-index values live in ``note_tags``,
one row per (note, distinct tag), written in the note's transaction; its primary key
``(workspace_id, index_value, note_seq)`` makes a tag lookup one index range walk in the
listing's order (docs/queryable.md).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import sqlite3
import time
from collections.abc import Sequence
from typing import Any

from field_encrypt import ConcurrentUpdateError, NotFoundError
from field_encrypt.backends.sqlite.db import Migration, SqliteDatabase
from notelett.errors import InvalidCursorError
from notelett.repositories.base import NotePage, NoteRecord, StoredTags, StoredValue, Workspace

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
_WITH_INDEX = (
    f"{_COLUMNS}, (SELECT json_group_array(t.index_value) FROM note_tags t "
    "WHERE t.note_seq = notes.seq)"
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


class SqliteNotesRepository:
    """Notes in the product's SQLite file."""

    def __init__(self, database: SqliteDatabase) -> None:
        self.database = database
        database.migrate(MIGRATIONS)

    def __repr__(self) -> str:
        return f"SqliteNotesRepository({self.database.path!r})"

    def insert(self, note: NoteRecord) -> NoteRecord:
        with self.database.transaction() as tx:
            cur = tx.execute(  # a taken id raises AlreadyExistsError
                "INSERT INTO notes (id, workspace_id, title, body, tags, dek_id, revision, "
                "created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, 1, ?, ?)",
                (
                    note.id,
                    note.workspace_id,
                    note.title,
                    note.body,
                    _tags_column(note.tags),
                    note.dek_id,
                    note.created_at.timestamp(),
                    note.updated_at.timestamp(),
                ),
            )
            _write_index(tx, note.workspace_id, cur.lastrowid, note.tag_index)
        return dataclasses.replace(note, revision=1, deleting=False)

    def get(self, note_id: str) -> NoteRecord:
        rows = self.database.query(
            f"SELECT {_WITH_INDEX} FROM notes WHERE id = ? AND deleting = 0", (note_id,)
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
            tagged_query(len(values)), (workspace_id, *values, before, limit + 1)
        )
        more = len(rows) > limit
        rows = rows[:limit]
        return NotePage(
            notes=[_record(r) for r in rows], cursor=str(rows[-1][0]) if more and rows else None
        )

    def list_workspace(self, workspace_id: str, *, cursor: str | None, limit: int) -> NotePage:
        before = _position(cursor, default=2**63 - 1)
        rows = self.database.query(
            f"SELECT {_COLUMNS} FROM notes WHERE workspace_id = ? AND seq < ? AND deleting = 0 "
            "ORDER BY seq DESC LIMIT ?",
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
        with self.database.transaction() as tx:
            rows = tx.execute(
                "UPDATE notes SET title = ?, body = ?, tags = ?, dek_id = ?, updated_at = ?, "
                "revision = revision + 1 WHERE id = ? AND revision = ? AND deleting = 0 "
                "RETURNING seq, workspace_id",
                (
                    title,
                    body,
                    _tags_column(tags),
                    dek_id,
                    updated_at.timestamp(),
                    note_id,
                    expected_revision,
                ),
            ).fetchall()
            if rows and tag_index is not None:
                ((seq, workspace_id),) = rows
                tx.execute("DELETE FROM note_tags WHERE note_seq = ?", (seq,))
                _write_index(tx, workspace_id, seq, tag_index)
        if not rows:
            self.get(note_id)  # NotFoundError when it is gone or being deleted
            raise ConcurrentUpdateError(f"note {note_id} changed since it was read")
        return self.get(note_id)

    def mark_deleting(self, note_id: str, *, expected_revision: int | None) -> NoteRecord:
        sql = "UPDATE notes SET deleting = 1 WHERE id = ? AND deleting = 0"
        params: tuple[object, ...] = (note_id,)
        if expected_revision is not None:
            sql += " AND revision = ?"
            params += (expected_revision,)
        rows = self.database.query(f"{sql} RETURNING {_COLUMNS}", params)
        if rows:
            return _record(rows[0])
        self.get(note_id)  # NotFoundError when it is gone or already being deleted
        raise ConcurrentUpdateError(f"note {note_id} changed since it was read")

    def remove(self, note_id: str) -> bool:
        with self.database.transaction() as tx:
            tx.execute(
                "DELETE FROM note_tags WHERE note_seq = (SELECT seq FROM notes WHERE id = ?)",
                (note_id,),
            )
            return tx.execute("DELETE FROM notes WHERE id = ?", (note_id,)).rowcount > 0

    def pending_deletes(self, *, limit: int) -> list[NoteRecord]:
        rows = self.database.query(
            f"SELECT {_COLUMNS} FROM notes WHERE deleting = 1 ORDER BY seq LIMIT ?", (limit,)
        )
        return [_record(r) for r in rows]

    def scan(self, *, cursor: str | None, limit: int, shard: tuple[int, int] | None) -> NotePage:
        where = "seq > ? AND deleting = 0"
        params: list[object] = [_position(cursor, default=0)]
        if shard is not None:
            where += " AND seq % ? = ?"
            params += [shard[1], shard[0]]
        rows = self.database.query(
            f"SELECT {_WITH_INDEX} FROM notes WHERE {where} ORDER BY seq LIMIT ?",
            (*params, limit),
        )
        return NotePage(
            notes=[_record(r) for r in rows],
            cursor=str(rows[-1][0]) if len(rows) == limit else None,
        )

    def count(self) -> int:
        ((count,),) = self.database.query("SELECT COUNT(*) FROM notes WHERE deleting = 0")
        return int(count)

    def ping(self) -> None:
        self.database.query("SELECT 1")

    def check_writable(self) -> None:
        with self.database.busy_timeout(PROBE_BUSY_TIMEOUT_MS):
            self.database.execute(
                "UPDATE notelett_write_probe SET at = ? WHERE id = 1", (time.time(),)
            )


class SqliteWorkspaceDirectory:
    """Workspaces, users and memberships in the product's SQLite file."""

    def __init__(self, database: SqliteDatabase) -> None:
        self.database = database
        database.migrate(MIGRATIONS)

    def __repr__(self) -> str:
        return f"SqliteWorkspaceDirectory({self.database.path!r})"

    def is_member(self, user_id: str, workspace_id: str) -> bool:
        return bool(
            self.database.query(
                "SELECT 1 FROM memberships WHERE user_id = ? AND workspace_id = ?",
                (user_id, workspace_id),
            )
        )

    def add_workspace(self, workspace_id: str, *, name: str) -> None:
        self.database.execute(
            "INSERT OR IGNORE INTO workspaces (id, name, created_at) VALUES (?, ?, ?)",
            (workspace_id, name, time.time()),
        )

    def add_user(self, user_id: str, *, name: str) -> None:
        self.database.execute(
            "INSERT OR IGNORE INTO users (id, name, created_at) VALUES (?, ?, ?)",
            (user_id, name, time.time()),
        )

    def add_member(self, user_id: str, workspace_id: str) -> None:
        self.database.execute(
            "INSERT OR IGNORE INTO memberships (user_id, workspace_id, created_at) "
            "VALUES (?, ?, ?)",
            (user_id, workspace_id, time.time()),
        )

    def remove_member(self, user_id: str, workspace_id: str) -> bool:
        cursor = self.database.execute(
            "DELETE FROM memberships WHERE user_id = ? AND workspace_id = ?",
            (user_id, workspace_id),
        )
        return cursor.rowcount > 0

    def list_workspaces(self) -> list[Workspace]:
        rows = self.database.query("SELECT id, name FROM workspaces ORDER BY id")
        return [Workspace(id=row[0], name=row[1]) for row in rows]

    def list_members(self, workspace_id: str) -> list[str]:
        rows = self.database.query(
            "SELECT user_id FROM memberships WHERE workspace_id = ? ORDER BY user_id",
            (workspace_id,),
        )
        return [row[0] for row in rows]


def _position(cursor: str | None, *, default: int) -> int:
    if cursor is None:
        return default
    if not cursor.isdigit():
        raise InvalidCursorError()
    return int(cursor)


def _time(seconds: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(seconds, dt.UTC)


def _tags_column(tags: StoredTags) -> bytes | str:
    """A binary token as it is, plaintext tags as JSON text."""
    return tags if isinstance(tags, bytes) else json.dumps(list(tags))


def _write_index(
    tx: sqlite3.Connection, workspace_id: str, seq: int | None, values: tuple[str, ...] | None
) -> None:
    if values:
        tx.executemany(
            "INSERT OR IGNORE INTO note_tags (workspace_id, index_value, note_seq) "
            "VALUES (?, ?, ?)",
            [(workspace_id, value, seq) for value in values],
        )


def _record(row: Any) -> NoteRecord:
    _, note_id, workspace_id, title, body, tags, dek_id, revision, created, updated, deleting = row[
        :11
    ]
    return NoteRecord(
        id=note_id,
        workspace_id=workspace_id,
        title=title,
        body=body,
        tags=tags if isinstance(tags, bytes) else tuple(json.loads(tags)),
        dek_id=dek_id,
        revision=revision,
        created_at=_time(created),
        updated_at=_time(updated),
        deleting=bool(deleting),
        tag_index=tuple(json.loads(row[11])) if len(row) > 11 else None,
    )
