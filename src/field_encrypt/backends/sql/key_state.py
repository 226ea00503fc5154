"""The key-state epoch in the product's SQL database: one row per product.

A bump is one transaction that locks the row (``SELECT ... FOR UPDATE`` on PostgreSQL;
SQLite's ``BEGIN IMMEDIATE`` holds the file's write lock), after an ``INSERT ... ON
CONFLICT DO NOTHING`` so the row exists: concurrent bumps queue and each is counted.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence

from field_encrypt.backends.base import KeyState
from field_encrypt.backends.sql.dialect import Dialect, SqlStore

MIGRATIONS = (
    (
        "0001_key_state",
        """
        CREATE TABLE key_state (
            product {text} PRIMARY KEY,
            epoch {bigint} NOT NULL,
            changes {text} NOT NULL
        )
        """,
    ),
)


class SqlKeyStateStore(SqlStore):
    """:class:`~field_encrypt.backends.base.KeyStateStore` in the ``key_state`` table."""

    scope = "product"

    def __init__(self, dialect: Dialect, *, product: str) -> None:
        self.product = product
        super().__init__(dialect, [dialect.schema(name, sql) for name, sql in MIGRATIONS])

    def read(self) -> KeyState:
        rows = self.dialect.query(
            "SELECT epoch, changes FROM key_state WHERE product = :product",
            {"product": self.product},
        )
        if not rows:
            return KeyState(product=self.product)
        epoch, changes = rows[0]
        return KeyState.of_json(self.product, int(epoch), json.loads(changes))

    def bump(self, versions: Sequence[str], *, via: str) -> KeyState:
        key = {"product": self.product}
        with self.dialect.transaction() as tx:
            tx.run(
                "INSERT INTO key_state (product, epoch, changes) "
                "VALUES (:product, 0, '[]') ON CONFLICT DO NOTHING",
                key,
            )
            epoch, changes = tx.rows(
                "SELECT epoch, changes FROM key_state WHERE product = :product"
                + self.dialect.for_update,
                key,
            )[0]
            state = KeyState.of_json(self.product, int(epoch), json.loads(changes))
            new = state.bumped(versions, via=via, at=time.time())
            tx.run(
                "UPDATE key_state SET epoch = :epoch, changes = :changes WHERE product = :product",
                {**key, "epoch": new.epoch, "changes": json.dumps(new.changes_json())},
            )
        return new
