"""A generic DocumentStore in the product's SQL database, for both dialects: JSON documents
in one ``documents`` table, keyed by collection and id.

For products that have no tables of their own (examples, tests, small tools). Encrypted
fields hold text tokens inside the JSON (``TEXT`` in SQLite, ``jsonb`` in PostgreSQL). Rows
are keyed by ``(collection, id)``; ``seq`` orders scans and ``seq % n`` splits them into
shards. Writes are compare-and-swap on ``revision``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from field_encrypt.backends.sql.dialect import Dialect, SqlStore
from field_encrypt.documents import DocumentPage, DocumentWrite, ScannedStore, StoredDocument
from field_encrypt.errors import AlreadyExistsError, ConcurrentUpdateError, NotFoundError

SCHEMA = """
    CREATE TABLE documents (
        seq {serial} PRIMARY KEY,
        collection {text} NOT NULL,
        id {text} NOT NULL,
        fields {json} NOT NULL,
        dek_id {text},
        revision {bigint} NOT NULL{revision_default},
        UNIQUE (collection, id)
    );
    {scan_index}
    CREATE INDEX documents_dek ON documents (dek_id)
"""


def migrations(dialect: Dialect) -> tuple[Any, ...]:
    """The documents table's schema steps in ``dialect``: PostgreSQL scans by a
    ``(collection, seq)`` index (SQLite walks its rowid)."""
    return (
        dialect.schema(
            "0001_documents",
            SCHEMA,
            revision_default={"postgres": " DEFAULT 1"},
            scan_index={
                "postgres": "CREATE INDEX documents_collection_seq ON documents (collection, seq);"
            },
        ),
    )


COLUMNS = "seq, id, fields, dek_id, revision"
REPLACE = (
    "UPDATE documents SET fields = {json}, dek_id = :dek_id, revision = revision + 1 "
    "WHERE collection = :collection AND id = :id AND revision = :revision"
)


class SqlDocumentStore(SqlStore, ScannedStore):
    """One collection of JSON documents in the product's SQL database."""

    scope = "collection"

    scan_from = "documents"
    """The FROM of a scan (where a dialect needs a planner hint)."""

    def __init__(self, dialect: Dialect, *, collection: str) -> None:
        self.collection = collection
        self.replace_sql = REPLACE.format(json=dialect.json_value)
        super().__init__(dialect, migrations(dialect))

    def insert(
        self, document_id: str, fields: dict[str, Any], dek_id: str | None
    ) -> StoredDocument:
        """Add a document (for applications and tests; migrations only replace)."""
        params = {"collection": self.collection, "id": document_id, "dek_id": dek_id}
        try:
            self.dialect.execute(
                "INSERT INTO documents (collection, id, fields, dek_id, revision) "
                f"VALUES (:collection, :id, {self.dialect.json_value}, :dek_id, 1)",
                {**params, "json": json.dumps(fields)},
            )
        except AlreadyExistsError as exc:
            raise AlreadyExistsError(f"document {document_id} exists", cause=exc.cause) from None
        return StoredDocument(id=document_id, fields=fields, dek_id=dek_id, revision="1")

    def delete(self, document_id: str) -> bool:
        """Remove a document; whether there was one."""
        deleted = self.dialect.execute(
            "DELETE FROM documents WHERE collection = :collection AND id = :id",
            {"collection": self.collection, "id": document_id},
        )
        return deleted > 0

    def _scan(self, cursor: str | None, limit: int, shard: tuple[int, int] | None) -> DocumentPage:
        where = "collection = :collection AND seq > :after"
        params: dict[str, Any] = {"collection": self.collection, "after": int(cursor or 0)}
        if shard is not None:
            index, count = shard
            where += " AND seq % :count = :index"
            params.update(count=count, index=index)
        rows = self.dialect.query(
            f"SELECT {COLUMNS} FROM {self.scan_from} WHERE {where} ORDER BY seq LIMIT :limit",
            {**params, "limit": limit},
        )
        docs = [document(r) for r in rows]
        return DocumentPage(documents=docs, cursor=str(rows[-1][0]) if len(rows) == limit else None)

    def get(self, document_id: str) -> StoredDocument:
        rows = self.dialect.query(
            f"SELECT {COLUMNS} FROM documents WHERE collection = :collection AND id = :id",
            {"collection": self.collection, "id": document_id},
        )
        if not rows:
            raise NotFoundError(f"document {document_id} not found")
        return document(rows[0])

    def replace_fields(
        self, document: StoredDocument, fields: dict[str, Any], dek_id: str | None
    ) -> StoredDocument:
        if self.dialect.execute(self.replace_sql, self._write(document, fields, dek_id)) != 1:
            self.get(document.id)  # raises NotFoundError if it was deleted
            raise ConcurrentUpdateError(f"document {document.id} changed during the migration")
        return StoredDocument(
            id=document.id, fields=fields, dek_id=dek_id, revision=str(int(document.revision) + 1)
        )

    def replace_many(self, writes: Sequence[DocumentWrite]) -> list[str]:
        """Each write in one transaction; the ids whose compare-and-swap lost."""
        if not writes:
            return []
        lost = []
        with self.dialect.transaction() as session:
            for w in writes:
                if session.run(self.replace_sql, self._write(w.document, w.fields, w.dek_id)) != 1:
                    lost.append(w.document.id)
        return lost

    def _write(
        self, document: StoredDocument, fields: dict[str, Any], dek_id: str | None
    ) -> dict[str, Any]:
        return {
            "json": json.dumps(fields),
            "dek_id": dek_id,
            "collection": self.collection,
            "id": document.id,
            "revision": int(document.revision),
        }

    def count(self) -> int:
        ((count,),) = self.dialect.query(
            "SELECT COUNT(*) FROM documents WHERE collection = :collection",
            {"collection": self.collection},
        )
        return int(count)


def document(row: Sequence[Any]) -> StoredDocument:
    """A :class:`StoredDocument` from a row of :data:`COLUMNS` (SQLite keeps JSON text)."""
    _, document_id, fields, dek_id, revision = row
    if isinstance(fields, str):
        fields = json.loads(fields)
    return StoredDocument(
        id=document_id, fields=dict(fields), dek_id=dek_id, revision=str(revision)
    )
