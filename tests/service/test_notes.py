"""CRUD, pagination, optimistic concurrency and crypto-shredding through the HTTP API."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from fastapi.testclient import TestClient

from field_encrypt import NotFoundError
from notelett import create_app
from notelett.backend import Backend
from notelett.service import NotesService
from tests.backends import BACKEND_KINDS

from .conftest import auth

pytestmark = pytest.mark.parametrize("store_kind", BACKEND_KINDS, indirect=True)

CreateNote = Callable[..., dict[str, Any]]


def test_create_then_read_returns_the_plaintext_note(
    client: TestClient, create_note: CreateNote
) -> None:
    """A created note reads back with the same title, body and tags, and an ETag."""
    note = create_note(title="Groceries", body="eggs, milk", tags=["home", "todo"])
    response = client.get(f"/api/notes/{note['id']}", headers=auth())
    assert response.status_code == 200
    assert response.headers["etag"] == '"1"'
    got = response.json()
    assert got == note
    assert (got["workspaceId"], got["title"], got["body"], got["tags"]) == (
        "ws-a",
        "Groceries",
        "eggs, milk",
        ["home", "todo"],
    )
    assert set(got) == {
        "id", "workspaceId", "title", "body", "tags", "revision", "createdAt", "updatedAt"
    }  # fmt: skip


def test_title_and_body_are_stored_as_binary_tokens_under_one_dek(
    backend: Backend, create_note: CreateNote
) -> None:
    """The database holds tokens, never the plaintext, and the row names the note's DEK."""
    note = create_note(title="secret title", body="secret body")
    record = backend.notes.get(note["id"])
    assert isinstance(record.title, bytes) and isinstance(record.body, bytes)
    assert b"secret" not in record.title + record.body
    assert record.dek_id is not None
    assert backend.runtime.dek_store.get(record.dek_id).mek_version == "1"
    assert backend.encryptor.dek_id_of("notes", {"title": record.title}) == record.dek_id


def test_put_with_matching_if_match_replaces_and_bumps_the_etag(
    client: TestClient, backend: Backend, create_note: CreateNote
) -> None:
    """PUT with the current ETag replaces the content, keeps the DEK, and moves the ETag."""
    note = create_note()
    dek_before = backend.notes.get(note["id"]).dek_id
    response = client.put(
        f"/api/notes/{note['id']}",
        json={"title": "new", "body": "newer", "tags": ["x"]},
        headers={**auth(), "If-Match": '"1"'},
    )
    assert response.status_code == 200, response.text
    assert response.headers["etag"] == '"2"'
    assert response.json()["title"] == "new"
    assert response.json()["revision"] == 2
    assert client.get(f"/api/notes/{note['id']}", headers=auth()).json()["body"] == "newer"
    assert backend.notes.get(note["id"]).dek_id == dek_before


def test_put_with_a_stale_etag_answers_412(client: TestClient, create_note: CreateNote) -> None:
    """A second writer holding the old ETag loses with 412 and changes nothing."""
    note = create_note(title="first")
    path = f"/api/notes/{note['id']}"
    ok = client.put(path, json={"title": "a", "body": "b"}, headers={**auth(), "If-Match": '"1"'})
    assert ok.status_code == 200
    stale = client.put(
        path, json={"title": "z", "body": "z"}, headers={**auth(), "If-Match": '"1"'}
    )
    assert stale.status_code == 412
    assert stale.json()["error"]["code"] == "precondition_failed"
    assert client.get(path, headers=auth()).json()["title"] == "a"


def test_put_without_if_match_answers_428(client: TestClient, create_note: CreateNote) -> None:
    """PUT requires If-Match: a blind overwrite is refused with 428."""
    note = create_note()
    response = client.put(
        f"/api/notes/{note['id']}", json={"title": "a", "body": "b"}, headers=auth()
    )
    assert response.status_code == 428
    assert response.json()["error"]["code"] == "precondition_required"


def test_weak_etag_does_not_match_and_star_does(
    client: TestClient, create_note: CreateNote
) -> None:
    """If-Match uses strong comparison: ``W/"1"`` fails, ``*`` matches any existing note."""
    note = create_note()
    path = f"/api/notes/{note['id']}"
    body = {"title": "a", "body": "b"}
    assert client.put(path, json=body, headers={**auth(), "If-Match": 'W/"1"'}).status_code == 412
    assert (
        client.put(path, json=body, headers={**auth(), "If-Match": '"9", "1"'}).status_code == 200
    )
    assert client.put(path, json=body, headers={**auth(), "If-Match": "*"}).status_code == 200


