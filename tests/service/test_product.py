"""NoteLett as a field-encrypt product: the registry finds it, its DocumentStore works."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from field_encrypt import ConcurrentUpdateError, NotFoundError, load_settings
from field_encrypt.backends.sqlite.db import SqliteDatabase
from field_encrypt.documents import DocumentStore
from field_encrypt.products import load_product
from notelett import NoteLettSettings
from notelett.backend import Backend
from notelett.binding import document_id
from tests.support.fixtures import on_every_store

from .conftest import add_members, auth

CreateNote = Callable[..., dict[str, Any]]


def test_the_entry_point_opens_a_runtime_on_the_notes_table(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``load_product("notelett").open(settings)`` gives notes, dek_store and database."""
    monkeypatch.setenv("NOTELETT_DATABASE", str(tmp_path / "n.db"))
    product = load_product("notelett")
    assert product.name == "notelett"
    assert dict(product.collections) == {"notes": ["title", "body", "tags"]}
    assert [(f.collection, f.path) for f in product.indexed] == [("notes", "tags")]
    runtime = product.open(load_settings(environ={}, keyring=str(tmp_path / "k.json")))
    try:
        assert isinstance(runtime.documents["notes"], DocumentStore)
        assert isinstance(runtime.database, SqliteDatabase)
        assert runtime.database.path == str(tmp_path / "n.db")
        assert runtime.encryptor.token_form == "binary"
        assert "notelett_0002_notes" in runtime.database.applied_migrations()
        assert list(runtime.indexed) == list(product.indexed)
    finally:
        runtime.close()


def test_field_encrypt_database_is_used_when_notelett_has_none(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without NOTELETT_DATABASE the product uses FIELD_ENCRYPT_DATABASE."""
    monkeypatch.delenv("NOTELETT_DATABASE", raising=False)
    product = load_product("notelett")
    settings = load_settings(
        environ={}, keyring=str(tmp_path / "k.json"), database=str(tmp_path / "fe.db")
    )
    runtime = product.open(settings)
    try:
        assert runtime.database.path == str(tmp_path / "fe.db")
    finally:
        runtime.close()


@on_every_store
def test_document_store_scans_and_replaces_with_compare_and_swap(
    client: TestClient, backend: Backend, create_note: CreateNote
) -> None:
    """scan walks live notes; replace_fields re-seals under a new DEK, CAS on revision."""
    ids = {create_note(title=f"n{i}")["id"] for i in range(5)}
    doomed = create_note(title="doomed")["id"]
    backend.notes.mark_deleting(doomed, expected_revision=None)
    documents = backend.runtime.documents["notes"]
    assert documents.count() == 5
    seen, cursor = set(), None
    while True:
        page = documents.scan(cursor=cursor, limit=2)
        seen |= {d.id for d in page.documents}
        if page.cursor is None:
            break
        cursor = page.cursor
    assert seen == {document_id("ws-a", i) for i in ids}  # bound to the workspace
    with pytest.raises(NotFoundError):
        documents.get(document_id("ws-a", doomed))

    # What a re-encrypt does: open under the old DEK, seal under a new one, swap.
    note_id = sorted(ids)[0]
    stored = documents.get(document_id("ws-a", note_id))
    encryptor = backend.encryptor
    plain = encryptor.decrypt_document("notes", stored.id, stored.fields)
    new_dek = encryptor.create_dek()
    sealed = encryptor.encrypt_document("notes", stored.id, plain, dek_id=new_dek)
    documents.replace_fields(stored, sealed, new_dek)
    with pytest.raises(ConcurrentUpdateError):
        documents.replace_fields(stored, sealed, new_dek)
    response = client.get(f"/api/notes/{note_id}", headers=auth())
    assert response.status_code == 200
    assert response.json()["title"] == plain["title"]
    assert backend.notes.get(note_id).dek_id == new_dek


@on_every_store
def test_add_members_is_idempotent(backend: Backend) -> None:
    """Seeding the directory twice changes nothing."""
    add_members(backend)
    assert backend.directory.is_member("carol", "ws-b")
    assert not backend.directory.is_member("alice", "ws-b")


def test_only_the_serving_app_watches_the_key_state(
    backend: Backend, settings: NoteLettSettings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The product's runtime the CLI opens watches nothing, nor does a backend; the app,
    once it serves (its lifespan), watches the key-state epoch on a thread, stopped when
    the backend closes."""
    from notelett.app import create_app

    monkeypatch.setenv("NOTELETT_DATABASE", str(tmp_path / "n.db"))
    runtime = load_product("notelett").open(
        load_settings(environ={}, keyring=str(tmp_path / "k.json"))
    )
    try:
        assert runtime.key_epoch is None
    finally:
        runtime.close()
    assert backend.runtime.key_epoch is None
    with TestClient(create_app(settings, backend=backend)):
        watcher = backend.runtime.key_epoch
        assert watcher is not None
        thread = watcher._poller.thread
        assert thread is not None and thread.is_alive()
    backend.close()
    assert not thread.is_alive()
