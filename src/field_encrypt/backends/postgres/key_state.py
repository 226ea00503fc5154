"""The key-state epoch in the product's PostgreSQL database: the schema.

The logic is :class:`~field_encrypt.backends.sql.key_state.SqlKeyStateStore`'s.
"""

from __future__ import annotations

from field_encrypt.backends.postgres.db import Migration, PostgresDatabase
from field_encrypt.backends.sql.key_state import SqlKeyStateStore
from field_encrypt.backends.sql.postgres import PostgresDialect

MIGRATIONS = (
    Migration(
        "0001_key_state",
        """
        CREATE TABLE key_state (
            product text PRIMARY KEY,
            epoch bigint NOT NULL,
            changes text NOT NULL
        );
        """,
    ),
)


class PostgresKeyStateStore(SqlKeyStateStore):
    """:class:`~field_encrypt.backends.base.KeyStateStore` on a :class:`PostgresDatabase`."""

    def __init__(self, database: PostgresDatabase, *, product: str) -> None:
        super().__init__(PostgresDialect(database), product=product)
        database.migrate(MIGRATIONS)
