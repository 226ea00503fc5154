"""The DocumentStore contract, written once; every generic document store runs it.

The stores are SQLite, PostgreSQL and Cosmos DB (see ``open_collection`` in conftest.py).
``insert`` and ``delete`` are not in the protocol (migrations only read and replace), but every
generic store has them, so the suite uses them to set the scene.
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from field_encrypt.documents import (
    BatchDocumentStore,
    DocumentStore,
    DocumentWrite,
    StoredDocument,
)
from field_encrypt.errors import AlreadyExistsError, ConcurrentUpdateError, NotFoundError
from tests.contract.conftest import OpenCollection


def _insert(store: Any, fields: dict[str, Any] | None = None, dek_id: str | None = None) -> Any:
    return store.insert(f"doc-{uuid.uuid4().hex}", fields or {"title": "t"}, dek_id)


def _all(store: DocumentStore, **filters: Any) -> list[StoredDocument]:
    out: list[StoredDocument] = []
    cursor = None
    while True:
        page = store.scan(cursor=cursor, limit=6, **filters)
        out += page.documents
        if page.cursor is None:
            return out
        cursor = page.cursor


def test_is_a_document_store(open_collection: OpenCollection) -> None:
    """The store satisfies the runtime-checkable protocol and names its collection."""
    store = open_collection("notes")
    assert isinstance(store, DocumentStore)
    assert store.collection == "notes"


def test_insert_then_get_round_trips_json(open_collection: OpenCollection) -> None:
    """A document reads back with its nested fields, its dekId and its revision."""
    store: Any = open_collection("notes")
    fields = {"title": "ünïcode ✓", "meta": {"secret": "fe1.x", "n": 3, "tags": ["a", None]}}
    inserted = store.insert("note-1", fields, "ab" * 16)
    got = store.get("note-1")
    assert got == inserted
    assert (got.fields, got.dek_id) == (fields, "ab" * 16)


def test_insert_twice_is_refused(open_collection: OpenCollection) -> None:
    """A document id is unique within its collection."""
    store: Any = open_collection("notes")
    store.insert("note-1", {"title": "first"}, None)
    with pytest.raises(AlreadyExistsError):
        store.insert("note-1", {"title": "second"}, None)
    assert store.get("note-1").fields == {"title": "first"}


def test_missing_document_is_not_found(open_collection: OpenCollection) -> None:
    """Reading an id that is not there raises NotFoundError."""
    with pytest.raises(NotFoundError):
        open_collection("notes").get("no-such-note")


def test_replace_fields_is_compare_and_swap(open_collection: OpenCollection) -> None:
    """A replacement applies to an unchanged document; a stale writer gets ConcurrentUpdateError."""
    store: Any = open_collection("notes")
    original = _insert(store, {"title": "plain"})
    replaced = store.replace_fields(original, {"title": "fe1.token"}, "cd" * 16)
    assert replaced.revision != original.revision
    assert store.get(original.id) == replaced
    with pytest.raises(ConcurrentUpdateError):
        store.replace_fields(original, {"title": "stale"}, None)
    assert store.get(original.id).fields == {"title": "fe1.token"}
    again = store.replace_fields(replaced, {"title": "plain"}, None)
    assert store.get(original.id) == again


def test_replace_of_a_deleted_document_is_not_found(open_collection: OpenCollection) -> None:
    """Replacing a document deleted meanwhile raises NotFoundError and does not recreate it."""
    store: Any = open_collection("notes")
    doc = _insert(store)
    assert store.delete(doc.id) is True
    assert store.delete(doc.id) is False
    with pytest.raises(NotFoundError):
        store.replace_fields(doc, {"title": "x"}, None)
    with pytest.raises(NotFoundError):
        store.get(doc.id)


def test_replace_many_is_compare_and_swap_per_document(open_collection: OpenCollection) -> None:
    """A batch writes the documents unchanged since read and names the others (changed or
    deleted meanwhile), which it leaves as they are (a deleted one is not recreated)."""
    store: Any = open_collection("notes")
    assert isinstance(store, BatchDocumentStore)
    docs = [_insert(store, {"title": f"t{i}"}) for i in range(5)]
    changed = store.replace_fields(docs[1], {"title": "theirs"}, None)
    assert store.delete(docs[3].id) is True
    lost = store.replace_many(
        [DocumentWrite(d, {"title": f"ours{i}"}, "ab" * 16) for i, d in enumerate(docs)]
    )
    assert sorted(lost) == sorted([docs[1].id, docs[3].id])
    for i in (0, 2, 4):
        got = store.get(docs[i].id)
        assert (got.fields, got.dek_id) == ({"title": f"ours{i}"}, "ab" * 16)
        assert got.revision != docs[i].revision
    assert store.get(docs[1].id) == changed
    with pytest.raises(NotFoundError):
        store.get(docs[3].id)
    fresh = [store.get(docs[i].id) for i in (0, 2)]
    assert store.replace_many([DocumentWrite(d, {"title": "x"}, None) for d in fresh]) == []
    assert [store.get(d.id).fields for d in fresh] == [{"title": "x"}] * 2
    assert store.replace_many([]) == []


def test_scan_pages_cover_every_document_once(open_collection: OpenCollection) -> None:
    """Keyset pages return each document exactly once, and the last page ends the scan."""
    store: Any = open_collection("notes")
    ids = {_insert(store).id for _ in range(20)}
    seen = [d.id for d in _all(store)]
    assert sorted(seen) == sorted(ids)


def test_scan_survives_replacements_behind_the_cursor(open_collection: OpenCollection) -> None:
    """Replacing the documents already scanned neither repeats nor skips any of the others."""
    store: Any = open_collection("notes")
    ids = {_insert(store).id for _ in range(20)}
    seen: list[str] = []
    cursor = None
    while True:
        page = store.scan(cursor=cursor, limit=4)
        for doc in page.documents:
            seen.append(doc.id)
            store.replace_fields(doc, {"title": "rewritten"}, None)
        if page.cursor is None:
            break
        cursor = page.cursor
    assert sorted(seen) == sorted(ids)


def test_scan_shards_split_the_documents(open_collection: OpenCollection) -> None:
    """Shards of a scan are disjoint and together hold every document."""
    store: Any = open_collection("notes")
    ids = {_insert(store).id for _ in range(30)}
    parts = [{d.id for d in _all(store, shard=(i, 3))} for i in range(3)]
    assert set().union(*parts) == ids
    assert sum(len(p) for p in parts) == len(ids)


def test_collections_are_separate(open_collection: OpenCollection) -> None:
    """Two collections in one database see only their own documents, even with equal ids."""
    notes: Any = open_collection("notes")
    drafts: Any = open_collection("drafts")
    notes.insert("same-id", {"title": "note"}, None)
    drafts.insert("same-id", {"title": "draft"}, None)
    _insert(notes)
    assert (notes.count(), drafts.count()) == (2, 1)
    assert drafts.get("same-id").fields == {"title": "draft"}
    assert [d.id for d in _all(drafts)] == ["same-id"]


def test_count(open_collection: OpenCollection) -> None:
    """count says how many documents the collection holds."""
    store: Any = open_collection("notes")
    assert store.count() == 0
    for _ in range(5):
        _insert(store)
    assert store.count() == 5
