"""Version notes and the rotation state in the product's PostgreSQL database.

The logic and the schema are :class:`~field_encrypt.backends.sql.lifecycle.SqlLifecycleStore`'s; what is
PostgreSQL's is :class:`~field_encrypt.backends.sql.postgres.PostgresDialect`.
"""

from __future__ import annotations

from field_encrypt.backends.postgres.db import PostgresDatabase
from field_encrypt.backends.sql.lifecycle import SqlLifecycleStore
from field_encrypt.backends.sql.postgres import PostgresDialect


class PostgresLifecycleStore(SqlLifecycleStore):
    """:class:`~field_encrypt.rotation.lifecycle.LifecycleStore` on a :class:`PostgresDatabase`."""

    def __init__(self, database: PostgresDatabase) -> None:
        super().__init__(PostgresDialect(database))
