"""The SQLite dek_store, the embedded default.

The logic and the schema are :class:`~field_encrypt.backends.sql.dek_store.SqlDekStore`'s; what is
SQLite's is :class:`~field_encrypt.backends.sql.sqlite.SqliteDialect`, two planner hints, and the
rewrap's batch write, which stays on the stdlib driver (positional ``executemany`` and
``total_changes``: the hot path of a rewrap, see ``bench/rewrap_sqlite.py``).
"""

from __future__ import annotations

import functools
import time
from collections.abc import Sequence
from itertools import chain

from field_encrypt.backends.base import WrapUpdate
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

    database: SqliteDatabase

    def __init__(self, database: SqliteDatabase, *, product: str) -> None:
        super().__init__(SqliteDialect(database), product=product)

    def replace_wraps(self, updates: Sequence[WrapUpdate]) -> list[str]:
        if not updates:
            return []
        by_target: dict[tuple[str, str], list[WrapUpdate]] = {}
        for u in updates:  # a rewrap's batch has one target: one group
            by_target.setdefault((u.mek_version, u.algorithm), []).append(u)
        now = time.time()
        with self.database.transaction() as tx:
            before = tx.total_changes
            for (version, algorithm), group in by_target.items():
                for start in range(0, len(group), _ROWS_PER_UPDATE):
                    chunk = group[start : start + _ROWS_PER_UPDATE]
                    params: list[object] = [version, algorithm, now]
                    params += chain.from_iterable(
                        (u.record.row, int(u.record.revision), u.record.dek_id, u.wrapped)
                        for u in chunk
                    )
                    tx.execute(_replace_statement(len(chunk)), params)
            if tx.total_changes - before == len(updates):
                return []
            # Some rows moved on since they were read. Inside this write transaction, a row
            # we updated holds our new wrap (fresh nonce: nobody else can have written it).
            current: dict[object, bytes] = {}
            for start in range(0, len(updates), CHUNK):
                seqs = [u.record.row for u in updates[start : start + CHUNK]]
                marks = ",".join("?" * len(seqs))
                current.update(
                    tx.execute(
                        f"SELECT seq, wrapped FROM dek_store WHERE seq IN ({marks})", seqs
                    ).fetchall()
                )
        return [u.record.dek_id for u in updates if current.get(u.record.row) != u.wrapped]


_ROWS_PER_UPDATE = 4096
"""Rows per ``UPDATE`` statement: 4 parameters each, under SQLite's 32,766 (3.32+)."""


@functools.lru_cache(maxsize=8)
def _replace_statement(rows: int) -> str:
    """One compare-and-swap ``UPDATE ... FROM (VALUES ...)`` for ``rows`` rows.

    A batch written as one statement is one ``sqlite3_step``, during which the driver
    releases the GIL: the write runs on the other core while the engine rewraps the next
    batch (``executemany`` releases the GIL around each row's step and must take it back
    between rows, so a writer thread barely progressed while the rewrapping thread held
    it). Parameters: ``?1`` version, ``?2`` algorithm, ``?3`` time, then per row ``seq,
    revision, dek_id, wrapped``. A row updates only if its seq, revision and dekId still
    match (compare-and-swap); SQLite finds each by its rowid.
    """
    values = ",".join(["(?,?,?,?)"] * rows)
    return (
        "UPDATE dek_store SET mek_version = ?1, algorithm = ?2, updated_at = ?3, "
        "wrapped = u.column4, revision = dek_store.revision + 1 "
        f"FROM (VALUES {values}) AS u WHERE dek_store.seq = u.column1 "
        "AND dek_store.revision = u.column2 AND dek_store.dek_id = u.column3"
    )
