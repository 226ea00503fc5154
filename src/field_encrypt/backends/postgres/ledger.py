"""The run ledger in the product's PostgreSQL database (next to its dek_store).

The logic is :class:`~field_encrypt.backends.sql.ledger.SqlRunLedger`'s; here is the schema
(the same tables as SQLite's, with a ``seq`` column for insertion order). Every lease
decision takes a transaction-level advisory lock on the product
(``pg_advisory_xact_lock``), so two workers on two machines never both win a shard or
start two runs. Lease times are the workers' clocks: keep them in sync (NTP) to well under
the lease TTL.
"""

from __future__ import annotations

from field_encrypt.backends.postgres.db import Migration, PostgresDatabase
from field_encrypt.backends.sql.ledger import SqlRunLedger
from field_encrypt.backends.sql.postgres import PostgresDialect

MIGRATIONS = (
    Migration(
        "0001_rotation_ledger",
        """
        CREATE TABLE rotation_runs (
            run_id text PRIMARY KEY,
            product text NOT NULL,
            mode text NOT NULL,
            from_version text,
            to_version text,
            shards integer NOT NULL,
            status text NOT NULL,
            started_at double precision NOT NULL,
            finished_at double precision,
            estimated_total bigint NOT NULL,
            skipped_at_start bigint NOT NULL,
            seq bigint GENERATED ALWAYS AS IDENTITY
        );
        CREATE INDEX rotation_runs_product ON rotation_runs (product, status, started_at);
        CREATE TABLE rotation_shards (
            run_id text NOT NULL REFERENCES rotation_runs (run_id),
            shard integer NOT NULL,
            status text NOT NULL,
            cursor text,
            pending text NOT NULL DEFAULT '[]',
            matched bigint NOT NULL DEFAULT 0,
            changed bigint NOT NULL DEFAULT 0,
            skipped bigint NOT NULL DEFAULT 0,
            failed bigint NOT NULL DEFAULT 0,
            conflicts bigint NOT NULL DEFAULT 0,
            owner text,
            lease_expires_at double precision,
            heartbeat_at double precision,
            PRIMARY KEY (run_id, shard)
        );
        CREATE TABLE rotation_failures (
            run_id text NOT NULL REFERENCES rotation_runs (run_id),
            item text NOT NULL,
            shard integer NOT NULL,
            reason text NOT NULL,
            at double precision NOT NULL,
            PRIMARY KEY (run_id, item)
        );
        CREATE TABLE rotation_backups (
            product text NOT NULL,
            at double precision NOT NULL,
            path text NOT NULL,
            count bigint NOT NULL,
            checksum text NOT NULL
        );
        CREATE INDEX rotation_backups_product ON rotation_backups (product, at);
        """,
    ),
)


class PostgresRunLedger(SqlRunLedger):
    """:class:`~field_encrypt.rotation.ledger.RunLedger` on a :class:`PostgresDatabase`."""

    def __init__(self, database: PostgresDatabase) -> None:
        super().__init__(PostgresDialect(database))
        database.migrate(MIGRATIONS)
