"""The key-state epoch in the product's SQLite database: the schema.

The logic is :class:`~field_encrypt.backends.sql.key_state.SqlKeyStateStore`'s.
"""

from __future__ import annotations

from field_encrypt.backends.sql.key_state import SqlKeyStateStore
from field_encrypt.backends.sql.sqlite import SqliteDialect
from field_encrypt.backends.sqlite.db import Migration, SqliteDatabase

MIGRATIONS = (
    Migration(
        "0001_key_state",
        """
        CREATE TABLE key_state (
            product TEXT PRIMARY KEY,
            epoch INTEGER NOT NULL,
            changes TEXT NOT NULL
        )
        """,
    ),
)


class SqliteKeyStateStore(SqlKeyStateStore):
    """:class:`~field_encrypt.backends.base.KeyStateStore` on a :class:`SqliteDatabase`."""

    def __init__(self, database: SqliteDatabase, *, product: str) -> None:
        super().__init__(SqliteDialect(database), product=product)
        database.migrate(MIGRATIONS)