def test_delete_shreds_the_dek_then_the_note_is_gone(
    client: TestClient, backend: Backend, create_note: CreateNote
) -> None:
    """DELETE answers 204, removes the DEK from the dek_store and the row from the notes."""
    note = create_note()
    dek_id = backend.notes.get(note["id"]).dek_id
    assert dek_id is not None
    response = client.delete(f"/api/notes/{note['id']}", headers=auth())
    assert response.status_code == 204
    assert response.content == b""
    assert client.get(f"/api/notes/{note['id']}", headers=auth()).status_code == 404
    assert backend.runtime.dek_store.get_many([dek_id]) == {}
    assert backend.notes.pending_deletes(limit=10) == []
    assert client.delete(f"/api/notes/{note['id']}", headers=auth()).status_code == 404


def test_delete_with_a_stale_if_match_answers_412(
    client: TestClient, create_note: CreateNote
) -> None:
    """DELETE honours If-Match when given: a stale ETag keeps the note."""
    note = create_note()
    path = f"/api/notes/{note['id']}"
    assert client.delete(path, headers={**auth(), "If-Match": '"7"'}).status_code == 412
    assert client.get(path, headers=auth()).status_code == 200
    assert client.delete(path, headers={**auth(), "If-Match": '"1"'}).status_code == 204


def test_a_delete_interrupted_after_marking_is_hidden_and_finished_later(
    client: TestClient, backend: Backend, create_note: CreateNote
) -> None:
    """A crash after step 1 leaves a hidden note; finish_deletes shreds its DEK and row."""
    note = create_note()
    marked = backend.notes.mark_deleting(note["id"], expected_revision=1)
    assert client.get(f"/api/notes/{note['id']}", headers=auth()).status_code == 404
    listing = client.get("/api/notes/", params={"workspaceId": "ws-a"}, headers=auth())
    assert listing.json()["items"] == []
    service = NotesService(
        encryptor=backend.encryptor, notes=backend.notes, directory=backend.directory
    )
    assert service.finish_deletes() == 1
    assert marked.dek_id is not None
    assert backend.runtime.dek_store.get_many([marked.dek_id]) == {}
    assert backend.notes.pending_deletes(limit=10) == []


def test_a_delete_interrupted_after_shredding_is_finished_at_startup(
    settings: Any, backend: Backend, create_note: CreateNote
) -> None:
    """A crash between shred and row delete: the next app start removes the row."""
    note = create_note()
    marked = backend.notes.mark_deleting(note["id"], expected_revision=None)
    assert marked.dek_id is not None
    backend.encryptor.shred(marked.dek_id)
    with TestClient(create_app(settings, backend=backend)):
        pass
    with pytest.raises(NotFoundError):
        backend.notes.get(note["id"])
    assert backend.notes.pending_deletes(limit=10) == []


def test_listing_pages_newest_first_with_an_opaque_cursor(
    client: TestClient, create_note: CreateNote
) -> None:
    """Pages of ``limit`` notes cover the workspace exactly once, newest first."""
    created = [create_note(title=f"n{i}")["id"] for i in range(7)]
    create_note(user="bob", workspace="ws-b", title="other")
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        params: dict[str, Any] = {"workspaceId": "ws-a", "limit": 3}
        if cursor:
            params["cursor"] = cursor
        response = client.get("/api/notes/", params=params, headers=auth())
        assert response.status_code == 200, response.text
        page = response.json()
        seen += [n["id"] for n in page["items"]]
        pages += 1
        cursor = page["nextCursor"]
        if cursor is None:
            break
        assert not cursor.isdigit()
    assert pages == 3
    assert seen == list(reversed(created))


def test_listing_defaults_to_50_and_an_exact_last_page_has_no_cursor(
    client: TestClient, create_note: CreateNote
) -> None:
    """Without ``limit`` a page holds up to 50; a full last page does not promise more."""
    for i in range(4):
        create_note(title=f"n{i}")
    page = client.get("/api/notes/", params={"workspaceId": "ws-a", "limit": 4}, headers=auth())
    assert len(page.json()["items"]) == 4
    assert page.json()["nextCursor"] is None
    default = client.get("/api/notes/", params={"workspaceId": "ws-a"}, headers=auth())
    assert len(default.json()["items"]) == 4


def test_tags_are_kept_in_order(client: TestClient, create_note: CreateNote) -> None:
    """Tags are stored as given (they are not encrypted, and not reordered)."""
    note = create_note(tags=["b", "a"])
    assert client.get(f"/api/notes/{note['id']}", headers=auth()).json()["tags"] == ["b", "a"]
