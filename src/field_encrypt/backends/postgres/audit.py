"""The audit trail (``actiontrail``) and its outbox in the product's PostgreSQL database.

The logic is :class:`~field_encrypt.backends.sql.audit.SqlAuditTrail`'s; what is PostgreSQL's is
:class:`~field_encrypt.backends.sql.postgres.PostgresDialect` and the schema earlier releases created.
"""

from __future__ import annotations

from field_encrypt.backends.postgres.db import Migration, PostgresDatabase
from field_encrypt.backends.sql.audit import SqlAuditTrail
from field_encrypt.backends.sql.postgres import PostgresDialect

MIGRATIONS = (
    Migration(
        "0001_actiontrail",
        """
        CREATE TABLE actiontrail (
            product text NOT NULL,
            seq bigint NOT NULL,
            id text NOT NULL UNIQUE,
            type text NOT NULL,
            subject text NOT NULL,
            time timestamptz NOT NULL,
            event text NOT NULL,
            hash text NOT NULL,
            PRIMARY KEY (product, seq)
        );
        CREATE INDEX actiontrail_type ON actiontrail (product, type, seq);
        CREATE INDEX actiontrail_subject ON actiontrail (product, subject, seq);
        """,
    ),
    Migration(
        "0002_actiontrail_delivery",
        """
        CREATE TABLE actiontrail_delivery (
            product text NOT NULL,
            destination text NOT NULL,
            seq bigint NOT NULL,
            hash text NOT NULL,
            updated_at timestamptz NOT NULL,
            PRIMARY KEY (product, destination)
        );
        """,
    ),
)


class PostgresAuditTrail(SqlAuditTrail[PostgresDatabase]):
    """:class:`~field_encrypt.audit.AuditTrail` on a :class:`PostgresDatabase`."""

    migrations = MIGRATIONS

    def _dialect(self, database: PostgresDatabase) -> PostgresDialect:
        return PostgresDialect(database)
