"""The rehearsal product: ``--product field_encrypt.rehearsal:product``.

The product docs/runbooks/mek-rotation.md rehearses on, shipped with the package so the
runbook runs as written from any installation (no checkout on ``PYTHONPATH``). One
collection, ``records``, with an encrypted top-level field (``ssn``) and a nested one
(``profile.note``), on the database ``FIELD_ENCRYPT_DATABASE`` names with the provider the
settings name.

``python -m field_encrypt.rehearsal`` fills it and checks it; rehearsal only, it also
damages it the ways the runbook's recovery section repairs:

* ``--count N``: add N documents encrypted under the current MEK version;
* ``--check``: decrypt every document and compare it with what was written (exit 1 when
  one differs or does not decrypt);
* ``--corrupt N`` / ``--delete N``: overwrite the wrap of the first N DEKs (by dekId)
  with random bytes, or delete the last N DEK rows;
* ``--orphans N``: create N DEKs whose documents are never written (what a create killed
  between its DEK and its document leaves);
* ``crashing_product``: the same product, but its process dies (SIGKILL, like ``kill -9``
  or a lost node) right after its first batch of rewrapped DEKs is committed.

Never point it at a production database: ``--corrupt`` and ``--delete`` destroy DEKs.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from collections.abc import Sequence
from typing import Any

from field_encrypt.backends.base import (
    DekPage,
    DekRecord,
    DekStore,
    NewWrap,
    WrapPage,
    WrapUpdate,
)
from field_encrypt.blind_index import BlindIndex, IndexedField
from field_encrypt.config import Settings, load_settings
from field_encrypt.errors import FieldEncryptError
from field_encrypt.index_values import with_index_values
from field_encrypt.products import Product, ProductRuntime
from field_encrypt.runtime import open_runtime

NAME = "sample"
COLLECTIONS = {"records": ["ssn", "profile.note"]}
INDEXED = (
    IndexedField(collection="records", path="ssn"),
    IndexedField(collection="records", path="profile.note", casefold=True),
)


def _open(settings: Settings) -> ProductRuntime:
    return open_runtime(settings, product=NAME, collections=COLLECTIONS, indexed=INDEXED)


product = Product(name=NAME, collections=COLLECTIONS, open=_open, indexed=INDEXED)
"""The rehearsal product."""


class _CrashAfterFirstWrite:
    """A DekStore whose process dies right after its first batch write (``replace_wraps``
    or ``swap_wraps``) committed."""

    def __init__(self, inner: DekStore) -> None:
        self.inner = inner
        self.product = inner.product

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def create(self, **kwargs: Any) -> DekRecord:
        return self.inner.create(**kwargs)

    def get(self, dek_id: str) -> DekRecord:
        return self.inner.get(dek_id)

    def get_many(self, dek_ids: Sequence[str]) -> dict[str, DekRecord]:
        return self.inner.get_many(dek_ids)

    def delete(self, dek_id: str) -> bool:
        return self.inner.delete(dek_id)

    def replace_wraps(self, updates: Sequence[WrapUpdate]) -> list[str]:
        self.inner.replace_wraps(updates)
        os.kill(os.getpid(), signal.SIGKILL)
        raise AssertionError("unreachable")  # pragma: no cover

    def scan(self, **kwargs: Any) -> DekPage:
        return self.inner.scan(**kwargs)

    def swap_wraps(
        self, wraps: Sequence[NewWrap], *, mek_version: str, algorithm: str
    ) -> list[str]:
        self.inner.swap_wraps(wraps, mek_version=mek_version, algorithm=algorithm)
        os.kill(os.getpid(), signal.SIGKILL)
        raise AssertionError("unreachable")  # pragma: no cover

    def scan_wraps(self, **kwargs: Any) -> WrapPage:
        return self.inner.scan_wraps(**kwargs)

    def count_by_version(self) -> dict[str, int]:
        return self.inner.count_by_version()

    def count_not_on(self, version: str) -> int:
        return self.inner.count_not_on(version)

    def count_under(self, mek_name: str, version: str) -> dict[str, int]:
        return self.inner.count_under(mek_name, version)

    def active_keks_under(self, mek_name: str, version: str) -> dict[str, int]:
        return self.inner.active_keks_under(mek_name, version)


def _open_crashing(settings: Settings) -> ProductRuntime:
    runtime = _open(settings)
    runtime.dek_store = _CrashAfterFirstWrite(runtime.dek_store)
    return runtime


crashing_product = Product(name=NAME, collections=COLLECTIONS, open=_open_crashing, indexed=INDEXED)
"""The rehearsal product, dying (SIGKILL) after its first committed batch of rewraps."""


def document(i: int) -> dict[str, Any]:
    """The plaintext of document ``doc-{i}``."""
    return {"name": f"person {i}", "ssn": f"{i:03d}-45-6789", "profile": {"note": f"note {i}"}}


def seed(
    runtime: ProductRuntime,
    count: int,
    *,
    start: int = 0,
    encrypt: bool = True,
    index: BlindIndex | None = None,
) -> None:
    """Insert documents ``doc-{start}`` .. ``doc-{start + count - 1}`` into ``records``
    (with ``index``: with their index values, ``ssn__bi`` and ``profile.note__bi``)."""
    docs: Any = runtime.documents["records"]  # a generic document store: it has insert
    for i in range(start, start + count):
        doc_id = f"doc-{i}"
        if encrypt:
            dek_id = runtime.encryptor.create_dek()
            fields = runtime.encryptor.encrypt_document(
                "records", doc_id, document(i), dek_id=dek_id
            )
            if index is not None:
                fields = with_index_values(index, "records", fields, document(i))
            docs.insert(doc_id, fields, dek_id)
        else:
            docs.insert(doc_id, document(i), None)


def read_all(runtime: ProductRuntime) -> dict[str, dict[str, Any]]:
    """Every document of ``records``, decrypted (raises on the first that does not)."""
    docs = runtime.documents["records"]
    out = {}
    cursor = None
    while True:
        page = docs.scan(cursor=cursor, limit=500)
        for d in page.documents:
            out[d.id] = runtime.encryptor.decrypt_document("records", d.id, d.fields)
        if page.cursor is None:
            return out
        cursor = page.cursor


def check(runtime: ProductRuntime) -> tuple[int, int]:
    """``(documents read, documents different or unreadable)``."""
    docs = runtime.documents["records"]
    read = wrong = 0
    cursor = None
    while True:
        page = docs.scan(cursor=cursor, limit=500)
        for d in page.documents:
            read += 1
            try:
                plain = runtime.encryptor.decrypt_document("records", d.id, d.fields)
            except FieldEncryptError:  # a DEK that does not unwrap, or is missing
                wrong += 1
                continue
            if plain != document(int(d.id.split("-")[1])):
                wrong += 1
        if page.cursor is None:
            return read, wrong
        cursor = page.cursor


def _first(runtime: ProductRuntime, count: int) -> list[DekRecord]:
    return list(runtime.dek_store.scan(limit=count).records)[:count]


def _last(runtime: ProductRuntime, count: int) -> list[DekRecord]:
    records: list[DekRecord] = []
    cursor = None
    while True:
        page = runtime.dek_store.scan(cursor=cursor, limit=1000)
        records = (records + list(page.records))[-count:]
        if page.cursor is None:
            return records if count else []
        cursor = page.cursor


def corrupt(runtime: ProductRuntime, count: int) -> list[str]:
    """Overwrite the wrap of the first ``count`` DEKs with random bytes; their dekIds."""
    records = _first(runtime, count)
    updates = [
        WrapUpdate(
            record=r,
            mek_version=r.mek_version,
            wrapped=os.urandom(len(r.wrapped)),
            algorithm=r.algorithm,
        )
        for r in records
    ]
    runtime.dek_store.replace_wraps(updates)
    return [r.dek_id for r in records]


def delete(runtime: ProductRuntime, count: int) -> list[str]:
    """Delete the last ``count`` DEK rows (by dekId); their dekIds."""
    records = _last(runtime, count)
    for r in records:
        runtime.dek_store.delete(r.dek_id)
    return [r.dek_id for r in records]


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m field_encrypt.rehearsal``: seed, check or damage the rehearsal product."""
    parser = argparse.ArgumentParser(
        prog="python -m field_encrypt.rehearsal",
        description="Seed, check or damage the rehearsal product (never in production).",
    )
    parser.add_argument("--count", type=int, default=0, help="documents to add")
    parser.add_argument("--plaintext", action="store_true", help="add them unencrypted")
    parser.add_argument("--check", action="store_true", help="decrypt every document")
    parser.add_argument("--corrupt", type=int, default=0, metavar="N", help="garble N wraps")
    parser.add_argument("--delete", type=int, default=0, metavar="N", help="delete N DEK rows")
    parser.add_argument("--orphans", type=int, default=0, metavar="N", help="N DEKs, no document")
    args = parser.parse_args(argv)
    try:
        runtime = product.open(load_settings(create_missing=False))
    except FieldEncryptError as exc:
        print(f"rehearsal: {exc}", file=sys.stderr)
        return 3
    try:
        if args.count:
            start = runtime.documents["records"].count()
            seed(runtime, args.count, start=start, encrypt=not args.plaintext)
            print(f"seeded {args.count} documents")
        if args.corrupt:
            print(f"corrupted the wraps of {len(corrupt(runtime, args.corrupt))} DEKs")
        if args.delete:
            print(f"deleted {len(delete(runtime, args.delete))} DEKs")
        for _ in range(args.orphans):
            runtime.encryptor.create_dek()
        if args.orphans:
            print(f"created {args.orphans} DEKs no document refers to")
        if args.check:
            read, wrong = check(runtime)
            print(f"{read} documents read, {wrong} different")
            return 1 if wrong else 0
    finally:
        runtime.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
