"""The HTTP surface: one route per resource with or without a trailing slash, no Host
reflection, request ids, and an OpenAPI document that names what the service sends."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient

from .conftest import auth


def test_the_collection_answers_with_and_without_a_trailing_slash(
    client: TestClient, create_note: Any
) -> None:
    """GET and POST work on /api/notes and /api/notes/ alike, with no redirect."""
    note = create_note()
    for path in ("/api/notes", "/api/notes/"):
        listing = client.get(
            path, params={"workspaceId": "ws-a"}, headers=auth(), follow_redirects=False
        )
        assert listing.status_code == 200, (path, listing.status_code)
        assert note["id"] in [n["id"] for n in listing.json()["items"]]
        created = client.post(
            path,
            json={"workspaceId": "ws-a", "title": "t", "body": "b"},
            headers=auth(),
            follow_redirects=False,
        )
        assert created.status_code == 201, (path, created.status_code)
    one = client.get(f"/api/notes/{note['id']}/", headers=auth(), follow_redirects=False)
    assert one.status_code == 200 and one.json()["id"] == note["id"]
    assert client.get("/health/", follow_redirects=False).status_code == 200


def test_no_answer_reflects_the_host_header(client: TestClient, create_note: Any) -> None:
    """No status is a redirect and no header carries the request's Host."""
    note = create_note()
    evil = "evil.example"
    paths = ["/api/notes/", "/api/notes", f"/api/notes/{note['id']}/", "/health/", "/nope/"]
    for path in paths:
        for method in ("GET", "POST", "PUT", "DELETE"):
            response = client.request(
                method,
                path,
                params={"workspaceId": "ws-a"},
                headers={**auth(), "Host": evil},
                follow_redirects=False,
            )
            assert not 300 <= response.status_code < 400, (method, path)
            assert evil not in str(response.headers).lower(), (method, path)
            assert evil not in response.text, (method, path)


def test_a_valid_incoming_request_id_is_echoed_and_an_invalid_one_replaced(
    client: TestClient,
) -> None:
    """X-Request-ID is honoured when short and of a safe charset; otherwise a new id is sent."""
    kept = client.get("/health", headers={"X-Request-ID": "trace-42.abc:1_Z"})
    assert kept.headers["x-request-id"] == "trace-42.abc:1_Z"
    for bad in ("a" * 129, "has space", 'q"uote', "\xfc\xef".encode("latin-1"), ""):
        answer = client.get("/health", headers={"X-Request-ID": bad})
        sent = answer.headers["x-request-id"]
        assert sent != bad and len(sent) == 32 and sent.isalnum(), bad
    assert len(client.get("/health").headers.get_list("x-request-id")) == 1


def test_openapi_names_every_header_and_no_impossible_status(client: TestClient) -> None:
    """Stable operationIds; ETag, Location, X-Request-ID and Retry-After are documented;
    /health and readiness advertise no 422."""
    doc = client.get("/openapi.json").json()
    operations = {op["operationId"]: op for item in doc["paths"].values() for op in item.values()}
    assert set(operations) == {
        "createNote",
        "listNotes",
        "getNote",
        "replaceNote",
        "deleteNote",
        "getHealth",
        "getReadiness",
    }
    assert set(doc["paths"]) == {
        "/api/notes",
        "/api/notes/{note_id}",
        "/health",
        "/api/diagnostics/readiness",
    }
    for name in ("getHealth", "getReadiness", "getNote", "deleteNote"):
        assert "422" not in operations[name]["responses"], name
    for name in ("createNote", "listNotes", "replaceNote"):
        assert operations[name]["responses"]["422"]["content"]["application/json"]["schema"] == {
            "$ref": "#/components/schemas/ErrorOut"
        }
    assert "HTTPValidationError" not in doc["components"]["schemas"]
    for name, operation in operations.items():
        for status, response in operation["responses"].items():
            headers = response.get("headers", {})
            assert "X-Request-ID" in headers, (name, status)
            if status == "503":
                assert "Retry-After" in headers, (name, status)
    assert set(operations["createNote"]["responses"]["201"]["headers"]) >= {"ETag", "Location"}
    for name in ("getNote", "replaceNote"):
        assert "ETag" in operations[name]["responses"]["200"]["headers"]
    for name, operation in operations.items():  # the middleware answers these anywhere
        assert {"400", "413"} <= set(operation["responses"]), name


def test_the_middleware_answers_400_and_413_on_any_route(client: TestClient) -> None:
    """Even /health answers 400 for an invalid Content-Length and 413 for an oversized one."""
    bad = client.get("/health", headers={"Content-Length": "x"})
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "bad_request"
    big = client.get("/health", headers={"Content-Length": str(10**9)})
    assert big.status_code == 413 and big.json()["error"]["code"] == "payload_too_large"


def test_a_trailing_slash_request_is_counted_under_its_route(client: TestClient) -> None:
    """Metrics label /api/notes/ with the route it matched, not as unmatched."""
    client.get("/api/notes/", params={"workspaceId": "ws-a"}, headers=auth())
    text = client.get("/metrics").text
    assert 'method="GET",route="/api/notes",status="200"' in text
    assert "unmatched" not in text
