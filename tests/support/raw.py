"""What no store method does, done underneath the store, for tests on every backend.

A test sometimes needs a row the library would never write (a DEK created long ago). These
helpers reach into the database of whichever kind the runtime is on (SQLite, PostgreSQL or
Cosmos DB) and do it there, so a suite parametrised over the stores needs no SQL of its own.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from field_encrypt.backends.base import WrapUpdate
from field_encrypt.backends.registry import database_kind_of
from field_encrypt.products import ProductRuntime


def set_wrap(runtime: ProductRuntime, dek_id: str, *, wrapped: bytes | None = None,
             mek_version: str | None = None) -> None:  # fmt: skip
    """Replace one DEK's wrap or MEK version (a corrupted or misfiled row), through the store's
    own compare-and-swap write."""
    record = runtime.dek_store.get(dek_id)
    update = WrapUpdate(
        record=record,
        mek_version=mek_version or record.mek_version,
        wrapped=record.wrapped if wrapped is None else wrapped,
        algorithm=record.algorithm,
    )
    assert runtime.dek_store.replace_wraps([update]) == []


def age_deks(runtime: ProductRuntime, created_at: dt.datetime) -> None:
    """Set every DEK's creation time to ``created_at`` (a store never rewrites it)."""
    database: Any = runtime.database
    kind = database_kind_of(database)
    if kind == "sqlite":
        database.execute("UPDATE dek_store SET created_at = ?", (created_at.timestamp(),))
    elif kind == "postgres":
        database.query("UPDATE dek_store SET created_at = %s", (created_at,))
    else:
        container = database.container("dek_store")
        for item in list(
            container.query_items("SELECT * FROM c", enable_cross_partition_query=True)
        ):
            item["createdAt"] = created_at.isoformat()
            container.replace_item(item["id"], item)


def audit_event(runtime: ProductRuntime, seq: int) -> str:
    """The stored text of the product's audit event at ``seq``."""
    database: Any = runtime.database
    kind, product = database_kind_of(database), runtime.encryptor.product
    if kind == "sqlite":
        ((text,),) = database.query(
            "SELECT event FROM actiontrail WHERE product = ? AND seq = ?", (product, seq)
        )
    elif kind == "postgres":
        ((text,),) = database.query(
            "SELECT event FROM actiontrail WHERE product = %s AND seq = %s", (product, seq)
        )
    else:
        text = _audit_item(database, product, seq)["event"]
    return str(text)


def put_audit_event(runtime: ProductRuntime, seq: int, text: str) -> None:
    """Overwrite the audit event at ``seq`` with ``text`` (its stored hash: the one in it)."""
    database: Any = runtime.database
    kind, product = database_kind_of(database), runtime.encryptor.product
    hash_ = json.loads(text)["hash"]
    if kind == "sqlite":
        database.execute(
            "UPDATE actiontrail SET event = ?, hash = ? WHERE product = ? AND seq = ?",
            (text, hash_, product, seq),
        )
    elif kind == "postgres":
        database.query(
            "UPDATE actiontrail SET event = %s, hash = %s WHERE product = %s AND seq = %s",
            (text, hash_, product, seq),
        )
    else:
        item = _audit_item(database, product, seq) | {"event": text, "hash": hash_}
        database.container("actiontrail").replace_item(item["id"], item)


def delete_audit_event(runtime: ProductRuntime, seq: int) -> None:
    """Delete the audit event at ``seq``."""
    database: Any = runtime.database
    kind, product = database_kind_of(database), runtime.encryptor.product
    if kind == "sqlite":
        database.execute("DELETE FROM actiontrail WHERE product = ? AND seq = ?", (product, seq))
    elif kind == "postgres":
        database.query("DELETE FROM actiontrail WHERE product = %s AND seq = %s", (product, seq))
    else:
        database.container("actiontrail").delete_item(f"{seq:020d}", partition_key=product)


def _audit_item(database: Any, product: str, seq: int) -> dict[str, Any]:
    item: dict[str, Any] = database.container("actiontrail").read_item(
        f"{seq:020d}", partition_key=product
    )
    return item
