"""Seeding the sample product with documents, for tests and the runbook rehearsal."""

from __future__ import annotations

from typing import Any

from field_encrypt.products import ProductRuntime
from field_encrypt.stores.sqlite_documents import SqliteDocumentStore


def document(i: int) -> dict[str, Any]:
    """The plaintext of document ``i``."""
    return {"name": f"person {i}", "ssn": f"{i:03d}-45-6789", "profile": {"note": f"note {i}"}}


def seed(runtime: ProductRuntime, count: int, *, start: int = 0, encrypt: bool = True) -> None:
    """Insert documents ``doc-{start}`` .. ``doc-{start + count - 1}`` into ``records``."""
    docs = runtime.documents["records"]
    assert isinstance(docs, SqliteDocumentStore)
    for i in range(start, start + count):
        doc_id = f"doc-{i}"
        if encrypt:
            dek_id = runtime.encryptor.create_dek()
            fields = runtime.encryptor.encrypt_document(
                "records", doc_id, document(i), dek_id=dek_id
            )
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
