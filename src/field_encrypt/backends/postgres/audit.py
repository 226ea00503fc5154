"""The audit trail (``actiontrail``) and its outbox in the product's PostgreSQL database.

The logic is :class:`~field_encrypt.backends.sql.audit.SqlAuditTrail`'s; what is PostgreSQL's is
:class:`~field_encrypt.backends.sql.postgres.PostgresDialect` and the schema earlier releases created.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable

from field_encrypt.audit import AuditSink
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


class PostgresAuditTrail(SqlAuditTrail):
    """:class:`~field_encrypt.audit.AuditTrail` on a :class:`PostgresDatabase`."""

    migrations = MIGRATIONS

    def __init__(
        self,
        database: PostgresDatabase,
        *,
        product: str,
        sinks: Iterable[AuditSink] = (),
        clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
    ) -> None:
        super().__init__(PostgresDialect(database), product=product, sinks=sinks, clock=clock)
