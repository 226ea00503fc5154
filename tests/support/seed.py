"""Seeding the sample product with documents, for tests and the runbook rehearsal."""

from __future__ import annotations

from typing import Any

from field_encrypt.blind_index import BlindIndex
from field_encrypt.index_values import with_index_values
from field_encrypt.products import ProductRuntime


def document(i: int) -> dict[str, Any]:
    """The plaintext of document ``i``."""
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
    """Every document of ``records``, decrypted."""
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


def main() -> None:
    """``python -m tests.support.seed --count N`` seeds; ``--check`` decrypts everything."""
    import argparse
    import sys

    from field_encrypt.config import load_settings
    from tests.support.sample_product import product

    parser = argparse.ArgumentParser(description="Seed or check the sample product.")
    parser.add_argument("--count", type=int, default=0, help="documents to add")
    parser.add_argument("--plaintext", action="store_true", help="add them unencrypted")
    parser.add_argument("--check", action="store_true", help="decrypt every document")
    args = parser.parse_args()
    runtime = product.open(load_settings())
    try:
        if args.count:
            start = runtime.documents["records"].count()
            seed(runtime, args.count, start=start, encrypt=not args.plaintext)
            print(f"seeded {args.count} documents")
        if args.check:
            documents = read_all(runtime)
            wrong = [k for k, v in documents.items() if v != document(int(k.split("-")[1]))]
            print(f"{len(documents)} documents read, {len(wrong)} different")
            sys.exit(1 if wrong else 0)
    finally:
        runtime.close()


if __name__ == "__main__":
    main()
