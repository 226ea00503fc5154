"""The SQLite kek_store: KEKs of the intermediate tier, each wrapped under a MEK version.

A KEK row is to the MEK what a DEK row is to a KEK: it holds only the wrapped key. A
product has one active KEK per partition ("" when it does not partition); retired KEKs
stay until no DEK refers to them. Deleting a KEK crypto-shreds every DEK it wraps.
"""

from __future__ import annotations

import datetime as dt
import time
from typing import Any

from field_encrypt.backends.base import KekRecord
from field_encrypt.backends.sqlite.db import Migration, SqliteDatabase
from field_encrypt.errors import AlreadyExistsError, NotFoundError

MIGRATIONS = (
    Migration(
        "0001_kek_store",
        """
        CREATE TABLE kek_store (
            seq INTEGER PRIMARY KEY,
            kek_id TEXT NOT NULL UNIQUE,
            product TEXT NOT NULL,
            partition TEXT NOT NULL,
            mek_name TEXT NOT NULL,
            mek_version TEXT NOT NULL,
            wrapped BLOB NOT NULL,
            algorithm TEXT NOT NULL,
            active INTEGER NOT NULL,
            created_at REAL NOT NULL,
            updated_at REAL NOT NULL,
            revision INTEGER NOT NULL
        );
        CREATE INDEX kek_store_active ON kek_store (product, partition, active)
        """,
    ),
)

_COLUMNS = (
    "kek_id, product, partition, mek_name, mek_version, wrapped, algorithm, active, "
    "created_at, updated_at, revision"
)


class SqliteKekStore:
    """KEKs in the product's SQLite file."""

    def __init__(self, database: SqliteDatabase, *, product: str) -> None:
        self.database = database
        self.product = product
        database.migrate(MIGRATIONS)

    def __repr__(self) -> str:
        return f"SqliteKekStore({self.database.path!r}, product={self.product!r})"

    def create(
        self, *, kek_id: str, partition: str, mek_name: str, mek_version: str,
        wrapped: bytes, algorithm: str,
    ) -> KekRecord:  # fmt: skip
        now = time.time()
        with self.database.transaction() as tx:
            if tx.execute("SELECT 1 FROM kek_store WHERE kek_id = ?", (kek_id,)).fetchone():
                raise AlreadyExistsError(f"KEK {kek_id} already exists")
            tx.execute(
                "UPDATE kek_store SET active = 0, updated_at = ?, revision = revision + 1 "
                "WHERE product = ? AND partition = ? AND active = 1",
                (now, self.product, partition),
            )
            tx.execute(
                f"INSERT INTO kek_store ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, 1, ?, ?, 1)",
                (kek_id, self.product, partition, mek_name, mek_version, wrapped, algorithm,
                 now, now),
            )  # fmt: skip
        return self.get(kek_id)

    def get(self, kek_id: str) -> KekRecord:
        rows = self.database.query(
            f"SELECT {_COLUMNS} FROM kek_store WHERE kek_id = ? AND product = ?",
            (kek_id, self.product),
        )
        if not rows:
            raise NotFoundError(f"KEK {kek_id} not found")
        return _record(rows[0])

    def active(self, partition: str = "") -> KekRecord | None:
        rows = self.database.query(
            f"SELECT {_COLUMNS} FROM kek_store WHERE product = ? AND partition = ? AND active = 1 "
            "ORDER BY seq LIMIT 1",
            (self.product, partition),
        )
        return _record(rows[0]) if rows else None

    def all(self) -> list[KekRecord]:
        rows = self.database.query(
            f"SELECT {_COLUMNS} FROM kek_store WHERE product = ? ORDER BY seq", (self.product,)
        )
        return [_record(r) for r in rows]

    def replace_wrap(
        self, record: KekRecord, *, mek_version: str, wrapped: bytes, algorithm: str
    ) -> bool:
        cur = self.database.execute(
            "UPDATE kek_store SET mek_version = ?, wrapped = ?, algorithm = ?, updated_at = ?, "
            "revision = revision + 1 WHERE kek_id = ? AND revision = ?",
            (mek_version, wrapped, algorithm, time.time(), record.kek_id, int(record.revision)),
        )
        return cur.rowcount == 1

    def retire(self, kek_id: str) -> bool:
        cur = self.database.execute(
            "UPDATE kek_store SET active = 0, updated_at = ?, revision = revision + 1 "
            "WHERE kek_id = ? AND product = ? AND active = 1",
            (time.time(), kek_id, self.product),
        )
        return cur.rowcount == 1

    def delete(self, kek_id: str) -> bool:
        cur = self.database.execute(
            "DELETE FROM kek_store WHERE kek_id = ? AND product = ?", (kek_id, self.product)
        )
        return cur.rowcount > 0


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
        created_at=dt.datetime.fromtimestamp(created, dt.UTC),
        updated_at=dt.datetime.fromtimestamp(updated, dt.UTC),
        revision=str(revision),
    )
