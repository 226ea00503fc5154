"""The key-state epoch in the product's Cosmos DB database.

One item of the ``rotation_ledger`` container (partition ``"ledger"``, beside the run ledger
and the version notes): ``keystate:<product digest>``. Reading it is one point read (1 RU);
a bump is a create for the first one, then a replace conditional on the ETag read, tried
again when another bump won, so concurrent bumps are each counted.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Sequence
from typing import Any

from field_encrypt.backends.base import KeyState
from field_encrypt.backends.cosmos.db import (
    ContainerStore,
    CosmosDatabase,
)
from field_encrypt.backends.cosmos.ledger import CONTAINER, PARTITION
from field_encrypt.errors import AlreadyExistsError, ConcurrentUpdateError, NotFoundError

ATTEMPTS = 20
"""Bumps lost to concurrent bumps before giving up (each loss means another one won)."""


class CosmosKeyStateStore(ContainerStore):
    """:class:`~field_encrypt.backends.base.KeyStateStore` on a :class:`CosmosDatabase`."""

    container_name = CONTAINER

    def __init__(self, database: CosmosDatabase, *, product: str) -> None:
        super().__init__(database)
        self.product = product
        self.item_id = "keystate:" + hashlib.sha256(product.encode()).hexdigest()[:32]

    def read(self) -> KeyState:
        item = self._read()
        if item is None:
            return KeyState(product=self.product)
        return KeyState.of_json(self.product, item["epoch"], item["changes"])

    def bump(self, versions: Sequence[str], *, via: str) -> KeyState:
        for _ in range(ATTEMPTS):
            item = self._read()
            state = (
                KeyState(product=self.product)
                if item is None
                else KeyState.of_json(self.product, item["epoch"], item["changes"])
            )
            new = state.bumped(versions, via=via, at=time.time())
            body: dict[str, Any] = {
                "id": self.item_id,
                "pk": PARTITION,
                "kind": "keystate",
                "product": self.product,
                "epoch": new.epoch,
                "changes": new.changes_json(),
            }
            try:
                self._write_over(item, body)
            except (AlreadyExistsError, ConcurrentUpdateError, NotFoundError):
                continue  # another bump won: read again and count this one after it
            return new
        raise ConcurrentUpdateError(
            f"the key state of {self.product!r} kept changing: {ATTEMPTS} bumps lost in a row"
        )

    def _read(self) -> dict[str, Any] | None:
        return self._read_item(self.item_id, PARTITION)
