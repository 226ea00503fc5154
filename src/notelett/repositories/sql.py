"""NoteLett's notes repository and workspace directory in SQL, written once for both dialects.

The logic is here, run through :class:`~field_encrypt.backends.sql.dialect.Dialect` (named
``:name`` parameters) as the library's SQL stores are. What stays in
:mod:`notelett.repositories.sqlite` and :mod:`notelett.repositories.postgres` is what really
differs: the schema (their migrations, as existing databases have them), how a stored value
maps to columns (PostgreSQL has a binary and a text column per field, SQLite one column of
either type), the tag index's batch write, the tag lookup's query shape and the write probe.

Rows come back as ``seq, id, workspace_id, <value columns>, dek_id, revision, created_at,
updated_at, deleting`` and, where a read needs it, the note's tag index values last.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from abc import abstractmethod
from collections.abc import Sequence
from typing import Any, Unpack

from field_encrypt import ConcurrentUpdateError, NotFoundError
from field_encrypt.backends.sharding import check_shard
from field_encrypt.backends.sql.dialect import Dialect, Session, SqlStore, timestamp
from notelett.errors import InvalidCursorError
from notelett.repositories.base import (
    NoteChange,
    NotePage,
    NoteRecord,
    StoredTags,
    StoredValue,
    Workspace,
)

LAST = 2**63 - 1
"""The position before the newest note (a listing's first page)."""


class SqlNotesRepository(SqlStore):
    """:class:`~notelett.repositories.base.NotesRepository` in the ``notes`` and
    ``note_tags`` tables."""

    value_columns: tuple[str, ...]
    """The columns of a note's title, body and tags, in the order :meth:`_values` reads."""
    index_column: str
    """The SQL of a note's tag index values (a subquery on ``notes.seq``)."""
    live: str
    """The condition of a live note (one the partial ``notes_deleting`` index does not hold)."""
    dead: str
    """The condition of a note being deleted (the partial index's)."""
    tags_cascade: bool
    """Whether deleting a note deletes its ``note_tags`` rows (a foreign key's cascade)."""

    def __init__(self, dialect: Dialect, migrations: Sequence[Any]) -> None:
        super().__init__(dialect, migrations)
        self.columns = ", ".join(
            ("seq, id, workspace_id", *self.value_columns,
             "dek_id, revision, created_at, updated_at, deleting")
        )  # fmt: skip
        self.with_index = f"{self.columns}, {self.index_column}"

    @abstractmethod
    def _stored(self, title: StoredValue, body: StoredValue, tags: StoredTags) -> dict[str, Any]:
        """A note's title, body and tags as the parameters of :attr:`value_columns`."""

    @abstractmethod
    def _values(self, columns: Sequence[Any]) -> tuple[StoredValue, StoredValue, StoredTags]:
        """The title, body and tags of :attr:`value_columns`' values."""

    @abstractmethod
    def _index_values(self, column: Any) -> tuple[str, ...]:
        """The tag index values of :attr:`index_column`'s value."""

    @abstractmethod
    def _write_index(
        self, session: Session, workspace_id: str, seq: int, values: tuple[str, ...] | None
    ) -> None:
        """Add the note's tag index values (a batch write, inside the note's transaction)."""

    @abstractmethod
    def _tagged(
        self, workspace_id: str, values: Sequence[str], *, before: int, limit: int
    ) -> list[Any]:
        """The rows of a tag lookup: the live notes holding any of ``values`` below
        ``before``, newest first, at most ``limit``."""

    @abstractmethod
    def check_writable(self) -> None:
        """Raise a ``StoreError`` unless a write goes through now."""

    def _stamp(self, when: dt.datetime) -> Any:
        """A time as a timestamp column takes it."""
        return when

    def _record(self, row: Sequence[Any]) -> NoteRecord:
        _, note_id, workspace_id = row[:3]
        end = 3 + len(self.value_columns)
        title, body, tags = self._values(row[3:end])
        dek_id, revision, created, updated, deleting = row[end : end + 5]
        return NoteRecord(
            id=note_id, workspace_id=workspace_id, title=title, body=body, tags=tags,
            dek_id=dek_id, revision=int(revision), deleting=bool(deleting),
            created_at=timestamp(created), updated_at=timestamp(updated),
            tag_index=self._index_values(row[end + 5]) if len(row) > end + 5 else None,
        )  # fmt: skip

    def _page(self, rows: list[Any], *, limit: int) -> NotePage:
        """A listing's page of ``limit + 1`` rows read: the extra one says there is more."""
        more = len(rows) > limit
        rows = rows[:limit]
        return NotePage(
            notes=[self._record(r) for r in rows],
            cursor=str(rows[-1][0]) if more and rows else None,
        )

    def insert(self, note: NoteRecord) -> NoteRecord:
        stored = self._stored(note.title, note.body, note.tags)
        marks = ", ".join(f":{c}" for c in stored)
        with self.dialect.transaction() as session:  # a taken id raises AlreadyExistsError
            ((seq,),) = session.rows(
                f"INSERT INTO notes (id, workspace_id, {', '.join(stored)}, dek_id, revision, "
                f"created_at, updated_at) VALUES (:id, :workspace_id, {marks}, :dek_id, 1, "
                ":created_at, :updated_at) RETURNING seq",
                {
                    "id": note.id,
                    "workspace_id": note.workspace_id,
                    **stored,
                    "dek_id": note.dek_id,
                    "created_at": self._stamp(note.created_at),
                    "updated_at": self._stamp(note.updated_at),
                },
            )
            self._write_index(session, note.workspace_id, seq, note.tag_index)
        return dataclasses.replace(note, revision=1, deleting=False)

    def get(self, note_id: str) -> NoteRecord:
        rows = self.dialect.query(
            f"SELECT {self.with_index} FROM notes WHERE id = :id AND {self.live}", {"id": note_id}
        )
        if not rows:
            raise NotFoundError(f"note {note_id} not found")
        return self._record(rows[0])

    def list_tagged(
        self, workspace_id: str, index_values: Sequence[str], *, cursor: str | None, limit: int
    ) -> NotePage:
        before = _position(cursor, default=LAST)
        values = list(dict.fromkeys(index_values))
        if not values:
            return NotePage(notes=[], cursor=None)
        rows = self._tagged(workspace_id, values, before=before, limit=limit + 1)
        return self._page(rows, limit=limit)

    def list_workspace(self, workspace_id: str, *, cursor: str | None, limit: int) -> NotePage:
        rows = self.dialect.query(
            f"SELECT {self.columns} FROM notes WHERE workspace_id = :w AND seq < :before "
            f"AND {self.live} ORDER BY seq DESC LIMIT :n",
            {"w": workspace_id, "before": _position(cursor, default=LAST), "n": limit + 1},
        )
        return self._page(rows, limit=limit)

    def replace(
        self, note_id: str, *, expected_revision: int, **change: Unpack[NoteChange]
    ) -> NoteRecord:
        stored = self._stored(change["title"], change["body"], change["tags"])
        sets = "".join(f"{c} = :{c}, " for c in stored)
        tag_index = change.get("tag_index")
        with self.dialect.transaction() as session:
            rows = session.rows(
                f"UPDATE notes SET {sets}dek_id = :dek_id, updated_at = :updated_at, "
                "revision = revision + 1 WHERE id = :id AND revision = :revision "
                f"AND {self.live} RETURNING seq, workspace_id",
                {
                    **stored,
                    "dek_id": change["dek_id"],
                    "updated_at": self._stamp(change["updated_at"]),
                    "id": note_id,
                    "revision": expected_revision,
                },
            )
            if rows and tag_index is not None:
                ((seq, workspace_id),) = rows
                session.run("DELETE FROM note_tags WHERE note_seq = :seq", {"seq": seq})
                self._write_index(session, workspace_id, seq, tag_index)
        if not rows:
            self.get(note_id)  # NotFoundError when it is gone or being deleted
            raise ConcurrentUpdateError(f"note {note_id} changed since it was read")
        return self.get(note_id)

    def mark_deleting(self, note_id: str, *, expected_revision: int | None) -> NoteRecord:
        sql = f"UPDATE notes SET deleting = true WHERE id = :id AND {self.live}"
        params: dict[str, Any] = {"id": note_id}
        if expected_revision is not None:
            sql += " AND revision = :revision"
            params["revision"] = expected_revision
        rows = self.dialect.query(f"{sql} RETURNING {self.columns}", params)
        if rows:
            return self._record(rows[0])
        self.get(note_id)  # NotFoundError when it is gone or already being deleted
        raise ConcurrentUpdateError(f"note {note_id} changed since it was read")

    def remove(self, note_id: str) -> bool:
        with self.dialect.transaction() as session:
            if not self.tags_cascade:
                session.run(
                    "DELETE FROM note_tags WHERE note_seq = (SELECT seq FROM notes WHERE id = :id)",
                    {"id": note_id},
                )
            return session.run("DELETE FROM notes WHERE id = :id", {"id": note_id}) > 0

    def pending_deletes(self, *, limit: int) -> list[NoteRecord]:
        rows = self.dialect.query(
            f"SELECT {self.columns} FROM notes WHERE {self.dead} ORDER BY seq LIMIT :n",
            {"n": limit},
        )
        return [self._record(r) for r in rows]

    def scan(self, *, cursor: str | None, limit: int, shard: tuple[int, int] | None) -> NotePage:
        sql = f"SELECT {self.with_index} FROM notes WHERE seq > :after AND {self.live}"
        params: dict[str, Any] = {"after": _position(cursor, default=0), "n": limit}
        if shard is not None:
            params["index"], params["count"] = check_shard(shard)
            sql += " AND seq % :count = :index"
        rows = self.dialect.query(sql + " ORDER BY seq LIMIT :n", params)
        return NotePage(
            notes=[self._record(r) for r in rows],
            cursor=str(rows[-1][0]) if len(rows) == limit else None,
        )

    def count(self) -> int:
        ((count,),) = self.dialect.query(f"SELECT count(*) FROM notes WHERE {self.live}")
        return int(count)

    def ping(self) -> None:
        self.dialect.query("SELECT 1")


class SqlWorkspaceDirectory(SqlStore):
    """:class:`~notelett.repositories.base.WorkspaceDirectory` in the ``workspaces``,
    ``users`` and ``memberships`` tables."""

    def _add(self, table: str, values: dict[str, Any]) -> None:
        """Insert one row into ``table`` unless its key is taken (a no-op then)."""
        columns = ", ".join(values)
        marks = ", ".join(f":{c}" for c in values)
        self.dialect.execute(
            f"INSERT INTO {table} ({columns}, created_at) VALUES ({marks}, {self.dialect.now}) "
            "ON CONFLICT DO NOTHING",
            {**values, **self.dialect.now_params()},
        )

    def is_member(self, user_id: str, workspace_id: str) -> bool:
        return bool(
            self.dialect.query(
                "SELECT 1 FROM memberships WHERE user_id = :user AND workspace_id = :workspace",
                {"user": user_id, "workspace": workspace_id},
            )
        )

    def add_workspace(self, workspace_id: str, *, name: str) -> None:
        self._add("workspaces", {"id": workspace_id, "name": name})

    def add_user(self, user_id: str, *, name: str) -> None:
        self._add("users", {"id": user_id, "name": name})

    def add_member(self, user_id: str, workspace_id: str) -> None:
        self._add("memberships", {"user_id": user_id, "workspace_id": workspace_id})

    def remove_member(self, user_id: str, workspace_id: str) -> bool:
        changed = self.dialect.execute(
            "DELETE FROM memberships WHERE user_id = :user AND workspace_id = :workspace",
            {"user": user_id, "workspace": workspace_id},
        )
        return changed > 0

    def list_workspaces(self) -> list[Workspace]:
        rows = self.dialect.query("SELECT id, name FROM workspaces ORDER BY id")
        return [Workspace(id=row[0], name=row[1]) for row in rows]

    def list_members(self, workspace_id: str) -> list[str]:
        rows = self.dialect.query(
            "SELECT user_id FROM memberships WHERE workspace_id = :workspace ORDER BY user_id",
            {"workspace": workspace_id},
        )
        return [row[0] for row in rows]


def _position(cursor: str | None, *, default: int) -> int:
    """A listing's or scan's cursor as the ``seq`` it continues from."""
    if cursor is None:
        return default
    if not cursor.isdigit() or len(cursor) > 19:
        raise InvalidCursorError()
    return int(cursor)
