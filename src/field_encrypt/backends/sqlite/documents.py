"""A generic SQLite DocumentStore: JSON documents in one table, keyed by collection and id.

For products that have no tables of their own (examples, tests, small tools). Encrypted
fields hold text tokens inside the JSON.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from field_encrypt.backends.sqlite.db import Migration, SqliteDatabase
from field_encrypt.documents import DocumentPage, DocumentWrite, StoredDocument
from field_encrypt.errors import AlreadyExistsError, ConcurrentUpdateError, NotFoundError

MIGRATIONS = (
    Migration(
        "0001_documents",
        """
        CREATE TABLE documents (
            seq INTEGER PRIMARY KEY,
            collection TEXT NOT NULL,
            id TEXT NOT NULL,
            fields TEXT NOT NULL,
            dek_id TEXT,
            revision INTEGER NOT NULL,
            UNIQUE (collection, id)
        );
        CREATE INDEX documents_dek ON documents (dek_id)
        """,
    ),
)


class SqliteDocumentStore:
    """One collection of JSON documents in the product's SQLite file."""

    def __init__(self, database: SqliteDatabase, *, collection: str) -> None:
        self.database = database
        self.collection = collection
        database.migrate(MIGRATIONS)

    def __repr__(self) -> str:
        return f"SqliteDocumentStore({self.database.path!r}, collection={self.collection!r})"

    def insert(
        self, document_id: str, fields: dict[str, Any], dek_id: str | None
    ) -> StoredDocument:
        """Add a document (for applications and tests; migrations only replace)."""
        try:
            self.database.execute(
                "INSERT INTO documents (collection, id, fields, dek_id, revision) "
                "VALUES (?, ?, ?, ?, 1)",
                (self.collection, document_id, json.dumps(fields), dek_id),
            )
        except AlreadyExistsError as exc:
            raise AlreadyExistsError(f"document {document_id} exists", cause=exc.cause) from None
        return StoredDocument(id=document_id, fields=fields, dek_id=dek_id, revision="1")

    def delete(self, document_id: str) -> bool:
        """Remove a document; whether there was one."""
        cur = self.database.execute(
            "DELETE FROM documents WHERE collection = ? AND id = ?", (self.collection, document_id)
        )
        return cur.rowcount > 0

    def scan(
        self,
        *,
        cursor: str | None = None,
        limit: int = 500,
        shard: tuple[int, int] | None = None,
    ) -> DocumentPage:
        where = "collection = ? AND seq > ?"
        params: list[object] = [self.collection, int(cursor) if cursor else 0]
        if shard is not None:
            where += " AND seq % ? = ?"
            params += [shard[1], shard[0]]
        # NOT INDEXED: walk by seq (the rowid). With the (collection, id) index the planner
        # would read every document of the collection after the cursor and sort them again
        # for each page: a whole scan was quadratic in the collection's size.
        rows = self.database.query(
            f"SELECT seq, id, fields, dek_id, revision FROM documents NOT INDEXED WHERE {where} "
            "ORDER BY seq LIMIT ?",
            (*params, limit),
        )
        docs = [_document(r) for r in rows]
        return DocumentPage(documents=docs, cursor=str(rows[-1][0]) if len(rows) == limit else None)

    def get(self, document_id: str) -> StoredDocument:
        rows = self.database.query(
            "SELECT seq, id, fields, dek_id, revision FROM documents "
            "WHERE collection = ? AND id = ?",
            (self.collection, document_id),
        )
        if not rows:
            raise NotFoundError(f"document {document_id} not found")
        return _document(rows[0])

    def replace_fields(
        self, document: StoredDocument, fields: dict[str, Any], dek_id: str | None
    ) -> StoredDocument:
        cur = self.database.execute(
            "UPDATE documents SET fields = ?, dek_id = ?, revision = revision + 1 "
            "WHERE collection = ? AND id = ? AND revision = ?",
            (json.dumps(fields), dek_id, self.collection, document.id, int(document.revision)),
        )
        if cur.rowcount != 1:
            self.get(document.id)  # raises NotFoundError if it was deleted
            raise ConcurrentUpdateError(f"document {document.id} changed during the migration")
        return StoredDocument(
            id=document.id, fields=fields, dek_id=dek_id, revision=str(int(document.revision) + 1)
        )

    def replace_many(self, writes: Sequence[DocumentWrite]) -> list[str]:
        if not writes:
            return []
        collection = self.collection
        params = [
            (json.dumps(w.fields), w.dek_id, collection, w.document.id, int(w.document.revision))
            for w in writes
        ]
        try:
            with self.database.transaction() as tx:
                before = tx.total_changes
                tx.executemany(_REPLACE, params)
                if tx.total_changes - before != len(params):
                    raise _SomeLost()  # roll back, then write them one by one
            return []
        except _SomeLost:
            pass
        lost = []
        with self.database.transaction() as tx:
            for values in params:
                if tx.execute(_REPLACE, values).rowcount != 1:
                    lost.append(values[3])
        return lost

    def count(self) -> int:
        ((count,),) = self.database.query(
            "SELECT COUNT(*) FROM documents WHERE collection = ?", (self.collection,)
        )
        return int(count)


_REPLACE = (
    "UPDATE documents SET fields = ?, dek_id = ?, revision = revision + 1 "
    "WHERE collection = ? AND id = ? AND revision = ?"
)


class _SomeLost(Exception):
    """Internal: a batched write lost somewhere (rolled back, written again row by row)."""


def _document(row: Any) -> StoredDocument:
    _, document_id, fields, dek_id, revision = row
    return StoredDocument(
        id=document_id, fields=json.loads(fields), dek_id=dek_id, revision=str(revision)
    )
