"""Rows changed in the database are not served: the workspace is bound into every field's
associated data, and plaintext in an encrypted field is refused unless explicitly allowed."""

from __future__ import annotations

import dataclasses
import datetime as dt
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from fastapi.testclient import TestClient

import field_encrypt
from field_encrypt.providers.local import LocalKeyProvider
from notelett import NoteLettSettings, create_app
from notelett.backend import Backend, open_backend
from notelett.binding import document_id, rebind
from notelett.repositories.base import NoteRecord
from tests.backends import BACKEND_KINDS

from .conftest import auth

pytestmark = pytest.mark.parametrize("store_kind", BACKEND_KINDS, indirect=True)

CreateNote = Callable[..., dict[str, Any]]


def _move(backend: Backend, note_id: str, workspace_id: str) -> None:
    """What ``update notes set workspace_id = ...`` does: the same row, tokens and DEK, in
    another workspace (done through the repository, so on every store)."""
    record = backend.notes.get(note_id)
    backend.notes.mark_deleting(note_id, expected_revision=None)
    backend.notes.remove(note_id)
    backend.notes.insert(dataclasses.replace(record, workspace_id=workspace_id, deleting=False))


def _write_fields(backend: Backend, note_id: str, title: object, body: object) -> None:
    record = backend.notes.get(note_id)
    backend.notes.replace(
        note_id,
        expected_revision=record.revision,
        title=title,  # type: ignore[arg-type]
        body=body,  # type: ignore[arg-type]
        tags=record.tags,
        dek_id=record.dek_id,
        updated_at=record.updated_at,
    )


def _legacy_note(
    backend: Backend, workspace_id: str, title: str, tags: tuple[str, ...] = ()
) -> str:
    """A note sealed the way NoteLett did before the workspace binding (bare note id)."""
    note_id = uuid.uuid4().hex
    encryptor = backend.encryptor
    dek_id = encryptor.create_dek()
    sealed = encryptor.encrypt_document(
        "notes", note_id, {"title": title, "body": "old body"}, dek_id=dek_id
    )
    now = dt.datetime.now(dt.UTC)
    backend.notes.insert(
        NoteRecord(
            id=note_id,
            workspace_id=workspace_id,
            title=sealed["title"],
            body=sealed["body"],
            tags=tags,
            dek_id=dek_id,
            revision=1,
            created_at=now,
            updated_at=now,
        )
    )
    return note_id


def test_a_note_moved_to_another_workspace_in_the_database_is_not_served(
    client: TestClient, backend: Backend, create_note: CreateNote
) -> None:
    """ws-a's note moved to ws-b by a database write: bob (ws-b) gets no content (a 500 on
    read, an error item in the listing), never ws-a's plaintext."""
    note = create_note(title="ws-a secret", body="ws-a body")
    _move(backend, note["id"], "ws-b")
    read = client.get(f"/api/notes/{note['id']}", headers=auth("bob"))
    assert read.status_code == 500
    assert "ws-a secret" not in read.text
    listing = client.get("/api/notes/", params={"workspaceId": "ws-b"}, headers=auth("bob"))
    assert listing.status_code == 200
    assert listing.json()["items"] == []
    assert listing.json()["errors"] == [{"id": note["id"], "code": "note_unreadable"}]
    _move(backend, note["id"], "ws-a")  # moved back, it opens again
    assert client.get(f"/api/notes/{note['id']}", headers=auth()).json()["title"] == "ws-a secret"


def test_plaintext_written_into_an_encrypted_field_is_refused_by_default(
    client: TestClient, backend: Backend, create_note: CreateNote
) -> None:
    """``update notes set title = 'INJECTED'``: not served (500), since plaintext is refused
    unless FIELD_ENCRYPT_ALLOW_PLAINTEXT is set."""
    note = create_note()
    _write_fields(backend, note["id"], "INJECTED", "INJECTED")
    read = client.get(f"/api/notes/{note['id']}", headers=auth())
    assert read.status_code == 500
    assert "INJECTED" not in read.text
    assert backend.encryptor.allow_plaintext is False


