"""Version notes and the rotation state in the product's PostgreSQL database: the schema.

The logic is :class:`~field_encrypt.backends.sql.lifecycle.SqlLifecycleStore`'s.
"""

from __future__ import annotations

from field_encrypt.backends.postgres.db import Migration, PostgresDatabase
from field_encrypt.backends.sql.lifecycle import SqlLifecycleStore
from field_encrypt.backends.sql.postgres import PostgresDialect

MIGRATIONS = (
    Migration(
        "0001_key_lifecycle",
        """
        CREATE TABLE mek_version_notes (
            product text NOT NULL,
            version text NOT NULL,
            note text NOT NULL,
            PRIMARY KEY (product, version)
        );
        CREATE TABLE rotation_state (
            product text PRIMARY KEY,
            state text NOT NULL,
            revision bigint NOT NULL
        );
        """,
    ),
)


class PostgresLifecycleStore(SqlLifecycleStore):
    """:class:`~field_encrypt.rotation.lifecycle.LifecycleStore` on a :class:`PostgresDatabase`."""

    def __init__(self, database: PostgresDatabase) -> None:
        super().__init__(PostgresDialect(database))
        database.migrate(MIGRATIONS)
