"""A generic SQLite DocumentStore: JSON documents in one table, keyed by collection and id.

The logic and the schema are :class:`~field_encrypt.backends.sql.documents.SqlDocumentStore`'s;
what is SQLite's is :class:`~field_encrypt.backends.sql.sqlite.SqliteDialect`, a planner hint,
and the batch write's fast path on the stdlib driver (one ``executemany``; row by row only
when something lost).
"""

from __future__ import annotations

from collections.abc import Sequence

from field_encrypt.backends.sql.documents import SqlDocumentStore
from field_encrypt.backends.sql.sqlite import SqliteDialect
from field_encrypt.backends.sqlite.db import SqliteDatabase
from field_encrypt.documents import DocumentWrite


class SqliteDocumentStore(SqlDocumentStore):
    """One collection of JSON documents in the product's SQLite file."""

    # NOT INDEXED: walk by seq (the rowid). With the (collection, id) index the planner
    # would read every document of the collection after the cursor and sort them again
    # for each page: a whole scan was quadratic in the collection's size.
    scan_from = "documents NOT INDEXED"

    database: SqliteDatabase

    def __init__(self, database: SqliteDatabase, *, collection: str) -> None:
        super().__init__(SqliteDialect(database), collection=collection)

    def replace_many(self, writes: Sequence[DocumentWrite]) -> list[str]:
        if not writes:
            return []
        params = [self._write(w.document, w.fields, w.dek_id) for w in writes]
        try:
            with self.database.transaction() as tx:
                before = tx.total_changes
                tx.executemany(self.replace_sql, params)
                if tx.total_changes - before != len(params):
                    raise _SomeLost()  # roll back, then write them one by one
            return []
        except _SomeLost:
            return super().replace_many(writes)


class _SomeLost(Exception):
    """Internal: a batched write lost somewhere (rolled back, written again row by row)."""