def test_plaintext_is_read_only_with_the_explicit_backfill_setting(
    settings: NoteLettSettings, backend: Backend, create_note: CreateNote, encryption: Any
) -> None:
    """With FIELD_ENCRYPT_ALLOW_PLAINTEXT=true (a backfill), plaintext rows are served."""
    note = create_note()
    _write_fields(backend, note["id"], "plain title", "plain body")
    lenient = open_backend(
        encryption.model_copy(update={"allow_plaintext": True}), settings, provider=None
    )
    try:
        assert lenient.encryptor.allow_plaintext is True
        with TestClient(create_app(settings, backend=lenient)) as http:
            read = http.get(f"/api/notes/{note['id']}", headers=auth())
        assert read.status_code == 200 and read.json()["title"] == "plain title"
    finally:
        lenient.close()


def test_legacy_notes_need_the_setting_until_rebind_binds_them(
    settings: NoteLettSettings, backend: Backend, client: TestClient
) -> None:
    """A note sealed before the binding: unreadable by default, readable with
    NOTELETT_LEGACY_NOTE_BINDING; rebind re-seals it (same DEK), after which it reads
    without the setting and a move breaks it; a second rebind has nothing to do."""
    note_id = _legacy_note(backend, "ws-a", "legacy title")
    dek_id = backend.notes.get(note_id).dek_id
    assert client.get(f"/api/notes/{note_id}", headers=auth()).status_code == 500
    legacy = settings.model_copy(update={"legacy_note_binding": True})
    with TestClient(create_app(legacy, backend=backend)) as http:
        read = http.get(f"/api/notes/{note_id}", headers=auth())
        assert read.status_code == 200 and read.json()["title"] == "legacy title"
        listing = http.get("/api/notes/", params={"workspaceId": "ws-a"}, headers=auth())
        assert [n["id"] for n in listing.json()["items"]] == [note_id]

    report = rebind(backend.encryptor, backend.notes)
    assert (report.scanned, report.rebound, report.failed) == (1, 1, [])
    record = backend.notes.get(note_id)
    assert record.dek_id == dek_id
    opened = backend.encryptor.decrypt_document(
        "notes", document_id("ws-a", note_id), {"title": record.title, "body": record.body}
    )
    assert opened["title"] == "legacy title"
    assert client.get(f"/api/notes/{note_id}", headers=auth()).json()["title"] == "legacy title"
    again = rebind(backend.encryptor, backend.notes)
    assert (again.rebound, again.already_bound) == (0, 1)
    _move(backend, note_id, "ws-b")
    assert client.get(f"/api/notes/{note_id}", headers=auth("bob")).status_code == 500


def test_rebind_reports_notes_that_open_under_neither_binding(
    backend: Backend, create_note: CreateNote
) -> None:
    """A tampered note is named in the report's failures, and nothing else is written."""
    good = create_note()["id"]
    bad = create_note()["id"]
    record = backend.notes.get(bad)
    assert isinstance(record.title, bytes)
    _write_fields(backend, bad, record.title[:-1] + bytes([record.title[-1] ^ 1]), record.body)
    report = rebind(backend.encryptor, backend.notes)
    assert report.failed == [bad]
    assert (report.scanned, report.already_bound, report.rebound) == (2, 1, 0)
    assert backend.notes.get(good).revision == 1


def test_rebind_seals_and_indexes_plaintext_tags(
    settings: NoteLettSettings,
    encryption: field_encrypt.Settings,
    provider: LocalKeyProvider,
    backend: Backend,
    client: TestClient,
) -> None:
    """A legacy note whose tags are still plaintext, rebound with plaintext allowed (as the
    docs say): its tags are sealed and indexed in the same write, so ``?tag=`` finds it."""
    note_id = _legacy_note(backend, "ws-a", "legacy", tags=("legacy-tag-4d2b",))
    allowing = open_backend(
        encryption.model_copy(update={"allow_plaintext": True}), settings, provider=provider
    )
    try:
        report = rebind(allowing.encryptor, allowing.notes)
    finally:
        allowing.close()
    assert (report.rebound, report.failed) == (1, [])
    assert isinstance(backend.notes.get(note_id).tags, bytes)
    found = client.get(
        "/api/notes/", params={"workspaceId": "ws-a", "tag": "legacy-tag-4d2b"}, headers=auth()
    )
    assert [n["id"] for n in found.json()["items"]] == [note_id]
    assert found.json()["items"][0]["tags"] == ["legacy-tag-4d2b"]
