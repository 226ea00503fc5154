"""The SQLite dek_store, the embedded default.

The logic and the schema are :class:`~field_encrypt.backends.sql.dek_store.SqlDekStore`'s; what is
SQLite's is :class:`~field_encrypt.backends.sql.sqlite.SqliteDialect`, two planner hints, and the
rewrap's batch write, which stays on the stdlib driver (one ``UPDATE ... FROM (VALUES
...)`` per batch and ``total_changes``: the hot path of a rewrap, see
``bench/rewrap_sqlite.py``). The rotation engine reads and writes this store on its
rewrapping thread (``remote = False``).
"""

from __future__ import annotations

import functools
import time
from collections.abc import Mapping, Sequence
from itertools import chain

from field_encrypt.backends.base import NewWrap, WrapUpdate
from field_encrypt.backends.sharding import bucket_of
from field_encrypt.backends.sql.dek_store import CHUNK, SqlDekStore
from field_encrypt.backends.sql.sqlite import SqliteDialect
from field_encrypt.backends.sqlite.db import SqliteDatabase

__all__ = ["SqliteDekStore", "bucket_of"]


class SqliteDekStore(SqlDekStore):
    """:class:`~field_encrypt.backends.base.DekStore` on a :class:`SqliteDatabase`."""

    # NOT INDEXED: walk by seq. With the (product, mek_version) index the planner would
    # collect every matching row and sort it again for each page.
    scan_from = "dek_store NOT INDEXED"
    # "+product": never by the (product, mek_version) index. From ~50 ids on, the planner
    # would otherwise read every DEK of the product for each chunk.
    product_column = "+product"

    remote = False  # the rotation engine reads and writes it on the rewrapping thread
    database: SqliteDatabase

    def __init__(self, database: SqliteDatabase, *, product: str) -> None:
        super().__init__(SqliteDialect(database), product=product)

    def replace_wraps(self, updates: Sequence[WrapUpdate]) -> list[str]:
        by_target: dict[tuple[str, str], list[NewWrap]] = {}
        for u in updates:  # a rewrap's batch has one target: one group
            r = u.record
            by_target.setdefault((u.mek_version, u.algorithm), []).append(
                (r.row, int(r.revision), r.dek_id, u.wrapped)
            )
        return self._swap(by_target)

    def swap_wraps(
        self, wraps: Sequence[NewWrap], *, mek_version: str, algorithm: str
    ) -> list[str]:
        return self._swap({(mek_version, algorithm): wraps})

    def _swap(self, by_target: Mapping[tuple[str, str], Sequence[NewWrap]]) -> list[str]:
        """Each group's new wraps by seq, with compare-and-swap, in one transaction."""
        total = sum(len(wraps) for wraps in by_target.values())
        if not total:
            return []
        now = time.time()
        with self.database.transaction() as tx:
            before = tx.total_changes
            for (version, algorithm), wraps in by_target.items():
                for start in range(0, len(wraps), _ROWS_PER_UPDATE):
                    chunk = wraps[start : start + _ROWS_PER_UPDATE]
                    params: list[object] = [version, algorithm, now]
                    params += chain.from_iterable(chunk)
                    tx.execute(_replace_statement(len(chunk)), params)
            if tx.total_changes - before == total:
                return []
            # Some rows moved on since they were read. Inside this write transaction, a row
            # we updated holds our new wrap (fresh nonce: nobody else can have written it).
            every = [w for wraps in by_target.values() for w in wraps]
            current: dict[object, bytes] = {}
            for start in range(0, len(every), CHUNK):
                seqs = [w[0] for w in every[start : start + CHUNK]]
                marks = ",".join("?" * len(seqs))
                current.update(
                    tx.execute(
                        f"SELECT seq, wrapped FROM dek_store WHERE seq IN ({marks})", seqs
                    ).fetchall()
                )
        return [dek_id for seq, _, dek_id, wrapped in every if current.get(seq) != wrapped]


_ROWS_PER_UPDATE = 4096
"""Rows per ``UPDATE`` statement: 4 parameters each, under SQLite's 32,766 (3.32+)."""


@functools.lru_cache(maxsize=8)
def _replace_statement(rows: int) -> str:
    """One compare-and-swap ``UPDATE ... FROM (VALUES ...)`` for ``rows`` rows.

    One statement per batch costs less CPU than ``executemany`` of one ``UPDATE`` per row
    (0.44 s against 0.48 s for 100k rows, ``docs/performance.md``). Parameters: ``?1``
    version, ``?2`` algorithm, ``?3`` time, then per row ``seq, revision, dek_id,
    wrapped``. A row updates only if its seq, revision and dekId still match
    (compare-and-swap); SQLite finds each by its rowid.
    """
    values = ",".join(["(?,?,?,?)"] * rows)
    return (
        "UPDATE dek_store SET mek_version = ?1, algorithm = ?2, updated_at = ?3, "
        "wrapped = u.column4, revision = dek_store.revision + 1 "
        f"FROM (VALUES {values}) AS u WHERE dek_store.seq = u.column1 "
        "AND dek_store.revision = u.column2 AND dek_store.dek_id = u.column3"
    )
