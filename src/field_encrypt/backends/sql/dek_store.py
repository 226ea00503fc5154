"""The dek_store in the product's SQL database, for both dialects.

One table, ``dek_store``, shared by every product in the database. Rows are addressed by an
integer ``seq`` (SQLite's rowid, PostgreSQL's identity column; never reused): scans page by
``seq`` (keyset pagination) and rewrites go back by ``seq``, so a rewrap walks the table in
storage order instead of hopping through a random text key. ``dek_id`` has its own unique
index for point reads, and ``(product, mek_version)`` an index so counting the DEKs per
version reads only the index. ``bucket`` holds the first four hex digits of the dekId
(:func:`~field_encrypt.backends.sharding.bucket_of`); ``scan(shard=(i, n))`` keeps
``bucket % n = i``.

Writes that replace a wrap are compare-and-swap on ``revision``. How a *batch* goes to the
database is the one place the dialects differ in more than a word: SQLite runs one
``executemany`` inside one ``BEGIN IMMEDIATE`` transaction
(:class:`~field_encrypt.backends.sqlite.dek_store.SqliteDekStore`), PostgreSQL one statement
over binary arrays (:class:`~field_encrypt.backends.postgres.dek_store.PostgresDekStore`).
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Sequence
from typing import Any

from field_encrypt.backends.base import (
    EVERY_ROW,
    DekPage,
    DekRecord,
    NewDek,
    NewWrap,
    ScanFilter,
    WrapPage,
    WrapUpdate,
    dek_record_of_row,
)
from field_encrypt.backends.sharding import bucket_of, check_shard
from field_encrypt.backends.sql.dialect import Dialect, SqlStore
from field_encrypt.errors import AlreadyExistsError, NotFoundError

SCHEMA = """
    CREATE TABLE dek_store (
        seq {serial} PRIMARY KEY,
        dek_id {text} NOT NULL UNIQUE,
        product {text} NOT NULL,
        bucket {int} NOT NULL CHECK (bucket BETWEEN 0 AND 65535),
        mek_name {text} NOT NULL,
        mek_version {text} NOT NULL,
        wrapped {blob} NOT NULL,
        algorithm {text} NOT NULL,
        created_at {timestamp},
        updated_at {timestamp},
        revision {bigint} NOT NULL{revision_default}
    );
    {scan_index}
    CREATE INDEX dek_store_version ON dek_store (product, mek_version)
