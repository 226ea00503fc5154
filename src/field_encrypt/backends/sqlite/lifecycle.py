"""Version notes and the rotation state in the product's SQLite database.

The logic and the schema are :class:`~field_encrypt.backends.sql.lifecycle.SqlLifecycleStore`'s; what is
SQLite's is :class:`~field_encrypt.backends.sql.sqlite.SqliteDialect`.
"""

from __future__ import annotations

from field_encrypt.backends.sql.lifecycle import SqlLifecycleStore
from field_encrypt.backends.sql.sqlite import SqliteDialect
from field_encrypt.backends.sqlite.db import SqliteDatabase


class SqliteLifecycleStore(SqlLifecycleStore):
    """:class:`~field_encrypt.rotation.lifecycle.LifecycleStore` on a :class:`SqliteDatabase`."""

    def __init__(self, database: SqliteDatabase) -> None:
        super().__init__(SqliteDialect(database))
