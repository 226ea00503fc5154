"""The run ledger in the product's PostgreSQL database.

The logic and the schema are :class:`~field_encrypt.backends.sql.ledger.SqlRunLedger`'s; what is
PostgreSQL's is :class:`~field_encrypt.backends.sql.postgres.PostgresDialect`.
"""

from __future__ import annotations

from field_encrypt.backends.postgres.db import PostgresDatabase
from field_encrypt.backends.sql.ledger import SqlRunLedger
from field_encrypt.backends.sql.postgres import PostgresDialect


class PostgresRunLedger(SqlRunLedger):
    """:class:`~field_encrypt.rotation.ledger.RunLedger` on a :class:`PostgresDatabase`."""

    def __init__(self, database: PostgresDatabase) -> None:
        super().__init__(PostgresDialect(database))
