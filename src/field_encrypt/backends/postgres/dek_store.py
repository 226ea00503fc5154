"""The PostgreSQL dek_store.

One table, ``dek_store``, shared by every product in the database. Rows are addressed by
``seq`` (an identity column, the primary key): scans page by ``seq`` (keyset pagination) and a
batch of new wraps goes back by ``seq`` in one statement,
``UPDATE ... FROM unnest(...) ... WHERE revision = <read revision> RETURNING dek_id``: the
rows it returns won, every other one lost its compare-and-swap (changed or deleted meanwhile,
and an UPDATE never inserts, so a deleted DEK stays deleted). ``bench/rewrap_postgres.py``
compares this with ``executemany`` and with ``COPY`` into a temporary table.

Indexes: ``dek_id`` unique (point reads), ``(product, seq)`` (scans), ``(product,
mek_version)`` (the runbook's "how many DEKs are not on version V" count, and the per-version
counts, read from the index). ``bucket`` holds the first four hex digits of the dekId
(:func:`~field_encrypt.backends.sharding.bucket_of`); ``scan(shard=(i, n))`` keeps
``bucket % n = i``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Integer,
    LargeBinary,
    MetaData,
    Table,
    Text,
    func,
    select,
)

from field_encrypt.backends.base import DekPage, DekRecord, WrapUpdate, dek_record_of_row
from field_encrypt.backends.postgres.db import Migration, PostgresDatabase
from field_encrypt.backends.sharding import bucket_of, check_shard
from field_encrypt.errors import AlreadyExistsError, NotFoundError

MIGRATIONS = (
    Migration(
        "0001_dek_store",
        """
        CREATE TABLE dek_store (
            seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            dek_id text NOT NULL UNIQUE,
            product text NOT NULL,
            bucket integer NOT NULL CHECK (bucket BETWEEN 0 AND 65535),
            mek_name text NOT NULL,
            mek_version text NOT NULL,
            wrapped bytea NOT NULL,
            algorithm text NOT NULL,
            created_at timestamptz NOT NULL DEFAULT clock_timestamp(),
            updated_at timestamptz NOT NULL DEFAULT clock_timestamp(),
            revision bigint NOT NULL DEFAULT 1
        );
        CREATE INDEX dek_store_product_seq ON dek_store (product, seq);
        CREATE INDEX dek_store_version ON dek_store (product, mek_version);
        """,
    ),
)

metadata = MetaData()
dek_store = Table(
    "dek_store",
    metadata,
    Column("seq", BigInteger, primary_key=True),
    Column("dek_id", Text, nullable=False, unique=True),
    Column("product", Text, nullable=False),
    Column("bucket", Integer, nullable=False),
    Column("mek_name", Text, nullable=False),
    Column("mek_version", Text, nullable=False),
    Column("wrapped", LargeBinary, nullable=False),
    Column("algorithm", Text, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Column("revision", BigInteger, nullable=False),
)
"""The table as SQLAlchemy Core sees it; :data:`MIGRATIONS` is what creates it."""

_C = dek_store.c
_RECORD = (
    _C.seq,
    _C.dek_id,
    _C.product,
    _C.mek_name,
    _C.mek_version,
    _C.wrapped,
    _C.algorithm,
    _C.created_at,
    _C.updated_at,
    _C.revision,
)

# The two hot statements are plain SQL run through psycopg (PostgresDatabase.query): arrays
# bound in binary (``%(x)b``; text-format arrays of strings cost ~15 µs a row to escape) and
# rows read as tuples. One statement per batch: ``unnest`` of parallel arrays turns the batch
# into a relation, and the join on (seq, revision) is the compare-and-swap.
_SCAN = (
    "SELECT seq, dek_id, product, mek_name, mek_version, wrapped, algorithm, created_at, "
    "updated_at, revision FROM dek_store WHERE product = %(product)s AND seq > %(after)s"
)
_REPLACE = """
    UPDATE dek_store AS d
    SET mek_version = {version}, wrapped = u.wrapped, algorithm = {algorithm},
        updated_at = clock_timestamp(), revision = d.revision + 1
    FROM unnest({arrays}) AS u({columns})
    WHERE {match} AND d.revision = u.revision AND d.product = %(product)s
    RETURNING d.dek_id