"""


def migrations(dialect: Dialect) -> tuple[Any, ...]:
    """The dek_store's schema steps in ``dialect``: PostgreSQL scans by a ``(product, seq)``
    index (SQLite walks its rowid)."""
    return (
        dialect.schema(
            "0001_dek_store",
            SCHEMA,
            revision_default={"postgres": " DEFAULT 1"},
            scan_index={
                "postgres": "CREATE INDEX dek_store_product_seq ON dek_store (product, seq);"
            },
        ),
    )


COLUMNS = (
    "seq, dek_id, product, mek_name, mek_version, wrapped, algorithm, "
    "created_at, updated_at, revision"
)
WRAP_COLUMNS = "seq, revision, dek_id, mek_version, wrapped"
"""A :data:`~field_encrypt.backends.base.WrapRow`: the row is found again by ``seq``."""
INSERT = (
    "INSERT INTO dek_store (dek_id, bucket, product, mek_name, mek_version, wrapped, "
    "algorithm, created_at, updated_at, revision) VALUES (:dek_id, :bucket, :product, "
    ":mek_name, :mek_version, :wrapped, :algorithm, {now}, {now}, 1)"
)
CHUNK = 500
"""Ids per ``IN (...)`` list."""


class SqlDekStore(SqlStore):
    """:class:`~field_encrypt.backends.base.DekStore` in the ``dek_store`` table."""

    scope = "product"
    remote = True
    """PostgreSQL's; SQLite's store says ``False``."""

    scan_from = "dek_store"
    """The FROM of a scan (where a dialect needs a planner hint)."""
    product_column = "product"
    """The product column in ``get_many``'s WHERE (likewise)."""

    def __init__(self, dialect: Dialect, *, product: str) -> None:
        self.product = product
        super().__init__(dialect, migrations(dialect))

    def _new_row(self, dek_id: str, mek_name: str, mek_version: str, wrapped: bytes,
                 algorithm: str) -> dict[str, Any]:  # fmt: skip
        return {
            "dek_id": dek_id, "bucket": bucket_of(dek_id), "product": self.product,
            "mek_name": mek_name, "mek_version": mek_version, "wrapped": wrapped,
            "algorithm": algorithm, **self.dialect.now_params(),
        }  # fmt: skip

    def create(
        self, *, dek_id: str, mek_name: str, mek_version: str, wrapped: bytes, algorithm: str
    ) -> DekRecord:
        sql = INSERT.format(now=self.dialect.now) + f" RETURNING {COLUMNS}"
        params = self._new_row(dek_id, mek_name, mek_version, wrapped, algorithm)
        try:
            (row,) = self.dialect.query(sql, params)
        except AlreadyExistsError as exc:
            raise AlreadyExistsError(f"DEK {dek_id} already exists", cause=exc.cause) from None
        return record(row)

    def create_many(self, deks: Sequence[NewDek]) -> None:
        if not deks:
            return
        rows = [
            self._new_row(d.dek_id, d.mek_name, d.mek_version, d.wrapped, d.algorithm) for d in deks
        ]
        try:
            with self.dialect.transaction() as session:  # all rows or none
                session.run_many(INSERT.format(now=self.dialect.now), rows)
        except AlreadyExistsError as exc:
            raise batch_exists(exc) from None

    def get(self, dek_id: str) -> DekRecord:
        rows = self.dialect.query(
            f"SELECT {COLUMNS} FROM dek_store WHERE dek_id = :dek_id AND product = :product",
            {"dek_id": dek_id, "product": self.product},
        )
        if not rows:
            raise NotFoundError(f"DEK {dek_id} not found")
        return record(rows[0])

    def get_many(self, dek_ids: Sequence[str]) -> dict[str, DekRecord]:
        found: dict[str, DekRecord] = {}
        ids = list(dek_ids)
        for start in range(0, len(ids), CHUNK):
            marks, params = in_list(ids[start : start + CHUNK])
            rows = self.dialect.query(
                f"SELECT {COLUMNS} FROM dek_store "
                f"WHERE dek_id IN ({marks}) AND {self.product_column} = :product",
                {**params, "product": self.product},
            )
            found.update((r[1], record(r)) for r in rows)
        return found

    def delete(self, dek_id: str) -> bool:
        return (
            self.dialect.execute(
                "DELETE FROM dek_store WHERE dek_id = :dek_id AND product = :product",
                {"dek_id": dek_id, "product": self.product},
            )
            > 0
        )

    def delete_many(self, dek_ids: Sequence[str]) -> int:
        if not dek_ids:
            return 0
        ids = list(dek_ids)
        deleted = 0
        with self.dialect.transaction() as session:
            for start in range(0, len(ids), CHUNK):
                marks, params = in_list(ids[start : start + CHUNK])
                deleted += session.run(
                    f"DELETE FROM dek_store WHERE product = :product AND dek_id IN ({marks})",
                    {**params, "product": self.product},
                )
        return deleted

    def replace_wraps(self, updates: Sequence[WrapUpdate]) -> list[str]:
        raise NotImplementedError  # the dialect's batch write

    def swap_wraps(
        self, wraps: Sequence[NewWrap], *, mek_version: str, algorithm: str
    ) -> list[str]:
        raise NotImplementedError  # likewise

    def scan(
        self, *, cursor: str | None = None, limit: int = 1000, where: ScanFilter = EVERY_ROW
    ) -> DekPage:
        rows = self._scan(COLUMNS, cursor, limit, where)
        next_cursor = str(rows[-1][0]) if len(rows) == limit else None
        return DekPage(records=[record(row) for row in rows], cursor=next_cursor)

    def scan_wraps(
        self, *, cursor: str | None = None, limit: int = 1000, where: ScanFilter = EVERY_ROW
    ) -> WrapPage:
        rows = self._scan(WRAP_COLUMNS, cursor, limit, where)
        next_cursor = str(rows[-1][0]) if len(rows) == limit else None
        return WrapPage(rows=rows, cursor=next_cursor)  # the driver's tuples, as they come

    def _scan(self, columns: str, cursor: str | None, limit: int, rows: ScanFilter) -> list[Any]:
        """One page of ``columns`` (``seq`` first), in ``seq`` order after ``cursor``."""
        where = ["product = :product", "seq > :after"]
        params: dict[str, Any] = {"product": self.product, "after": int(cursor or 0)}
        if rows.exclude_version is not None:
            where.append("mek_version <> :exclude")
            params["exclude"] = rows.exclude_version
        if rows.only_version is not None:
            where.append("mek_version = :only")
            params["only"] = rows.only_version
        if rows.shard is not None:
            index, count = check_shard(rows.shard)
            if count > 1:
                where.append("bucket % :count = :index")
                params.update(count=count, index=index)
        params["limit"] = limit
        return self.dialect.query(
            f"SELECT {columns} FROM {self.scan_from} "
            f"WHERE {' AND '.join(where)} ORDER BY seq LIMIT :limit",
            params,
        )

    def count_by_version(self) -> dict[str, int]:
        rows = self.dialect.query(
            "SELECT mek_version, COUNT(*) FROM dek_store WHERE product = :product "
            "GROUP BY mek_version",
            {"product": self.product},
        )
        return {version: int(count) for version, count in rows}

    def count_not_on(self, version: str) -> int:
        ((count,),) = self.dialect.query(
            "SELECT COUNT(*) FROM dek_store WHERE product = :product AND mek_version <> :version",
            {"product": self.product, "version": version},
        )
        return int(count)

    def count_under(self, mek_name: str, version: str) -> dict[str, int]:
        params = {"mek_name": mek_name, "version": version}
        rows = self.dialect.query(
            "SELECT product, COUNT(*) FROM dek_store "
            "WHERE mek_name = :mek_name AND mek_version = :version GROUP BY product",
            params,
        )
        counts = Counter({product: int(count) for product, count in rows})
        if self.dialect.has_table("kek_store"):
            rows = self.dialect.query(
                "SELECT d.product, COUNT(*) FROM dek_store d JOIN kek_store k "
                "ON d.mek_version = 'kek:' || k.kek_id "
                "WHERE k.mek_name = :mek_name AND k.mek_version = :version GROUP BY d.product",
                params,
            )
            counts.update({product: int(count) for product, count in rows})
        return dict(counts)

    def active_keks_under(self, mek_name: str, version: str) -> dict[str, int]:
        if not self.dialect.has_table("kek_store"):
            return {}
        rows = self.dialect.query(
            "SELECT product, COUNT(*) FROM kek_store WHERE mek_name = :mek_name "
            "AND mek_version = :version AND active GROUP BY product",
            {"mek_name": mek_name, "version": version},
        )
        return {product: int(count) for product, count in rows}


