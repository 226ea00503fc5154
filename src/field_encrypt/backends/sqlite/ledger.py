"""The run ledger in the product's SQLite database (next to its dek_store).

The logic is :class:`~field_encrypt.backends.sql.ledger.SqlRunLedger`'s; here is the schema.
Every lease decision runs inside ``BEGIN IMMEDIATE``, so two processes on the same file
never both win a shard: the second waits for the first's transaction and then sees its
lease.
"""

from __future__ import annotations

from field_encrypt.backends.sql.ledger import SqlRunLedger
from field_encrypt.backends.sql.sqlite import SqliteDialect
from field_encrypt.backends.sqlite.db import Migration, SqliteDatabase

MIGRATIONS = (
    Migration(
        "0001_rotation_ledger",
        """
        CREATE TABLE rotation_runs (
            run_id TEXT PRIMARY KEY,
            product TEXT NOT NULL,
            mode TEXT NOT NULL,
            from_version TEXT,
            to_version TEXT,
            shards INTEGER NOT NULL,
            status TEXT NOT NULL,
            started_at REAL NOT NULL,
            finished_at REAL,
            estimated_total INTEGER NOT NULL,
            skipped_at_start INTEGER NOT NULL
        );
        CREATE INDEX rotation_runs_product ON rotation_runs (product, status, started_at);
        CREATE TABLE rotation_shards (
            run_id TEXT NOT NULL REFERENCES rotation_runs (run_id),
            shard INTEGER NOT NULL,
            status TEXT NOT NULL,
            cursor TEXT,
            pending TEXT NOT NULL DEFAULT '[]',
            matched INTEGER NOT NULL DEFAULT 0,
            changed INTEGER NOT NULL DEFAULT 0,
            skipped INTEGER NOT NULL DEFAULT 0,
            failed INTEGER NOT NULL DEFAULT 0,
            conflicts INTEGER NOT NULL DEFAULT 0,
            owner TEXT,
            lease_expires_at REAL,
            heartbeat_at REAL,
            PRIMARY KEY (run_id, shard)
        );
        CREATE TABLE rotation_failures (
            run_id TEXT NOT NULL REFERENCES rotation_runs (run_id),
            item TEXT NOT NULL,
            shard INTEGER NOT NULL,
            reason TEXT NOT NULL,
            at REAL NOT NULL,
            PRIMARY KEY (run_id, item)
        );
        CREATE TABLE rotation_backups (
            product TEXT NOT NULL,
            at REAL NOT NULL,
            path TEXT NOT NULL,
            count INTEGER NOT NULL,
            checksum TEXT NOT NULL
        )
        """,
    ),
)


class SqliteRunLedger(SqlRunLedger):
    """:class:`~field_encrypt.rotation.ledger.RunLedger` on a :class:`SqliteDatabase`."""

    def __init__(self, database: SqliteDatabase) -> None:
        super().__init__(SqliteDialect(database))
        database.migrate(MIGRATIONS)
