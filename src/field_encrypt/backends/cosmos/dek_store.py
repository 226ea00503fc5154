"""The Azure Cosmos DB dek_store: one item per DEK in the ``dek_store`` container.

Item layout (field names as in the rotation runbook)::

    {"id": dekId, "pk": "<product>:<2 hex digits>", "dekId": ..., "product": ...,
     "mekName": ..., "mekVersion": ..., "wrapped": "<base64>", "algorithm": ...,
     "createdAt": "<ISO 8601>", "updatedAt": "<ISO 8601>"}

Partition key ``/pk``: the product and one of 256 hash buckets of the dekId (its first two
hex digits). A point read derives it from the dekId alone; writes spread evenly; a logical
partition holds 1/256 of a product's DEKs (about 400 MB at 100 million DEKs, far under the
20 GB limit); and ``scan(shard=(i, n))`` is the partitions ``p % n == i``, each read with
single-partition queries, so workers never read each other's items. Several products may share
the container: every query names the product, so the runbook's verification query becomes
``SELECT VALUE COUNT(1) FROM c WHERE c.product = @p AND c.mekVersion != @v``.

Compare-and-swap is the ETag (``revision``): ``replace_item(..., etag=,
match_condition=IfNotModified)``; a 412 (changed) or 404 (deleted: a replace never creates)
means the update lost. Cosmos DB's transactional batch only spans one logical partition (and
the test server cannot run it), so a batch is item-by-item writes on a few threads.
"""

from __future__ import annotations

import base64
import datetime as dt
from collections import Counter
from collections.abc import Sequence
from typing import Any

from azure.core import MatchConditions

from field_encrypt.backends.base import (
    EVERY_ROW,
    KEK_PREFIX,
    DekPage,
    DekRecord,
    NewDek,
    NewWrap,
    ScanFilter,
    WrapPage,
    WrapRow,
    WrapUpdate,
)
from field_encrypt.backends.cosmos.db import (
    PARTITIONS,
    ContainerStore,
    CosmosDatabase,
    first_value,
    partition_of,
    query_all,
    scan_partitions,
    translate_errors,
)
from field_encrypt.backends.sharding import bucket_of, check_shard
from field_encrypt.errors import ConcurrentUpdateError, ConfigurationError, NotFoundError

CONTAINER = "dek_store"


