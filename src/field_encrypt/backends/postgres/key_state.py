"""The key-state epoch in the product's PostgreSQL database.

The logic and the schema are :class:`~field_encrypt.backends.sql.key_state.SqlKeyStateStore`'s; what is
PostgreSQL's is :class:`~field_encrypt.backends.sql.postgres.PostgresDialect`.
"""

from __future__ import annotations

from field_encrypt.backends.postgres.db import PostgresDatabase
from field_encrypt.backends.sql.key_state import SqlKeyStateStore
from field_encrypt.backends.sql.postgres import PostgresDialect


class PostgresKeyStateStore(SqlKeyStateStore):
    """:class:`~field_encrypt.backends.base.KeyStateStore` on a :class:`PostgresDatabase`."""

    def __init__(self, database: PostgresDatabase, *, product: str) -> None:
        super().__init__(PostgresDialect(database), product=product)
