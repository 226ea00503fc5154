"""The SQLite dek_store, the embedded default.

The logic and the schema are :class:`~field_encrypt.backends.sql.dek_store.SqlDekStore`'s; what is
SQLite's is :class:`~field_encrypt.backends.sql.sqlite.SqliteDialect`, two planner hints, and the
rewrap's batch write, which stays on the stdlib driver (positional ``executemany`` and
``total_changes``: the hot path of a rewrap, see ``bench/rewrap_sqlite.py``).
"""

from __future__ import annotations

import time
from collections.abc import Sequence

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
        now = time.time()
        params = [
            (u.mek_version, u.wrapped, u.algorithm, now, u.record.row, int(u.record.revision),
             u.record.dek_id)
            for u in updates
        ]  # fmt: skip
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
            for start in range(0, len(updates), CHUNK):
                seqs = [u.record.row for u in updates[start : start + CHUNK]]
                marks = ",".join("?" * len(seqs))
                current.update(
                    tx.execute(
                        f"SELECT seq, wrapped FROM dek_store WHERE seq IN ({marks})", seqs
                    ).fetchall()
                )
        return [u.record.dek_id for u in updates if current.get(u.record.row) != u.wrapped]
