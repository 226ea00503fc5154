"""The run ledger in the product's SQLite database.

The logic and the schema are :class:`~field_encrypt.backends.sql.ledger.SqlRunLedger`'s; what is
SQLite's is :class:`~field_encrypt.backends.sql.sqlite.SqliteDialect`.
"""

from __future__ import annotations

from field_encrypt.backends.sql.ledger import SqlRunLedger
from field_encrypt.backends.sql.sqlite import SqliteDialect
from field_encrypt.backends.sqlite.db import SqliteDatabase


class SqliteRunLedger(SqlRunLedger):
    """:class:`~field_encrypt.rotation.ledger.RunLedger` on a :class:`SqliteDatabase`."""

    def __init__(self, database: SqliteDatabase) -> None:
        super().__init__(SqliteDialect(database))