class CosmosDekStore(ContainerStore):
    """A product's wrapped DEKs in the ``dek_store`` container of a Cosmos DB database."""

    remote = True
    container_name = CONTAINER

    def __init__(self, database: CosmosDatabase, *, product: str) -> None:
        if ":" in product:
            raise ValueError("a product name must not contain ':' (it is part of the /pk value)")
        super().__init__(database)
        self.product = product

    def partition_key(self, dek_id: str) -> str:
        """The ``/pk`` value of ``dek_id``'s item."""
        return self._key(partition_of(bucket_of(dek_id)))

    def _key(self, partition: int) -> str:
        return f"{self.product}:{partition:02x}"

    def create(
        self, *, dek_id: str, mek_name: str, mek_version: str, wrapped: bytes, algorithm: str
    ) -> DekRecord:
        now = _now()
        item = {
            "id": dek_id,
            "pk": self.partition_key(dek_id),
            "dekId": dek_id,
            "product": self.product,
            "mekName": mek_name,
            "mekVersion": mek_version,
            "wrapped": base64.b64encode(wrapped).decode(),
            "algorithm": algorithm,
            "createdAt": now,
            "updatedAt": now,
        }
        with translate_errors():
            created = self.container.create_item(item)
        return _record(created)

    def create_many(self, deks: Sequence[NewDek]) -> None:
        """Item by item on the write threads: a failure may leave some of them created."""
        self.database.each(lambda dek: dek.create_in(self), list(deks))

    def get(self, dek_id: str) -> DekRecord:
        try:
            with translate_errors():
                item = self.container.read_item(dek_id, partition_key=self.partition_key(dek_id))
        except NotFoundError:
            raise NotFoundError(f"DEK {dek_id} not found") from None
        return _record(item)

    def get_many(self, dek_ids: Sequence[str]) -> dict[str, DekRecord]:
        if not dek_ids:
            return {}
        wanted = list(dict.fromkeys(dek_ids))
        with translate_errors():
            items = self.container.read_items(
                [(dek_id, self.partition_key(dek_id)) for dek_id in wanted],
                max_concurrency=self.database.write_concurrency,
            )
        return {item["dekId"]: _record(item) for item in items}

    def delete(self, dek_id: str) -> bool:
        return self._delete_item(dek_id, self.partition_key(dek_id))

    def delete_many(self, dek_ids: Sequence[str]) -> int:
        return sum(self.database.each(self.delete, list(dict.fromkeys(dek_ids))))

    def replace_wraps(self, updates: Sequence[WrapUpdate]) -> list[str]:
        lost = self.database.each(self._replace_one, list(updates))
        return [dek_id for dek_id in lost if dek_id is not None]

    def _replace_one(self, update: WrapUpdate) -> str | None:
        """Write one new wrap if the item still has the read ETag; its dekId if it lost."""
        record = update.record
        item = _item(record, self.partition_key(record.dek_id))
        item.update(
            mekVersion=update.mek_version,
            wrapped=base64.b64encode(update.wrapped).decode(),
            algorithm=update.algorithm,
            updatedAt=_now(),
        )
        try:
            with translate_errors():
                self.container.replace_item(
                    record.dek_id,
                    item,
                    etag=record.revision,
                    match_condition=MatchConditions.IfNotModified,
                )
        except (ConcurrentUpdateError, NotFoundError):
            return record.dek_id
        return None

    def scan(
        self, *, cursor: str | None = None, limit: int = 1000, where: ScanFilter = EVERY_ROW
    ) -> DekPage:
        index, count = check_shard(where.shard) if where.shard is not None else (0, 1)
        keys = [self._key(p) for p in range(PARTITIONS) if p % count == index]
        conditions: list[str] = []
        parameters: list[dict[str, Any]] = []
        if where.exclude_version is not None:
            conditions.append("c.mekVersion != @exclude")
            parameters.append({"name": "@exclude", "value": where.exclude_version})
        if where.only_version is not None:
            conditions.append("c.mekVersion = @only")
            parameters.append({"name": "@only", "value": where.only_version})
        items, next_cursor = scan_partitions(
            self.container,
            partition_keys=keys,
            where=" AND ".join(conditions),
            parameters=parameters,
            cursor=cursor,
            limit=limit,
        )
        return DekPage(records=[_record(item) for item in items], cursor=next_cursor)

    def scan_wraps(
        self, *, cursor: str | None = None, limit: int = 1000, where: ScanFilter = EVERY_ROW
    ) -> WrapPage:
        # An item is replaced whole, so a row's locator is its record (the items hold
        # base64 and ISO dates: the scan builds the records anyway).
        page = self.scan(cursor=cursor, limit=limit, where=where)
        rows: list[WrapRow] = [
            (r, r.revision, r.dek_id, r.mek_version, r.wrapped) for r in page.records
        ]
        return WrapPage(rows=rows, cursor=page.cursor)

    def swap_wraps(
        self, wraps: Sequence[NewWrap], *, mek_version: str, algorithm: str
    ) -> list[str]:
        updates = []
        for row, _, _, wrapped in wraps:
            if not isinstance(row, DekRecord):
                raise TypeError("swap_wraps takes rows read by this store's scan_wraps")
            updates.append(
                WrapUpdate(
                    record=row, mek_version=mek_version, wrapped=wrapped, algorithm=algorithm
                )
            )
        return self.replace_wraps(updates)

    def count_by_version(self) -> dict[str, int]:
        # GROUP BY is not portable (the Python SDK's cross-partition support and the test
        # server both lack it), so count the one projected field here.
        with translate_errors():
            versions = self.container.query_items(
                "SELECT VALUE c.mekVersion FROM c WHERE c.product = @p",
                parameters=[{"name": "@p", "value": self.product}],
                enable_cross_partition_query=True,
                max_item_count=5000,
            )
            return dict(Counter(str(v) for v in versions))

    def count_not_on(self, version: str) -> int:
        with translate_errors():
            result = self.container.query_items(
                "SELECT VALUE COUNT(1) FROM c WHERE c.product = @p AND c.mekVersion != @v",
                parameters=[
                    {"name": "@p", "value": self.product},
                    {"name": "@v", "value": version},
                ],
                enable_cross_partition_query=True,
            )
            return int(first_value(result))

    def count_under(self, mek_name: str, version: str) -> dict[str, int]:
        counts = Counter(self._products("c.mekName = @n AND c.mekVersion = @v", mek_name, version))
        try:
            keks = self.database.container("kek_store")
        except ConfigurationError:  # no KEK tier was ever opened on this database
            return dict(counts)
        kek_ids = query_all(
            keks,
            "SELECT VALUE c.kekId FROM c WHERE c.mekName = @n AND c.mekVersion = @v",
            {"@n": mek_name, "@v": version},
        )
        for kek_id in kek_ids:  # a few per product: one query each
            counts.update(self._products("c.mekVersion = @n", KEK_PREFIX + str(kek_id), None))
        return dict(counts)

    def active_keks_under(self, mek_name: str, version: str) -> dict[str, int]:
        try:
            keks = self.database.container("kek_store")
        except ConfigurationError:  # no KEK tier was ever opened on this database
            return {}
        products = query_all(
            keks,
            "SELECT VALUE c.product FROM c WHERE c.mekName = @n AND c.mekVersion = @v "
            "AND c.active = true",
            {"@n": mek_name, "@v": version},
        )
        return dict(Counter(str(p) for p in products))

    def _products(self, where: str, n: str, v: str | None) -> list[str]:
        """The product of each DEK item matching ``where`` (parameters ``@n``, ``@v``)."""
        parameters: list[dict[str, object]] = [{"name": "@n", "value": n}]
        if v is not None:
            parameters.append({"name": "@v", "value": v})
        with translate_errors():
            found = self.container.query_items(
                f"SELECT VALUE c.product FROM c WHERE {where}",
                parameters=parameters,
                enable_cross_partition_query=True,
                max_item_count=5000,
            )
            return [str(p) for p in found]


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat()


def _item(record: DekRecord, partition_key: str) -> dict[str, Any]:
    return {
        "id": record.dek_id,
        "pk": partition_key,
        "dekId": record.dek_id,
        "product": record.product,
        "mekName": record.mek_name,
        "mekVersion": record.mek_version,
        "wrapped": base64.b64encode(record.wrapped).decode(),
        "algorithm": record.algorithm,
        "createdAt": record.created_at.isoformat(),
        "updatedAt": record.updated_at.isoformat(),
    }


def _record(item: dict[str, Any]) -> DekRecord:
    return DekRecord(
        dek_id=item["dekId"],
        product=item["product"],
        mek_name=item["mekName"],
        mek_version=item["mekVersion"],
        wrapped=base64.b64decode(item["wrapped"]),
        algorithm=item["algorithm"],
        created_at=dt.datetime.fromisoformat(item["createdAt"]),
        updated_at=dt.datetime.fromisoformat(item["updatedAt"]),
        revision=item["_etag"],
        row=item["pk"],
    )
