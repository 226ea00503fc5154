"""Bad input answers a clear 4xx with the JSON error shape, and changes nothing."""

from __future__ import annotations

import base64
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from notelett.backend import Backend

from .conftest import auth

CreateNote = Callable[..., dict[str, Any]]
GOOD = {"workspaceId": "ws-a", "title": "t", "body": "b"}


def _post(client: TestClient, content: bytes, content_type: str = "application/json") -> Any:
    return client.post(
        "/api/notes", content=content, headers={**auth(), "Content-Type": content_type}
    )


def test_body_above_the_limit_answers_413(client: TestClient, backend: Backend) -> None:
    """A body over NOTELETT_MAX_BODY_BYTES (4096 here) is refused before it is parsed."""
    response = _post(client, b'{"title": "' + b"x" * 5000 + b'"}')
    assert response.status_code == 413
    assert response.json() == {
        "error": {"code": "payload_too_large", "message": "the request body is too large"}
    }
    assert backend.notes.count() == 0


def test_chunked_body_above_the_limit_answers_413(client: TestClient) -> None:
    """Without Content-Length the body is counted as it arrives."""

    def chunks() -> Iterator[bytes]:
        for _ in range(10):
            yield b"x" * 1000

    response = client.post(
        "/api/notes", content=chunks(), headers={**auth(), "Content-Type": "application/json"}
    )
    assert response.status_code == 413


def test_body_at_the_limit_is_accepted(client: TestClient) -> None:
    """The limit is inclusive: exactly max_body_bytes is read and parsed."""
    head = b'{"workspaceId": "ws-a", "title": "t", "body": "'
    tail = b'"}'
    content = head + b"y" * (4096 - len(head) - len(tail)) + tail
    assert len(content) == 4096
    assert _post(client, content).status_code == 201


@pytest.mark.parametrize(
    "content",
    [b"{", b'{"title": "t",}', b"\xff\xfe", b"{'single': 'quotes'}", b'{"a": 1} trailing'],
    ids=["unterminated", "trailing comma", "not utf-8", "single quotes", "trailing data"],
)
def test_malformed_json_answers_400(client: TestClient, content: bytes) -> None:
    """Bytes that are not JSON answer 400 ``malformed_json``."""
    response = _post(client, content)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["code"] == "malformed_json"


@pytest.mark.parametrize(
    ("body", "where", "kind"),
    [
        ({**GOOD, "title": 1}, ["body", "title"], "string_type"),
        ({**GOOD, "body": None}, ["body", "body"], "string_type"),
        ({**GOOD, "tags": "work"}, ["body", "tags"], "list_type"),
        ({**GOOD, "tags": [1]}, ["body", "tags", "0"], "string_type"),
        ({**GOOD, "tags": [""]}, ["body", "tags", "0"], "string_too_short"),
        ({**GOOD, "tags": ["t"] * 33}, ["body", "tags"], "too_long"),
        ({**GOOD, "workspaceId": 7}, ["body", "workspaceId"], "string_type"),
        ({**GOOD, "title": "x" * 1001}, ["body", "title"], "string_too_long"),
        ({**GOOD, "id": "chosen"}, ["body", "id"], "extra_forbidden"),
        ({**GOOD, "workspace_id": "ws-a"}, ["body", "workspace_id"], "extra_forbidden"),
        ({"title": "t", "body": "b"}, ["body", "workspaceId"], "missing"),
        ([GOOD], ["body"], "model_attributes_type"),
    ],
    ids=[
        "title int", "body null", "tags string", "tag int", "tag empty", "too many tags",
        "workspace int", "title too long", "unknown id", "snake_case name",
        "missing workspace", "array body",
    ],
)  # fmt: skip
def test_wrong_shapes_answer_422_naming_the_field(
    client: TestClient, backend: Backend, body: Any, where: list[str], kind: str
) -> None:
    """Wrong types, unknown fields and missing fields answer 422 with the offending path."""
    response = client.post("/api/notes", json=body, headers=auth())
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == "invalid_request"
    assert {"loc": where, "type": kind}.items() <= error["details"][0].items()
    assert backend.notes.count() == 0


def test_put_with_unknown_fields_answers_422(client: TestClient, create_note: CreateNote) -> None:
    """PUT forbids unknown fields too (``revision`` cannot be set by the client)."""
    note = create_note()
    response = client.put(
        f"/api/notes/{note['id']}",
        json={"title": "t", "body": "b", "revision": 5},
        headers={**auth(), "If-Match": '"1"'},
    )
    assert response.status_code == 422


@pytest.mark.parametrize("limit", ["0", "201", "-1", "ten"])
def test_listing_limit_is_bounded(client: TestClient, limit: str) -> None:
    """``limit`` must be 1..200."""
    response = client.get(
        "/api/notes/", params={"workspaceId": "ws-a", "limit": limit}, headers=auth()
    )
    assert response.status_code == 422
    assert response.json()["error"]["details"][0]["loc"] == ["query", "limit"]


def test_listing_requires_a_workspace(client: TestClient) -> None:
    """``workspaceId`` is required."""
    response = client.get("/api/notes/", headers=auth())
    assert response.status_code == 422
    assert response.json()["error"]["details"][0]["loc"] == ["query", "workspaceId"]


@pytest.mark.parametrize(
    "cursor",
    ["%%%", "bm90LWEtY3Vyc29y", base64.urlsafe_b64encode(b"n1:abc").decode(), "_-_-"],
    ids=["not base64", "wrong prefix", "not a position", "junk"],
)
def test_a_forged_cursor_answers_400(client: TestClient, cursor: str) -> None:
    """Only cursors this service issued are accepted."""
    response = client.get(
        "/api/notes/", params={"workspaceId": "ws-a", "cursor": cursor}, headers=auth()
    )
    assert response.status_code == 400, response.text
    assert response.json()["error"]["code"] == "invalid_cursor"


def test_unknown_route_and_method_answer_json(client: TestClient) -> None:
    """404 and 405 from routing use the same error shape."""
    assert client.get("/api/nope").json()["error"]["code"] == "not_found"
    response = client.patch("/api/notes/x", json={}, headers=auth())
    assert response.status_code == 405
    assert response.json()["error"]["code"] == "method_not_allowed"
