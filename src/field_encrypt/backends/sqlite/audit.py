"""The audit trail (``actiontrail``) and its outbox in the product's SQLite database.

The logic is :class:`~field_encrypt.backends.sql.audit.SqlAuditTrail`'s; what is SQLite's is
:class:`~field_encrypt.backends.sql.sqlite.SqliteDialect` and the schema earlier releases created.
"""

from __future__ import annotations

from field_encrypt.backends.sql.audit import SqlAuditTrail
from field_encrypt.backends.sql.sqlite import SqliteDialect
from field_encrypt.backends.sqlite.db import Migration, SqliteDatabase

MIGRATIONS = (
    Migration(
        "0001_actiontrail",
        """
        CREATE TABLE actiontrail (
            seq INTEGER PRIMARY KEY,
            product TEXT NOT NULL,
            id TEXT NOT NULL UNIQUE,
            type TEXT NOT NULL,
            subject TEXT NOT NULL,
            time TEXT NOT NULL,
            event TEXT NOT NULL,
            hash TEXT NOT NULL
        );
        CREATE INDEX actiontrail_type ON actiontrail (product, type)
        """,
    ),
    Migration(
        "0002_actiontrail_delivery",
        """
        CREATE TABLE actiontrail_delivery (
            product TEXT NOT NULL,
            destination TEXT NOT NULL,
            seq INTEGER NOT NULL,
            hash TEXT NOT NULL,
            updated_at TEXT NOT NULL,
            PRIMARY KEY (product, destination)
        )
        """,
    ),
)


class SqliteAuditTrail(SqlAuditTrail[SqliteDatabase]):
    """:class:`~field_encrypt.audit.AuditTrail` on a :class:`SqliteDatabase`."""

    migrations = MIGRATIONS

    def _dialect(self, database: SqliteDatabase) -> SqliteDialect:
        return SqliteDialect(database)
