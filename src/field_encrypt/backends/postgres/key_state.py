"""The key-state epoch in the product's PostgreSQL database: one row per product.

A bump is one transaction that locks the row (``SELECT ... FOR UPDATE``, after an
``INSERT ... ON CONFLICT DO NOTHING`` so the row exists), so concurrent bumps queue and
each is counted.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence

from sqlalchemy import text

from field_encrypt.backends.base import KeyState
from field_encrypt.backends.postgres.db import Migration, PostgresDatabase

MIGRATIONS = (
    Migration(
        "0001_key_state",
        """
        CREATE TABLE key_state (
            product text PRIMARY KEY,
            epoch bigint NOT NULL,
            changes text NOT NULL
        );
        """,
    ),
)


class PostgresKeyStateStore:
    """:class:`~field_encrypt.backends.base.KeyStateStore` on a :class:`PostgresDatabase`."""

    def __init__(self, database: PostgresDatabase, *, product: str) -> None:
        self.database = database
        self.product = product
        database.migrate(MIGRATIONS)

    def __repr__(self) -> str:
        return f"PostgresKeyStateStore({self.database!r}, product={self.product!r})"

    def read(self) -> KeyState:
        rows = self.database.query(
            "SELECT epoch, changes FROM key_state WHERE product = %s", (self.product,)
        )
        if not rows:
            return KeyState(product=self.product)
        epoch, changes = rows[0]
        return KeyState.of_json(self.product, int(epoch), json.loads(changes))

    def bump(self, versions: Sequence[str], *, via: str) -> KeyState:
        key = {"product": self.product}
        with self.database.transaction() as conn:
            conn.execute(
                text(
                    "INSERT INTO key_state (product, epoch, changes) "
                    "VALUES (:product, 0, '[]') ON CONFLICT DO NOTHING"
                ),
                key,
            )
            epoch, changes = conn.execute(
                text("SELECT epoch, changes FROM key_state WHERE product = :product FOR UPDATE"),
                key,
            ).one()
            state = KeyState.of_json(self.product, int(epoch), json.loads(changes))
            new = state.bumped(versions, via=via, at=time.time())
            conn.execute(
                text(
                    "UPDATE key_state SET epoch = :epoch, changes = :changes "
                    "WHERE product = :product"
                ),
                {**key, "epoch": new.epoch, "changes": json.dumps(new.changes_json())},
            )
        return new
