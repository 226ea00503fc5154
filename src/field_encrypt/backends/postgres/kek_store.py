"""The KEK tier's kek_store in the product's PostgreSQL database.

The logic and the schema are :class:`~field_encrypt.backends.sql.kek_store.SqlKekStore`'s; what is
PostgreSQL's is :class:`~field_encrypt.backends.sql.postgres.PostgresDialect`.
"""

from __future__ import annotations

from field_encrypt.backends.postgres.db import PostgresDatabase
from field_encrypt.backends.sql.kek_store import SqlKekStore
from field_encrypt.backends.sql.postgres import PostgresDialect


class PostgresKekStore(SqlKekStore):
    """:class:`~field_encrypt.backends.base.KekStore` on a :class:`PostgresDatabase`."""

    def __init__(self, database: PostgresDatabase, *, product: str) -> None:
        super().__init__(PostgresDialect(database), product=product)
