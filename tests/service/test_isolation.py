"""Workspaces are walls: another workspace's note answers exactly like a missing note."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from tests.backends import BACKEND_KINDS

from .conftest import auth

pytestmark = pytest.mark.parametrize("store_kind", BACKEND_KINDS, indirect=True)

CreateNote = Callable[..., dict[str, Any]]
MISSING = "0" * 32


def _shape(response: httpx.Response) -> tuple[int, bytes, dict[str, str]]:
    headers = {k: v for k, v in response.headers.items() if k != "x-request-id"}
    return response.status_code, response.content, headers


NOTE_REQUESTS: dict[str, tuple[str, dict[str, Any]]] = {
    "GET": ("GET", {}),
    "PUT with If-Match": ("PUT", {"json": {"title": "x", "body": "y"}, "if_match": '"1"'}),
    "PUT without If-Match": ("PUT", {"json": {"title": "x", "body": "y"}}),
    "PUT with a stale If-Match": ("PUT", {"json": {"title": "x", "body": "y"}, "if_match": '"9"'}),
    "DELETE": ("DELETE", {}),
    "DELETE with If-Match": ("DELETE", {"if_match": '"1"'}),
}


@pytest.mark.parametrize("request_kind", NOTE_REQUESTS.values(), ids=NOTE_REQUESTS.keys())
def test_another_workspaces_note_answers_like_a_missing_one(
    client: TestClient, create_note: CreateNote, request_kind: tuple[str, dict[str, Any]]
) -> None:
    """bob gets byte-identical answers for alice's note and for a note that never existed."""
    method, options = request_kind
    note = create_note(user="alice", workspace="ws-a", title="alice's")
    headers = auth("bob")
    if "if_match" in options:
        headers["If-Match"] = options["if_match"]

    def call(note_id: str) -> httpx.Response:
        return client.request(
            method, f"/api/notes/{note_id}", json=options.get("json"), headers=headers
        )

    foreign, missing = call(note["id"]), call(MISSING)
    assert foreign.status_code == 404
    assert _shape(foreign) == _shape(missing)
    assert foreign.json() == {"error": {"code": "not_found", "message": "note not found"}}
    after = client.get(f"/api/notes/{note['id']}", headers=auth("alice"))
    assert after.status_code == 200 and after.json()["title"] == "alice's"


def test_listing_another_workspace_answers_like_a_missing_workspace(
    client: TestClient, create_note: CreateNote
) -> None:
    """bob listing ws-a gets the same 404 as listing a workspace that does not exist."""
    create_note(user="alice", workspace="ws-a")
    foreign = client.get("/api/notes/", params={"workspaceId": "ws-a"}, headers=auth("bob"))
    missing = client.get("/api/notes/", params={"workspaceId": "ws-none"}, headers=auth("bob"))
    assert foreign.status_code == 404
    assert _shape(foreign) == _shape(missing)


def test_creating_in_another_workspace_answers_like_a_missing_workspace(
    client: TestClient, backend: Any
) -> None:
    """bob cannot create a note in ws-a, and learns nothing about whether it exists."""
    body = {"title": "t", "body": "b"}
    foreign = client.post("/api/notes", json={**body, "workspaceId": "ws-a"}, headers=auth("bob"))
    missing = client.post(
        "/api/notes", json={**body, "workspaceId": "ws-none"}, headers=auth("bob")
    )
    assert foreign.status_code == 404
    assert _shape(foreign) == _shape(missing)
    assert backend.notes.count() == 0
    assert backend.runtime.dek_store.count_by_version() == {}


def test_a_put_body_cannot_move_a_note_to_another_workspace(
    client: TestClient, create_note: CreateNote
) -> None:
    """``workspaceId`` is not part of the PUT body: sending it is refused (422)."""
    note = create_note(user="carol", workspace="ws-a")
    response = client.put(
        f"/api/notes/{note['id']}",
        json={"title": "t", "body": "b", "workspaceId": "ws-b"},
        headers={**auth("carol"), "If-Match": '"1"'},
    )
    assert response.status_code == 422
    assert response.json()["error"]["details"][0]["type"] == "extra_forbidden"
    assert (
        client.get(f"/api/notes/{note['id']}", headers=auth("carol")).json()["workspaceId"]
        == "ws-a"
    )


def test_a_member_of_both_workspaces_sees_each_listing_separately(
    client: TestClient, create_note: CreateNote
) -> None:
    """Listings never mix workspaces, even for a user in both."""
    a = create_note(user="alice", workspace="ws-a")
    b = create_note(user="bob", workspace="ws-b")
    for workspace, expected in (("ws-a", a), ("ws-b", b)):
        page = client.get("/api/notes/", params={"workspaceId": workspace}, headers=auth("carol"))
        assert [n["id"] for n in page.json()["items"]] == [expected["id"]]


def test_a_user_with_no_membership_sees_nothing(
    client: TestClient, create_note: CreateNote
) -> None:
    """A valid token for a stranger opens no workspace and no note."""
    note = create_note()
    assert client.get(f"/api/notes/{note['id']}", headers=auth("mallory")).status_code == 404
    listing = client.get("/api/notes/", params={"workspaceId": "ws-a"}, headers=auth("mallory"))
    assert listing.status_code == 404
