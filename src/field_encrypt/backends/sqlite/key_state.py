"""The key-state epoch in the product's SQLite database.

The logic and the schema are :class:`~field_encrypt.backends.sql.key_state.SqlKeyStateStore`'s; what is
SQLite's is :class:`~field_encrypt.backends.sql.sqlite.SqliteDialect`.
"""

from __future__ import annotations

from field_encrypt.backends.sql.key_state import SqlKeyStateStore
from field_encrypt.backends.sql.sqlite import SqliteDialect
from field_encrypt.backends.sqlite.db import SqliteDatabase


class SqliteKeyStateStore(SqlKeyStateStore):
    """:class:`~field_encrypt.backends.base.KeyStateStore` on a :class:`SqliteDatabase`."""

    def __init__(self, database: SqliteDatabase, *, product: str) -> None:
        super().__init__(SqliteDialect(database), product=product)
