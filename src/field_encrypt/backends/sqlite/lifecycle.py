"""Version notes and the rotation state in the product's SQLite database: the schema.

The logic is :class:`~field_encrypt.backends.sql.lifecycle.SqlLifecycleStore`'s.
"""

from __future__ import annotations

from field_encrypt.backends.sql.lifecycle import SqlLifecycleStore
from field_encrypt.backends.sql.sqlite import SqliteDialect
from field_encrypt.backends.sqlite.db import Migration, SqliteDatabase

MIGRATIONS = (
    Migration(
        "0001_key_lifecycle",
        """
        CREATE TABLE mek_version_notes (
            product TEXT NOT NULL,
            version TEXT NOT NULL,
            note TEXT NOT NULL,
            PRIMARY KEY (product, version)
        );
        CREATE TABLE rotation_state (
            product TEXT PRIMARY KEY,
            state TEXT NOT NULL,
            revision INTEGER NOT NULL
        )
        """,
    ),
)


class SqliteLifecycleStore(SqlLifecycleStore):
    """:class:`~field_encrypt.rotation.lifecycle.LifecycleStore` on a :class:`SqliteDatabase`."""

    def __init__(self, database: SqliteDatabase) -> None:
        super().__init__(SqliteDialect(database))
        database.migrate(MIGRATIONS)
