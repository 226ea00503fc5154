"""The KEK tier's kek_store in the product's PostgreSQL database: the schema.

The logic is :class:`~field_encrypt.backends.sql.kek_store.SqlKekStore`'s.
One active KEK per partition is a partial unique index (``WHERE active``), so two
processes creating a partition's first KEK at once cannot both win.
"""

from __future__ import annotations

from field_encrypt.backends.postgres.db import Migration, PostgresDatabase
from field_encrypt.backends.sql.kek_store import SqlKekStore
from field_encrypt.backends.sql.postgres import PostgresDialect

MIGRATIONS = (
    Migration(
        "0001_kek_store",
        """
        CREATE TABLE kek_store (
            seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            kek_id text NOT NULL UNIQUE,
            product text NOT NULL,
            partition text NOT NULL,
            mek_name text NOT NULL,
            mek_version text NOT NULL,
            wrapped bytea NOT NULL,
            algorithm text NOT NULL,
            active boolean NOT NULL,
            created_at timestamptz NOT NULL DEFAULT clock_timestamp(),
            updated_at timestamptz NOT NULL DEFAULT clock_timestamp(),
            revision bigint NOT NULL DEFAULT 1
        );
        CREATE UNIQUE INDEX kek_store_one_active ON kek_store (product, partition) WHERE active;
        """,
    ),
)


class PostgresKekStore(SqlKekStore):
    """:class:`~field_encrypt.backends.base.KekStore` on a :class:`PostgresDatabase`."""

    def __init__(self, database: PostgresDatabase, *, product: str) -> None:
        super().__init__(PostgresDialect(database), product=product)
        database.migrate(MIGRATIONS)
