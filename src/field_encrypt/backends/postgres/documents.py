"""A generic PostgreSQL DocumentStore: JSON documents in one ``documents`` table.

The logic and the schema are :class:`~field_encrypt.backends.sql.documents.SqlDocumentStore`'s;
what is PostgreSQL's is :class:`~field_encrypt.backends.sql.postgres.PostgresDialect` and the
batch write: a page of writes in one statement (as the dek_store's batched rewrap), ``unnest``
of parallel arrays joined on (collection, id, revision) for the compare-and-swap; the ids it
returns won.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from field_encrypt.backends.postgres.db import PostgresDatabase
from field_encrypt.backends.sql.documents import SqlDocumentStore
from field_encrypt.backends.sql.postgres import PostgresDialect
from field_encrypt.documents import DocumentWrite

_REPLACE_MANY = """
    UPDATE documents AS d
    SET fields = u.fields::jsonb, dek_id = u.dek_id, revision = d.revision + 1
    FROM unnest(%(ids)b::text[], %(revisions)b::bigint[], %(fields)b::text[],
                %(dek_ids)b::text[]) AS u(id, revision, fields, dek_id)
    WHERE d.collection = %(collection)s AND d.id = u.id AND d.revision = u.revision
    RETURNING d.id
"""


class PostgresDocumentStore(SqlDocumentStore):
    """One collection of JSON documents in the product's PostgreSQL database."""

    database: PostgresDatabase

    def __init__(self, database: PostgresDatabase, *, collection: str) -> None:
        super().__init__(PostgresDialect(database), collection=collection)

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
