"""The KEK tier's kek_store in the product's SQLite database: the schema.

The logic is :class:`~field_encrypt.backends.sql.kek_store.SqlKekStore`'s.
"""

from __future__ import annotations

from field_encrypt.backends.sql.kek_store import SqlKekStore
from field_encrypt.backends.sql.sqlite import SqliteDialect
from field_encrypt.backends.sqlite.db import Migration, SqliteDatabase

MIGRATIONS = (
    Migration(
        "0001_kek_store",
        """
        CREATE TABLE kek_store (
            seq INTEGER PRIMARY KEY,
            kek_id TEXT NOT NULL UNIQUE,
            product TEXT NOT NULL,
            partition TEXT NOT NULL,
            mek_name TEXT NOT NULL,
            mek_version TEXT NOT NULL,
            wrapped BLOB NOT NULL,
            algorithm TEXT NOT NULL,
            active INTEGER NOT NULL,
            created_at REAL NOT NULL,
            updated_at REAL NOT NULL,
            revision INTEGER NOT NULL
        );
        CREATE INDEX kek_store_active ON kek_store (product, partition, active)
        """,
    ),
)


class SqliteKekStore(SqlKekStore):
    """:class:`~field_encrypt.backends.base.KekStore` on a :class:`SqliteDatabase`."""

    def __init__(self, database: SqliteDatabase, *, product: str) -> None:
        super().__init__(SqliteDialect(database), product=product)
        database.migrate(MIGRATIONS)