"""


def _replace_statement(*, by_seq: bool, uniform: bool) -> str:
    """The batched compare-and-swap UPDATE for one shape of batch.

    ``by_seq``: rows are found by their ``seq`` (the identity column, never reused); else by
    ``dek_id``. ``uniform``: every update moves to the same version and algorithm (a rewrap),
    so those are two parameters instead of two arrays.
    """
    arrays = ["%(seqs)b::bigint[]" if by_seq else "%(dek_ids)b::text[]"]
    columns = ["seq" if by_seq else "dek_id"]
    arrays += ["%(revisions)b::bigint[]", "%(wraps)b::bytea[]"]
    columns += ["revision", "wrapped"]
    if uniform:
        version, algorithm = "%(version)s", "%(algorithm)s"
    else:
        arrays += ["%(versions)b::text[]", "%(algorithms)b::text[]"]
        columns += ["mek_version", "algorithm"]
        version, algorithm = "u.mek_version", "u.algorithm"
    return _REPLACE.format(
        version=version,
        algorithm=algorithm,
        arrays=", ".join(arrays),
        columns=", ".join(columns),
        match="d.seq = u.seq" if by_seq else "d.dek_id = u.dek_id",
    )


_REPLACE_STATEMENTS = {
    (by_seq, uniform): _replace_statement(by_seq=by_seq, uniform=uniform)
    for by_seq in (True, False)
    for uniform in (True, False)
}


class PostgresDekStore:
    """A product's wrapped DEKs in the ``dek_store`` table of a PostgreSQL database."""

    def __init__(self, database: PostgresDatabase, *, product: str) -> None:
        self.database = database
        self.product = product
        database.migrate(MIGRATIONS)

    def __repr__(self) -> str:
        return f"PostgresDekStore({self.database!r}, product={self.product!r})"

    def create(
        self, *, dek_id: str, mek_name: str, mek_version: str, wrapped: bytes, algorithm: str
    ) -> DekRecord:
        statement = (
            dek_store.insert()
            .values(
                dek_id=dek_id,
                product=self.product,
                bucket=bucket_of(dek_id),
                mek_name=mek_name,
                mek_version=mek_version,
                wrapped=wrapped,
                algorithm=algorithm,
            )
            .returning(*_RECORD)
        )
        try:
            (row,) = self.database.execute(statement)
        except AlreadyExistsError as exc:
            raise AlreadyExistsError(f"DEK {dek_id} already exists", cause=exc.cause) from None
        return _record(row)

    def get(self, dek_id: str) -> DekRecord:
        rows = self.database.execute(
            select(*_RECORD).where(_C.dek_id == dek_id, _C.product == self.product)
        )
        if not rows:
            raise NotFoundError(f"DEK {dek_id} not found")
        return _record(rows[0])

    def get_many(self, dek_ids: Sequence[str]) -> dict[str, DekRecord]:
        if not dek_ids:
            return {}
        rows = self.database.execute(
            select(*_RECORD).where(_C.product == self.product, _C.dek_id == func.any(list(dek_ids)))
        )
        return {row.dek_id: _record(row) for row in rows}

    def delete(self, dek_id: str) -> bool:
        rows = self.database.execute(
            dek_store.delete()
            .where(_C.dek_id == dek_id, _C.product == self.product)
            .returning(_C.seq)
        )
        return bool(rows)

    def replace_wraps(self, updates: Sequence[WrapUpdate]) -> list[str]:
        if not updates:
            return []
        batch: dict[str, WrapUpdate] = {}
        lost: list[str] = []
        for update in updates:
            if update.record.dek_id in batch:
                lost.append(update.record.dek_id)  # the first one moves the revision on
            else:
                batch[update.record.dek_id] = update
        chosen = list(batch.values())
        by_seq = all(isinstance(u.record.row, int) for u in chosen)
        versions = {(u.mek_version, u.algorithm) for u in chosen}
        uniform = len(versions) == 1
        params: dict[str, Any] = {
            "product": self.product,
            "revisions": [int(u.record.revision) for u in chosen],
            "wraps": [u.wrapped for u in chosen],
        }
        if by_seq:
            params["seqs"] = [u.record.row for u in chosen]
        else:
            params["dek_ids"] = [u.record.dek_id for u in chosen]
        if uniform:
            params["version"], params["algorithm"] = versions.pop()
        else:
            params["versions"] = [u.mek_version for u in chosen]
            params["algorithms"] = [u.algorithm for u in chosen]
        statement = _REPLACE_STATEMENTS[by_seq, uniform]
        won = {dek_id for (dek_id,) in self.database.query(statement, params)}
        return [u.record.dek_id for u in chosen if u.record.dek_id not in won] + lost

    def scan(
        self,
        *,
        cursor: str | None = None,
        limit: int = 1000,
        exclude_version: str | None = None,
        only_version: str | None = None,
        shard: tuple[int, int] | None = None,
    ) -> DekPage:
        sql = _SCAN
        params: dict[str, Any] = {"product": self.product, "after": int(cursor or 0)}
        if exclude_version is not None:
            sql += " AND mek_version <> %(exclude)s"
            params["exclude"] = exclude_version
        if only_version is not None:
            sql += " AND mek_version = %(only)s"
            params["only"] = only_version
        if shard is not None:
            index, count = check_shard(shard)
            if count > 1:
                sql += " AND bucket %% %(count)s = %(index)s"
                params.update(count=count, index=index)
        sql += " ORDER BY seq LIMIT %(limit)s"
        params["limit"] = limit
        rows = self.database.query(sql, params)
        records = [_record_from_tuple(row) for row in rows]
        next_cursor = str(rows[-1][0]) if len(rows) == limit else None
        return DekPage(records=records, cursor=next_cursor)

    def count_by_version(self) -> dict[str, int]:
        rows = self.database.execute(
            select(_C.mek_version, func.count())
            .where(_C.product == self.product)
            .group_by(_C.mek_version)
        )
        return {version: int(count) for version, count in rows}

    def count_not_on(self, version: str) -> int:
        ((count,),) = self.database.execute(
            select(func.count()).where(_C.product == self.product, _C.mek_version != version)
        )
        return int(count)

    def count_under(self, mek_name: str, version: str) -> dict[str, int]:
        rows = self.database.execute(
            select(_C.product, func.count())
            .where(_C.mek_name == mek_name, _C.mek_version == version)
            .group_by(_C.product)
        )
        counts = Counter({product: int(count) for product, count in rows})
        if self.database.query("SELECT to_regclass('kek_store')") != [(None,)]:
            rows = self.database.query(
                "SELECT d.product, COUNT(*) FROM dek_store d JOIN kek_store k "
                "ON d.mek_version = 'kek:' || k.kek_id "
                "WHERE k.mek_name = %s AND k.mek_version = %s GROUP BY d.product",
                (mek_name, version),
            )
            counts.update({product: int(count) for product, count in rows})
        return dict(counts)


def _record(row: Any) -> DekRecord:
    return DekRecord(
        dek_id=row.dek_id,
        product=row.product,
        mek_name=row.mek_name,
        mek_version=row.mek_version,
        wrapped=bytes(row.wrapped),
        algorithm=row.algorithm,
        created_at=row.created_at,
        updated_at=row.updated_at,
        revision=str(row.revision),
        row=row.seq,
    )


def _record_from_tuple(row: tuple[Any, ...]) -> DekRecord:
    seq, dek_id, product, mek_name, mek_version, wrapped, algorithm, created, updated, rev = row
    return dek_record_of_row(
        dek_id, product, mek_name, mek_version, wrapped, algorithm, created, updated, str(rev), seq
    )
