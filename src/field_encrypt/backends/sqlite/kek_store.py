"""The KEK tier's kek_store in the product's SQLite database.

The logic and the schema are :class:`~field_encrypt.backends.sql.kek_store.SqlKekStore`'s; what is
SQLite's is :class:`~field_encrypt.backends.sql.sqlite.SqliteDialect`.
"""

from __future__ import annotations

from field_encrypt.backends.sql.kek_store import SqlKekStore
from field_encrypt.backends.sql.sqlite import SqliteDialect
from field_encrypt.backends.sqlite.db import SqliteDatabase


class SqliteKekStore(SqlKekStore):
    """:class:`~field_encrypt.backends.base.KekStore` on a :class:`SqliteDatabase`."""

    def __init__(self, database: SqliteDatabase, *, product: str) -> None:
        super().__init__(SqliteDialect(database), product=product)
