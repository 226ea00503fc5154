"""The key-state epoch in the product's SQLite database: one row per product."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence

from field_encrypt.backends.base import KeyState
from field_encrypt.backends.sqlite.db import Migration, SqliteDatabase

MIGRATIONS = (
    Migration(
        "0001_key_state",
        """
        CREATE TABLE key_state (
            product TEXT PRIMARY KEY,
            epoch INTEGER NOT NULL,
            changes TEXT NOT NULL
        )
        """,
    ),
)


class SqliteKeyStateStore:
    """:class:`~field_encrypt.backends.base.KeyStateStore` on a :class:`SqliteDatabase`."""

    def __init__(self, database: SqliteDatabase, *, product: str) -> None:
        self.database = database
        self.product = product
        database.migrate(MIGRATIONS)

    def __repr__(self) -> str:
        return f"SqliteKeyStateStore({self.database.path!r}, product={self.product!r})"

    def read(self) -> KeyState:
        rows = self.database.query(
            "SELECT epoch, changes FROM key_state WHERE product = ?", (self.product,)
        )
        if not rows:
            return KeyState(product=self.product)
        epoch, changes = rows[0]
        return KeyState.of_json(self.product, epoch, json.loads(changes))

    def bump(self, versions: Sequence[str], *, via: str) -> KeyState:
        with self.database.transaction() as tx:  # BEGIN IMMEDIATE: bumps queue, none is lost
            row = tx.execute(
                "SELECT epoch, changes FROM key_state WHERE product = ?", (self.product,)
            ).fetchone()
            state = (
                KeyState.of_json(self.product, row[0], json.loads(row[1]))
                if row
                else KeyState(product=self.product)
            )
            new = state.bumped(versions, via=via, at=time.time())
            tx.execute(
                "INSERT OR REPLACE INTO key_state (product, epoch, changes) VALUES (?, ?, ?)",
                (self.product, new.epoch, json.dumps(new.changes_json())),
            )
        return new
