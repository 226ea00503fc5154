"""The PostgreSQL dek_store.

The logic and the schema are :class:`~field_encrypt.backends.sql.dek_store.SqlDekStore`'s; what is
PostgreSQL's is :class:`~field_encrypt.backends.sql.postgres.PostgresDialect` and the two batch
writes, each one statement run through psycopg (``PostgresDatabase.query``) with its arrays
bound in binary (``%(x)b``; text-format arrays of strings cost ~15 µs a row to escape).
``unnest`` of parallel arrays turns the batch into a relation. A rewrap's batch goes back by
``seq`` in ``UPDATE ... FROM unnest(...) ... WHERE revision = <read revision> RETURNING
dek_id``: the rows it returns won, every other one lost its compare-and-swap (changed or
deleted meanwhile, and an UPDATE never inserts, so a deleted DEK stays deleted).
``bench/rewrap_postgres.py`` compares this with ``executemany`` and with ``COPY`` into a
temporary table.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from field_encrypt.backends.base import NewDek, NewWrap, WrapUpdate
from field_encrypt.backends.postgres.db import PostgresDatabase
from field_encrypt.backends.sharding import bucket_of
from field_encrypt.backends.sql.dek_store import SqlDekStore, batch_exists
from field_encrypt.backends.sql.postgres import PostgresDialect
from field_encrypt.errors import AlreadyExistsError

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


_CREATE_MANY = """
    INSERT INTO dek_store (dek_id, product, bucket, mek_name, mek_version, wrapped, algorithm)
    SELECT u.dek_id, %(product)s, u.bucket, u.mek_name, u.mek_version, u.wrapped, u.algorithm
    FROM unnest(%(dek_ids)b::text[], %(buckets)b::integer[], %(names)b::text[],
                %(versions)b::text[], %(wraps)b::bytea[], %(algorithms)b::text[])
         AS u(dek_id, bucket, mek_name, mek_version, wrapped, algorithm)
"""

_REPLACE_STATEMENTS = {
    (by_seq, uniform): _replace_statement(by_seq=by_seq, uniform=uniform)
    for by_seq in (True, False)
    for uniform in (True, False)
}


class PostgresDekStore(SqlDekStore):
    """:class:`~field_encrypt.backends.base.DekStore` on a :class:`PostgresDatabase`."""

    database: PostgresDatabase

    def __init__(self, database: PostgresDatabase, *, product: str) -> None:
        super().__init__(PostgresDialect(database), product=product)

    def create_many(self, deks: Sequence[NewDek]) -> None:
        if not deks:
            return
        params = {
            "product": self.product,
            "dek_ids": [d.dek_id for d in deks],
            "buckets": [bucket_of(d.dek_id) for d in deks],
            "names": [d.mek_name for d in deks],
            "versions": [d.mek_version for d in deks],
            "wraps": [d.wrapped for d in deks],
            "algorithms": [d.algorithm for d in deks],
        }
        try:
            self.database.query(_CREATE_MANY, params)  # one statement: all rows or none
        except AlreadyExistsError as exc:
            raise batch_exists(exc) from None

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

    def swap_wraps(
        self, wraps: Sequence[NewWrap], *, mek_version: str, algorithm: str
    ) -> list[str]:
        if not wraps:
            return []
        batch: dict[str, NewWrap] = {}
        lost: list[str] = []
        for wrap in wraps:
            if wrap[2] in batch:
                lost.append(wrap[2])  # the first one moves the revision on
            else:
                batch[wrap[2]] = wrap
        chosen = list(batch.values())
        params: dict[str, Any] = {
            "product": self.product,
            "seqs": [seq for seq, _, _, _ in chosen],
            "revisions": [revision for _, revision, _, _ in chosen],
            "wraps": [wrapped for _, _, _, wrapped in chosen],
            "version": mek_version,
            "algorithm": algorithm,
        }
        won = {dek_id for (dek_id,) in self.database.query(_REPLACE_STATEMENTS[True, True], params)}
        return [dek_id for dek_id in batch if dek_id not in won] + lost
