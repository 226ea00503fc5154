"""The KEK tier's kek_store in the product's Cosmos DB database: the ``kek_store`` container.

One item per KEK::

    {"id": kekId, "pk": "<product>", "kekId": ..., "product": ..., "partition": ...,
     "mekName": ..., "mekVersion": ..., "wrapped": "<base64>", "algorithm": ...,
     "active": true, "created": <unix seconds>, "createdAt": "<ISO 8601>",
     "updatedAt": "<ISO 8601>"}

A product's KEKs share one logical partition (a handful of items). Compare-and-swap is the
ETag (``revision``). A new KEK is created first, then the partition's older active KEKs are
retired; :meth:`CosmosKekStore.active` reads the newest active one, so a crash between the
two steps leaves the new KEK in use and nothing unreadable.
"""

from __future__ import annotations

import base64
import datetime as dt
import time
from typing import Any

from field_encrypt.backends.base import KekRecord
from field_encrypt.backends.cosmos.db import (
    ContainerStore,
    CosmosDatabase,
    translate_errors,
)
from field_encrypt.errors import AlreadyExistsError, ConcurrentUpdateError, NotFoundError

CONTAINER = "kek_store"
MAX_ROUNDS = 5


class CosmosKekStore(ContainerStore):
    """:class:`~field_encrypt.backends.base.KekStore` on a :class:`CosmosDatabase`."""

    container_name = CONTAINER

    def __init__(self, database: CosmosDatabase, *, product: str) -> None:
        super().__init__(database)
        self.product = product

    def create(
        self, *, kek_id: str, partition: str, mek_name: str, mek_version: str,
        wrapped: bytes, algorithm: str,
    ) -> KekRecord:  # fmt: skip
        now = time.time()
        item = {
            "id": kek_id,
            "pk": self.product,
            "kekId": kek_id,
            "product": self.product,
            "partition": partition,
            "mekName": mek_name,
            "mekVersion": mek_version,
            "wrapped": base64.b64encode(wrapped).decode(),
            "algorithm": algorithm,
            "active": True,
            "created": now,
            "createdAt": _iso(now),
            "updatedAt": _iso(now),
        }
        try:
            with translate_errors():
                created = self.container.create_item(item)
        except AlreadyExistsError as exc:
            raise AlreadyExistsError(f"KEK {kek_id} already exists", cause=exc.cause) from None
        for older in self._items():
            if older["partition"] == partition and older["active"] and older["id"] != kek_id:
                self.retire(older["id"])
        return _record(created)

    def get(self, kek_id: str) -> KekRecord:
        item = self._read(kek_id)
        if item is None:
            raise NotFoundError(f"KEK {kek_id} not found")
        return _record(item)

    def active(self, partition: str = "") -> KekRecord | None:
        found = [i for i in self._items() if i["partition"] == partition and i["active"]]
        return _record(found[-1]) if found else None

    def all(self) -> list[KekRecord]:
        return [_record(i) for i in self._items()]

    def replace_wrap(
        self, record: KekRecord, *, mek_version: str, wrapped: bytes, algorithm: str
    ) -> bool:
        current = self._read(record.kek_id)
        if current is None or current["_etag"] != record.revision:
            return False
        changed = {
            **_body(current),
            "mekVersion": mek_version,
            "wrapped": base64.b64encode(wrapped).decode(),
            "algorithm": algorithm,
            "updatedAt": _iso(time.time()),
        }
        return self._replace(current, changed)

    def retire(self, kek_id: str) -> bool:
        for _ in range(MAX_ROUNDS):
            current = self._read(kek_id)
            if current is None or not current["active"]:
                return False
            retired = {**_body(current), "active": False, "updatedAt": _iso(time.time())}
            if self._replace(current, retired):
                return True
        raise ConcurrentUpdateError(f"KEK {kek_id} kept changing while it was being retired")

    def delete(self, kek_id: str) -> bool:
        return self._delete_item(kek_id, self.product)

    def _replace(self, current: dict[str, Any], item: dict[str, Any]) -> bool:
        try:
            self._write_over(current, item)
        except (ConcurrentUpdateError, NotFoundError):
            return False
        return True

    def _read(self, kek_id: str) -> dict[str, Any] | None:
        return self._read_item(kek_id, self.product)

    def _items(self) -> list[dict[str, Any]]:
        """The product's KEK items, oldest first."""
        items = self._query_items(
            "SELECT * FROM c WHERE c.pk = @pk AND c.product = @product",
            {"@pk": self.product, "@product": self.product},
            partition_key=self.product,
        )
        return sorted(items, key=lambda i: (i["created"], i["id"]))


def _body(item: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in item.items() if not k.startswith("_")}


def _iso(seconds: float) -> str:
    return dt.datetime.fromtimestamp(seconds, dt.UTC).isoformat()


def _record(item: dict[str, Any]) -> KekRecord:
    return KekRecord(
        kek_id=item["kekId"],
        product=item["product"],
        partition=item["partition"],
        mek_name=item["mekName"],
        mek_version=item["mekVersion"],
        wrapped=base64.b64decode(item["wrapped"]),
        algorithm=item["algorithm"],
        active=bool(item["active"]),
        created_at=dt.datetime.fromisoformat(item["createdAt"]),
        updated_at=dt.datetime.fromisoformat(item["updatedAt"]),
        revision=item["_etag"],
    )
