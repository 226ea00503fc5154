"""The SQLite dek_store, the embedded default.

Rows are addressed by an integer ``seq`` (the rowid): scans page by ``seq`` and rewrites
go back by ``seq``, so a rewrap walks the table in storage order instead of hopping
through a random text key. ``dek_id`` has its own unique index for point reads, and
``(product, mek_version)`` an index so counting the DEKs per version reads only the index.
"""

from __future__ import annotations

import datetime as dt
import time
from collections import Counter
from collections.abc import Sequence
from typing import Any

from field_encrypt.backends.base import DekPage, DekRecord, WrapUpdate, dek_record_of_row
from field_encrypt.backends.sqlite.db import Migration, SqliteDatabase
from field_encrypt.errors import AlreadyExistsError, NotFoundError

MIGRATIONS = (
    Migration(
        "0001_dek_store",
        """
        CREATE TABLE dek_store (
            seq INTEGER PRIMARY KEY,
            dek_id TEXT NOT NULL UNIQUE,
            bucket INTEGER NOT NULL,
            product TEXT NOT NULL,
            mek_name TEXT NOT NULL,
            mek_version TEXT NOT NULL,
            wrapped BLOB NOT NULL,
            algorithm TEXT NOT NULL,
            created_at REAL NOT NULL,
            updated_at REAL NOT NULL,
            revision INTEGER NOT NULL
        );
        CREATE INDEX dek_store_version ON dek_store (product, mek_version)
        """,
    ),
)

_COLUMNS = (
    "seq, dek_id, product, mek_name, mek_version, wrapped, algorithm, "
    "created_at, updated_at, revision"
)


def bucket_of(dek_id: str) -> int:
    """A number in 0..65535 from the dekId's first hex digits, for sharding scans."""
    return int(dek_id[:4], 16)


