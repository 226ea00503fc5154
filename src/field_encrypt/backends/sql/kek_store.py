"""The KEK tier's kek_store in the product's SQL database, for both dialects.

A KEK row is to the MEK what a DEK row is to a KEK: it holds only the wrapped key. A
product has one active KEK per partition ("" when it does not partition): a new KEK retires
the partition's active one in the same transaction. Where two processes create a
partition's first KEK at once (PostgreSQL's partial unique index ``WHERE active``), the
loser gets ``AlreadyExistsError`` and reads the winner's. The wrap's compare-and-swap is one
conditional ``UPDATE ... WHERE revision = <read>``. Retired KEKs stay until no DEK refers
to them; deleting a KEK crypto-shreds every DEK it wraps.
"""

from __future__ import annotations

from typing import Any

from field_encrypt.backends.base import KekRecord
from field_encrypt.backends.sql.dialect import Dialect, SqlStore, timestamp
from field_encrypt.errors import AlreadyExistsError, NotFoundError

SCHEMA = """
    CREATE TABLE kek_store (
        seq {serial} PRIMARY KEY,
        kek_id {text} NOT NULL UNIQUE,
        product {text} NOT NULL,
        partition {text} NOT NULL,
        mek_name {text} NOT NULL,
        mek_version {text} NOT NULL,
        wrapped {blob} NOT NULL,
        algorithm {text} NOT NULL,
        active {bool} NOT NULL,
        created_at {timestamp},
        updated_at {timestamp},
        revision {bigint} NOT NULL{revision_default}
    );
    {active_index}
"""


def migrations(dialect: Dialect) -> tuple[Any, ...]:
    """The kek_store's schema steps in ``dialect``: PostgreSQL keeps one active KEK per
    partition with a partial unique index (SQLite's ``BEGIN IMMEDIATE`` serialises)."""
    return (
        dialect.schema(
            "0001_kek_store",
            SCHEMA,
            revision_default={"postgres": " DEFAULT 1"},
            active_index={
                "sqlite": "CREATE INDEX kek_store_active ON kek_store (product, partition, active)",
                "postgres": "CREATE UNIQUE INDEX kek_store_one_active "
                "ON kek_store (product, partition) WHERE active",
            },
        ),
    )


COLUMNS = (
    "kek_id, product, partition, mek_name, mek_version, wrapped, algorithm, active, "
    "created_at, updated_at, revision"
)


class SqlKekStore(SqlStore):
    """:class:`~field_encrypt.backends.base.KekStore` in the ``kek_store`` table."""

    scope = "product"

    def __init__(self, dialect: Dialect, *, product: str) -> None:
        self.product = product
        super().__init__(dialect, migrations(dialect))

    def create(
        self, *, kek_id: str, partition: str, mek_name: str, mek_version: str,
        wrapped: bytes, algorithm: str,
    ) -> KekRecord:  # fmt: skip
        now = self.dialect.now
        params = {
            "kek_id": kek_id,
            "product": self.product,
            "partition": partition,
            "mek_name": mek_name,
            "mek_version": mek_version,
            "wrapped": wrapped,
            "algorithm": algorithm,
            **self.dialect.now_params(),
        }
        try:
            with self.dialect.transaction() as tx:
                if tx.first("SELECT 1 FROM kek_store WHERE kek_id = :kek_id", params):
                    raise AlreadyExistsError(f"KEK {kek_id} already exists")
                tx.run(
                    f"UPDATE kek_store SET active = false, updated_at = {now}, "
                    "revision = revision + 1 "
                    "WHERE product = :product AND partition = :partition AND active",
                    params,
                )
                tx.run(
                    f"INSERT INTO kek_store ({COLUMNS}) VALUES (:kek_id, :product, :partition, "
                    f":mek_name, :mek_version, :wrapped, :algorithm, true, {now}, {now}, 1)",
                    params,
                )
                row = tx.first(f"SELECT {COLUMNS} FROM kek_store WHERE kek_id = :kek_id", params)
        except AlreadyExistsError as exc:
            if exc.cause is None:
                raise
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
        changed = self.dialect.execute(
            "UPDATE kek_store SET mek_version = :mek_version, wrapped = :wrapped, "
            f"algorithm = :algorithm, updated_at = {self.dialect.now}, revision = revision + 1 "
            "WHERE kek_id = :kek_id AND product = :product AND revision = :revision",
            {
                "mek_version": mek_version,
                "wrapped": wrapped,
                "algorithm": algorithm,
                "kek_id": record.kek_id,
                "product": self.product,
                "revision": int(record.revision),
                **self.dialect.now_params(),
            },
        )
        return changed == 1

    def retire(self, kek_id: str) -> bool:
        changed = self.dialect.execute(
            f"UPDATE kek_store SET active = false, updated_at = {self.dialect.now}, "
            "revision = revision + 1 WHERE kek_id = :kek_id AND product = :product AND active",
            {"kek_id": kek_id, "product": self.product, **self.dialect.now_params()},
        )
        return changed == 1

    def delete(self, kek_id: str) -> bool:
        deleted = self.dialect.execute(
            "DELETE FROM kek_store WHERE kek_id = :kek_id AND product = :product",
            {"kek_id": kek_id, "product": self.product},
        )
        return deleted > 0

    def _select(self, where: str, **params: Any) -> list[KekRecord]:
        rows = self.dialect.query(
            f"SELECT {COLUMNS} FROM kek_store WHERE product = :product AND {where} ORDER BY seq",
            {"product": self.product, **params},
        )
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
        created_at=timestamp(created),
        updated_at=timestamp(updated),
        revision=str(revision),
    )
