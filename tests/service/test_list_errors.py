"""A list page with a note that fails to decrypt still serves the others."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import pytest
from fastapi.testclient import TestClient

from notelett.backend import Backend
from tests.backends import BACKEND_KINDS
from tests.support.note_damage import lose_dek, tamper_title

from .conftest import auth

pytestmark = pytest.mark.parametrize("store_kind", BACKEND_KINDS, indirect=True)

CreateNote = Callable[..., dict[str, Any]]


def test_a_tampered_note_is_an_error_item_and_the_rest_of_the_page_serves(
    client: TestClient,
    backend: Backend,
    create_note: CreateNote,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """limit=3 with one tampered note: 200, two notes, one error item (id and code only),
    counted in the metric and logged with its dekId."""
    ids = [create_note(title=f"secret title {i}")["id"] for i in range(4)]
    bad = ids[2]
    dek_id = tamper_title(backend, bad)
    with caplog.at_level(logging.ERROR, logger="notelett"):
        page = client.get("/api/notes/", params={"workspaceId": "ws-a", "limit": 3}, headers=auth())
    assert page.status_code == 200, page.text
    body = page.json()
    assert [n["id"] for n in body["items"]] == [ids[3], ids[1]]
    assert body["errors"] == [{"id": bad, "code": "note_unreadable"}]
    assert "secret title 2" not in page.text and str(dek_id) not in page.text
    logged = [  # the service's own line (a DEBUG run also has SDK lines naming the id)
        r.getMessage()
        for r in caplog.records
        if r.name == "notelett" and r.levelno >= logging.ERROR and bad in r.getMessage()
    ]
    assert len(logged) == 1 and f"dekId={dek_id}" in logged[0]
    rest = client.get(
        "/api/notes/",
        params={"workspaceId": "ws-a", "cursor": body["nextCursor"]},
        headers=auth(),
    )
    assert [n["id"] for n in rest.json()["items"]] == [ids[0]]
    assert rest.json()["errors"] == []
    assert "notelett_decrypt_failures_total 1.0" in client.get("/metrics").text


def test_a_note_whose_dek_is_missing_is_an_error_item(
    client: TestClient, backend: Backend, create_note: CreateNote
) -> None:
    """A live row whose DEK was lost is named in errors; the other notes serve."""
    good = create_note(title="fine")["id"]
    lost = create_note(title="lost")["id"]
    lose_dek(backend, lost)
    page = client.get("/api/notes/", params={"workspaceId": "ws-a"}, headers=auth())
    assert page.status_code == 200, page.text
    assert [n["id"] for n in page.json()["items"]] == [good]
    assert page.json()["errors"] == [{"id": lost, "code": "note_unreadable"}]


def test_a_clean_page_has_an_empty_errors_list(client: TestClient, create_note: CreateNote) -> None:
    """Every listing carries ``errors``, empty when every note opened."""
    create_note()
    page = client.get("/api/notes/", params={"workspaceId": "ws-a"}, headers=auth())
    assert page.json()["errors"] == []


def test_the_openapi_document_shows_the_errors_list_and_the_503s(client: TestClient) -> None:
    """listNotes' 200 schema has ``errors`` of ``{id, code}``; every write documents its 503
    (database unavailable or no write slot) with Retry-After."""
    document = client.get("/openapi.json").json()
    schemas = document["components"]["schemas"]
    assert "errors" in schemas["NoteListOut"]["properties"]
    assert set(schemas["NoteErrorOut"]["properties"]) == {"id", "code"}
    assert schemas["NoteErrorOut"]["properties"]["code"]["const"] == "note_unreadable"
    for path, method in (
        ("/api/notes", "post"),
        ("/api/notes/{note_id}", "put"),
        ("/api/notes/{note_id}", "delete"),
    ):
        unavailable = document["paths"][path][method]["responses"]["503"]
        assert "Retry-After" in unavailable["headers"]
        assert "write slot" in unavailable["description"]