class SqliteDekStore:
    """A product's wrapped DEKs in a SQLite table."""

    def __init__(self, database: SqliteDatabase, *, product: str) -> None:
        self.database = database
        self.product = product
        database.migrate(MIGRATIONS)

    def __repr__(self) -> str:
        return f"SqliteDekStore({self.database.path!r}, product={self.product!r})"

    def create(
        self, *, dek_id: str, mek_name: str, mek_version: str, wrapped: bytes, algorithm: str
    ) -> DekRecord:
        now = time.time()
        try:
            cur = self.database.execute(
                "INSERT INTO dek_store (dek_id, bucket, product, mek_name, mek_version, "
                "wrapped, algorithm, created_at, updated_at, revision) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 1)",
                (
                    dek_id,
                    bucket_of(dek_id),
                    self.product,
                    mek_name,
                    mek_version,
                    wrapped,
                    algorithm,
                    now,
                    now,
                ),
            )
        except AlreadyExistsError as exc:
            raise AlreadyExistsError(f"DEK {dek_id} already exists", cause=exc.cause) from None
        return DekRecord(
            dek_id=dek_id,
            product=self.product,
            mek_name=mek_name,
            mek_version=mek_version,
            wrapped=wrapped,
            algorithm=algorithm,
            created_at=_time(now),
            updated_at=_time(now),
            revision="1",
            row=cur.lastrowid,
        )

    def get(self, dek_id: str) -> DekRecord:
        rows = self.database.query(
            f"SELECT {_COLUMNS} FROM dek_store WHERE dek_id = ? AND product = ?",
            (dek_id, self.product),
        )
        if not rows:
            raise NotFoundError(f"DEK {dek_id} not found")
        return _record(rows[0])

    def get_many(self, dek_ids: Sequence[str]) -> dict[str, DekRecord]:
        found: dict[str, DekRecord] = {}
        ids = list(dek_ids)
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            marks = ",".join("?" * len(chunk))
            sql = f"SELECT {_COLUMNS} FROM dek_store WHERE product = ? AND dek_id IN ({marks})"
            params = (self.product, *chunk)
            rows = self.database.query(sql, params)
            found.update((r[1], _record(r)) for r in rows)
        return found

    def delete(self, dek_id: str) -> bool:
        cur = self.database.execute(
            "DELETE FROM dek_store WHERE dek_id = ? AND product = ?", (dek_id, self.product)
        )
        return cur.rowcount > 0

    def replace_wraps(self, updates: Sequence[WrapUpdate]) -> list[str]:
        if not updates:
            return []
        now = time.time()
        params = [
            (
                u.mek_version,
                u.wrapped,
                u.algorithm,
                now,
                u.record.row,
                int(u.record.revision),
                u.record.dek_id,
            )
            for u in updates
        ]
        with self.database.transaction() as tx:
            before = tx.total_changes
            tx.executemany(
                "UPDATE dek_store SET mek_version = ?, wrapped = ?, algorithm = ?, "
                "updated_at = ?, revision = revision + 1 "
                "WHERE seq = ? AND revision = ? AND dek_id = ?",
                params,
            )
            if tx.total_changes - before == len(updates):
                return []
            # Some rows moved on since they were read. Inside this write transaction, a row
            # we updated holds our new wrap (fresh nonce: nobody else can have written it).
            current: dict[object, bytes] = {}
            for start in range(0, len(updates), 500):
                seqs = [u.record.row for u in updates[start : start + 500]]
                marks = ",".join("?" * len(seqs))
                current.update(
                    tx.execute(
                        f"SELECT seq, wrapped FROM dek_store WHERE seq IN ({marks})", seqs
                    ).fetchall()
                )
        return [u.record.dek_id for u in updates if current.get(u.record.row) != u.wrapped]

    def scan(
        self,
        *,
        cursor: str | None = None,
        limit: int = 1000,
        exclude_version: str | None = None,
        only_version: str | None = None,
        shard: tuple[int, int] | None = None,
    ) -> DekPage:
        where = ["product = ?", "seq > ?"]
        params: list[object] = [self.product, int(cursor) if cursor else 0]
        if exclude_version is not None:
            where.append("mek_version != ?")
            params.append(exclude_version)
        if only_version is not None:
            where.append("mek_version = ?")
            params.append(only_version)
        if shard is not None:
            index, count = shard
            where.append("bucket % ? = ?")
            params += [count, index]
        params.append(limit)
        # NOT INDEXED: walk by seq. With the (product, mek_version) index the planner
        # would collect every matching row and sort it again for each page.
        sql = (
            f"SELECT {_COLUMNS} FROM dek_store NOT INDEXED "
            f"WHERE {' AND '.join(where)} ORDER BY seq LIMIT ?"
        )
        rows = self.database.query(sql, params)
        records = [_record(r) for r in rows]
        next_cursor = str(rows[-1][0]) if len(rows) == limit else None
        return DekPage(records=records, cursor=next_cursor)

    def count_by_version(self) -> dict[str, int]:
        rows = self.database.query(
            "SELECT mek_version, COUNT(*) FROM dek_store WHERE product = ? GROUP BY mek_version",
            (self.product,),
        )
        return {version: count for version, count in rows}

    def count_not_on(self, version: str) -> int:
        ((count,),) = self.database.query(
            "SELECT COUNT(*) FROM dek_store WHERE product = ? AND mek_version != ?",
            (self.product, version),
        )
        return int(count)

    def count_under(self, mek_name: str, version: str) -> dict[str, int]:
        rows = self.database.query(
            "SELECT product, COUNT(*) FROM dek_store WHERE mek_name = ? AND mek_version = ? "
            "GROUP BY product",
            (mek_name, version),
        )
        counts = Counter({product: int(count) for product, count in rows})
        if self.database.query("SELECT 1 FROM sqlite_master WHERE name = 'kek_store'"):
            rows = self.database.query(
                "SELECT d.product, COUNT(*) FROM dek_store d JOIN kek_store k "
                "ON d.mek_version = 'kek:' || k.kek_id "
                "WHERE k.mek_name = ? AND k.mek_version = ? GROUP BY d.product",
                (mek_name, version),
            )
            counts.update({product: int(count) for product, count in rows})
        return dict(counts)


def _time(seconds: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(seconds, dt.UTC)


_UTC = dt.UTC
_from_timestamp = dt.datetime.fromtimestamp


def _record(row: Any) -> DekRecord:
    seq, dek_id, product, mek_name, mek_version, wrapped, algorithm, created, updated, rev = row
    return dek_record_of_row(
        dek_id,
        product,
        mek_name,
        mek_version,
        wrapped,  # sqlite3 returns BLOBs as bytes
        algorithm,
        _from_timestamp(created, _UTC),
        _from_timestamp(updated, _UTC),
        str(rev),
        seq,
    )
