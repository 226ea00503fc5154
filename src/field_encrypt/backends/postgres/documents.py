"""A generic PostgreSQL DocumentStore: JSON documents in one ``documents`` table.

The PostgreSQL twin of :mod:`field_encrypt.backends.sqlite.documents`, for products without
tables of their own. ``fields`` is ``jsonb``; encrypted fields hold text tokens inside it.
Rows are keyed by ``(collection, id)``; ``seq`` orders scans and ``seq % n`` splits them into
shards. Writes are compare-and-swap on ``revision``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from sqlalchemy import BigInteger, Column, MetaData, Table, Text, func, select
from sqlalchemy.dialects.postgresql import JSONB

from field_encrypt.backends.postgres.db import Migration, PostgresDatabase
from field_encrypt.backends.sharding import check_shard
from field_encrypt.documents import DocumentPage, DocumentWrite, StoredDocument
from field_encrypt.errors import AlreadyExistsError, ConcurrentUpdateError, NotFoundError

MIGRATIONS = (
    Migration(
        "0001_documents",
        """
        CREATE TABLE documents (
            seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            collection text NOT NULL,
            id text NOT NULL,
            fields jsonb NOT NULL,
            dek_id text,
            revision bigint NOT NULL DEFAULT 1,
            UNIQUE (collection, id)
        );
        CREATE INDEX documents_collection_seq ON documents (collection, seq);
        CREATE INDEX documents_dek ON documents (dek_id);
        """,
    ),
)

metadata = MetaData()
documents = Table(
    "documents",
    metadata,
    Column("seq", BigInteger, primary_key=True),
    Column("collection", Text, nullable=False),
    Column("id", Text, nullable=False),
    Column("fields", JSONB, nullable=False),
    Column("dek_id", Text),
    Column("revision", BigInteger, nullable=False),
)
_C = documents.c
# A page of writes in one statement (as the dek_store's batched rewrap): ``unnest`` of parallel
# arrays, joined on (collection, id, revision) for the compare-and-swap; the ids it returns won.
_REPLACE_MANY = """
    UPDATE documents AS d
    SET fields = u.fields::jsonb, dek_id = u.dek_id, revision = d.revision + 1
    FROM unnest(%(ids)b::text[], %(revisions)b::bigint[], %(fields)b::text[],
                %(dek_ids)b::text[]) AS u(id, revision, fields, dek_id)
    WHERE d.collection = %(collection)s AND d.id = u.id AND d.revision = u.revision
    RETURNING d.id
"""
_DOCUMENT = (_C.seq, _C.id, _C.fields, _C.dek_id, _C.revision)


class PostgresDocumentStore:
    """One collection of JSON documents in the product's PostgreSQL database."""

    def __init__(self, database: PostgresDatabase, *, collection: str) -> None:
        self.database = database
        self.collection = collection
        database.migrate(MIGRATIONS)

    def __repr__(self) -> str:
        return f"PostgresDocumentStore({self.database!r}, collection={self.collection!r})"

    def insert(
        self, document_id: str, fields: dict[str, Any], dek_id: str | None
    ) -> StoredDocument:
        """Add a document (for applications and tests; migrations only replace)."""
        statement = documents.insert().values(
            collection=self.collection, id=document_id, fields=fields, dek_id=dek_id
        )
        try:
            self.database.execute(statement)
        except AlreadyExistsError as exc:
            raise AlreadyExistsError(f"document {document_id} exists", cause=exc.cause) from None
        return StoredDocument(id=document_id, fields=fields, dek_id=dek_id, revision="1")

    def delete(self, document_id: str) -> bool:
        """Remove a document; whether there was one."""
        rows = self.database.execute(
            documents.delete()
            .where(_C.collection == self.collection, _C.id == document_id)
            .returning(_C.seq)
        )
        return bool(rows)

    def scan(
        self,
        *,
        cursor: str | None = None,
        limit: int = 500,
        shard: tuple[int, int] | None = None,
    ) -> DocumentPage:
        query = select(*_DOCUMENT).where(_C.collection == self.collection)
        if cursor is not None:
            query = query.where(_C.seq > int(cursor))
        if shard is not None:
            index, count = check_shard(shard)
            query = query.where(_C.seq % count == index)
        rows = self.database.execute(query.order_by(_C.seq).limit(limit))
        return DocumentPage(
            documents=[_document(r) for r in rows],
            cursor=str(rows[-1].seq) if len(rows) == limit else None,
        )

    def get(self, document_id: str) -> StoredDocument:
        rows = self.database.execute(
            select(*_DOCUMENT).where(_C.collection == self.collection, _C.id == document_id)
        )
        if not rows:
            raise NotFoundError(f"document {document_id} not found")
        return _document(rows[0])

    def replace_fields(
        self, document: StoredDocument, fields: dict[str, Any], dek_id: str | None
    ) -> StoredDocument:
        rows = self.database.execute(
            documents.update()
            .where(
                _C.collection == self.collection,
                _C.id == document.id,
                _C.revision == int(document.revision),
            )
            .values(fields=fields, dek_id=dek_id, revision=_C.revision + 1)
            .returning(_C.revision)
        )
        if not rows:
            self.get(document.id)  # raises NotFoundError if it was deleted
            raise ConcurrentUpdateError(f"document {document.id} changed during the migration")
        return StoredDocument(
            id=document.id, fields=fields, dek_id=dek_id, revision=str(rows[0][0])
        )

    def replace_many(self, writes: Sequence[DocumentWrite]) -> list[str]:
        if not writes:
            return []
        params = {
            "collection": self.collection,
            "ids": [w.document.id for w in writes],
            "revisions": [int(w.document.revision) for w in writes],
            "fields": [json.dumps(w.fields) for w in writes],
            "dek_ids": [w.dek_id for w in writes],
        }
        won = {document_id for (document_id,) in self.database.query(_REPLACE_MANY, params)}
        return [w.document.id for w in writes if w.document.id not in won]

    def count(self) -> int:
        ((count,),) = self.database.execute(
            select(func.count()).where(_C.collection == self.collection)
        )
        return int(count)


def _document(row: Any) -> StoredDocument:
    return StoredDocument(
        id=row.id, fields=dict(row.fields), dek_id=row.dek_id, revision=str(row.revision)
    )