def in_list(values: Sequence[object]) -> tuple[str, dict[str, object]]:
    """``:v0, :v1, ...`` for an ``IN (...)`` list, and its parameters."""
    params = {f"v{i}": value for i, value in enumerate(values)}
    return ", ".join(f":{name}" for name in params), params


def batch_exists(exc: AlreadyExistsError) -> AlreadyExistsError:
    """What ``create_many`` raises when one DEK of its batch exists already."""
    return AlreadyExistsError(
        "a DEK of the batch already exists (none was created)", cause=exc.cause
    )


_DATETIME = dt.datetime
_FROM_TIMESTAMP = dt.datetime.fromtimestamp
_UTC = dt.UTC


def record(row: Sequence[Any]) -> DekRecord:
    """A :class:`DekRecord` from a row of :data:`COLUMNS` (a scan builds one per row, so
    SQLite's epoch seconds are converted inline, not through :func:`timestamp`)."""
    seq, dek_id, product, mek_name, mek_version, wrapped, algorithm, created, updated, rev = row
    if not isinstance(created, _DATETIME):
        created, updated = _FROM_TIMESTAMP(created, _UTC), _FROM_TIMESTAMP(updated, _UTC)
    return dek_record_of_row(
        dek_id, product, mek_name, mek_version, wrapped, algorithm, created, updated, str(rev), seq
    )
