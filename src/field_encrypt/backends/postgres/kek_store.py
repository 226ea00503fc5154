"""The KEK tier's kek_store in the product's PostgreSQL database.

The same table as the SQLite store. One active KEK per partition is a partial unique index
(``WHERE active``): a new KEK retires the partition's active one in the same transaction,
and two processes creating a partition's first KEK at once cannot both win (the loser gets
``AlreadyExistsError`` and reads the winner's). The wrap's compare-and-swap is one
conditional ``UPDATE ... WHERE revision = <read>``.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import text

from field_encrypt.backends.base import KekRecord
from field_encrypt.backends.postgres.db import Migration, PostgresDatabase
from field_encrypt.errors import AlreadyExistsError, NotFoundError

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

_COLUMNS = (
    "kek_id, product, partition, mek_name, mek_version, wrapped, algorithm, active, "
    "created_at, updated_at, revision"
)


class PostgresKekStore:
    """:class:`~field_encrypt.backends.base.KekStore` on a :class:`PostgresDatabase`."""

    def __init__(self, database: PostgresDatabase, *, product: str) -> None:
        self.database = database
        self.product = product
        database.migrate(MIGRATIONS)

    def __repr__(self) -> str:
        return f"PostgresKekStore({self.database!r}, product={self.product!r})"

    def create(
        self, *, kek_id: str, partition: str, mek_name: str, mek_version: str,
        wrapped: bytes, algorithm: str,
    ) -> KekRecord:  # fmt: skip
        params = {
            "kek_id": kek_id,
            "product": self.product,
            "partition": partition,
            "mek_name": mek_name,
            "mek_version": mek_version,
            "wrapped": wrapped,
            "algorithm": algorithm,
        }
        try:
            with self.database.transaction() as conn:
                conn.execute(
                    text(
                        "UPDATE kek_store SET active = false, updated_at = clock_timestamp(), "
                        "revision = revision + 1 "
                        "WHERE product = :product AND partition = :partition AND active"
                    ),
                    params,
                )
                row = conn.execute(
                    text(
                        "INSERT INTO kek_store (kek_id, product, partition, mek_name, "
                        "mek_version, wrapped, algorithm, active) VALUES (:kek_id, :product, "
                        ":partition, :mek_name, :mek_version, :wrapped, :algorithm, true) "
                        f"RETURNING {_COLUMNS}"
                    ),
                    params,
                ).one()
        except AlreadyExistsError as exc:
            raise AlreadyExistsError(
                f"KEK {kek_id} already exists, or another KEK of partition {partition!r} was "
                "created at the same moment",
                cause=exc.cause,
            ) from None
        return _record(row)

    def get(self, kek_id: str) -> KekRecord:
        rows = self._select("kek_id = :kek_id", kek_id=kek_id)
        if not rows:
            raise NotFoundError(f"KEK {kek_id} not found")
        return rows[0]

    def active(self, partition: str = "") -> KekRecord | None:
        rows = self._select("partition = :partition AND active", partition=partition)
        return rows[0] if rows else None

    def all(self) -> list[KekRecord]:
        return self._select("true")

    def replace_wrap(
        self, record: KekRecord, *, mek_version: str, wrapped: bytes, algorithm: str
    ) -> bool:
        rows = self.database.execute(
            text(
                "UPDATE kek_store SET mek_version = :mek_version, wrapped = :wrapped, "
                "algorithm = :algorithm, updated_at = clock_timestamp(), "
                "revision = revision + 1 "
                "WHERE kek_id = :kek_id AND product = :product AND revision = :revision "
                "RETURNING kek_id"
            ),
            {
                "mek_version": mek_version,
                "wrapped": wrapped,
                "algorithm": algorithm,
                "kek_id": record.kek_id,
                "product": self.product,
                "revision": int(record.revision),
            },
        )
        return bool(rows)

    def retire(self, kek_id: str) -> bool:
        rows = self.database.execute(
            text(
                "UPDATE kek_store SET active = false, updated_at = clock_timestamp(), "
                "revision = revision + 1 "
                "WHERE kek_id = :kek_id AND product = :product AND active RETURNING kek_id"
            ),
            {"kek_id": kek_id, "product": self.product},
        )
        return bool(rows)

    def delete(self, kek_id: str) -> bool:
        rows = self.database.execute(
            text(
                "DELETE FROM kek_store WHERE kek_id = :kek_id AND product = :product "
                "RETURNING kek_id"
            ),
            {"kek_id": kek_id, "product": self.product},
        )
        return bool(rows)

    def _select(self, where: str, **params: Any) -> list[KekRecord]:
        rows = self.database.execute(
            text(f"SELECT {_COLUMNS} FROM kek_store WHERE product = :product AND {where} "
                 "ORDER BY seq"),
            {"product": self.product, **params},
        )  # fmt: skip
        return [_record(r) for r in rows]


def _record(row: Any) -> KekRecord:
    (kek_id, product, partition, mek_name, mek_version, wrapped, algorithm, active,
     created, updated, revision) = row  # fmt: skip
    return KekRecord(
        kek_id=kek_id,
        product=product,
        partition=partition,
        mek_name=mek_name,
        mek_version=mek_version,
        wrapped=bytes(wrapped),
        algorithm=algorithm,
        active=bool(active),
        created_at=created,
        updated_at=updated,
        revision=str(revision),
    )
