"""Health, readiness, decryption failures, disabled keys, metrics and the OpenAPI document."""

from __future__ import annotations

import logging
import urllib.parse
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from field_encrypt.providers.local import LocalKeyProvider
from notelett import NoteLettSettings
from notelett.backend import Backend
from tests.support.fixtures import on_every_store
from tests.support.note_damage import lose_dek, tamper_title

from .conftest import SECRET, auth

CreateNote = Callable[..., dict[str, Any]]


def _secrets(settings: NoteLettSettings, backend: Backend) -> list[str]:
    encryption = backend.runtime.settings
    return [
        encryption.mek_name,
        str(encryption.keyring),
        str(settings.database),
        SECRET,
        "Traceback",
        "sqlite",
        "fe1:",
        "dekId",
    ]


@on_every_store
def test_health_answers_ok_and_touches_nothing(client: TestClient, backend: Backend) -> None:
    """/health answers 200 even with the database closed."""
    backend.close()
    response = client.get("/health")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


@on_every_store
def test_readiness_passes_every_check(client: TestClient) -> None:
    """With the database up and writable and version 1 enabled, readiness is 200 with four
    ok lines."""
    response = client.get("/api/diagnostics/readiness")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok"
    assert [(c["name"], c["status"]) for c in body["checks"]] == [
        ("database", "ok"),
        ("database_writable", "ok"),
        ("key_provider", "ok"),
        ("mek_current_version", "ok"),
    ]


@on_every_store
def test_readiness_fails_with_503_when_the_current_version_is_disabled(
    client: TestClient, provider: LocalKeyProvider, settings: NoteLettSettings, backend: Backend
) -> None:
    """Disabling the current MEK version fails the canary and the version check."""
    provider.set_enabled(provider.current_version(), False)
    response = client.get("/api/diagnostics/readiness")
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "fail"
    statuses = {c["name"]: c["status"] for c in body["checks"]}
    assert statuses == {
        "database": "ok",
        "database_writable": "ok",
        "key_provider": "fail",
        "mek_current_version": "fail",
    }
    for secret in _secrets(settings, backend):
        assert secret not in response.text


def _make_unusable(
    store_kind: str, url: str, backend: Backend, request: pytest.FixtureRequest
) -> str:
    """Take the notes database away under the running service; a word naming where it was.

    SQLite: its file's directory is gone (the next connection cannot open it). PostgreSQL and
    Cosmos DB: the database is dropped on the server (the fixture's clean-up tolerates it).
    """
    database = backend.runtime.database
    if store_kind == "sqlite":
        database.close()
        database.path = str(Path(database.path).parent / "missing-dir" / "gone" / "x.db")
        return "missing-dir"
    if store_kind == "postgres":
        import psycopg

        name = urllib.parse.urlsplit(url).path.lstrip("/")
        server = request.getfixturevalue("postgres_server")
        with psycopg.connect(server.dsn, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
        return name
    (name,) = urllib.parse.parse_qs(urllib.parse.urlsplit(url).query)["database"]
    request.getfixturevalue("cosmos_client").delete_database(name)
    return name


@on_every_store
def test_readiness_fails_when_the_database_is_unusable(
    client: TestClient,
    backend: Backend,
    store_kind: str,
    database_url: str,
    request: pytest.FixtureRequest,
) -> None:
    """A database that cannot answer fails the database line only, without naming it."""
    where = _make_unusable(store_kind, database_url, backend, request)
    response = client.get("/api/diagnostics/readiness")
    assert response.status_code == 503
    statuses = {c["name"]: c["status"] for c in response.json()["checks"]}
    assert statuses["database"] == "fail"
    assert where not in response.text


@on_every_store
def test_a_tampered_note_answers_one_generic_500_with_a_correlation_id(
    client: TestClient,
    backend: Backend,
    settings: NoteLettSettings,
    create_note: CreateNote,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A decryption failure says nothing but a correlation id; the log has dekId and version."""
    note = create_note(title="will be tampered")
    dek_id = tamper_title(backend, note["id"])
    with caplog.at_level(logging.ERROR, logger="notelett"):
        response = client.get(f"/api/notes/{note['id']}", headers=auth())
    assert response.status_code == 500
    error = response.json()["error"]
    correlation_id = response.headers["x-request-id"]
    assert error == {
        "code": "internal_error",
        "message": "internal error",
        "correlationId": correlation_id,
    }
    logged = [r.getMessage() for r in caplog.records if correlation_id in r.getMessage()]
    assert len(logged) == 1
    assert f"dekId={dek_id}" in logged[0] and "mekVersion=1" in logged[0]
    for secret in _secrets(settings, backend):
        assert secret not in response.text
    listing = client.get("/api/notes/", params={"workspaceId": "ws-a"}, headers=auth())
    assert listing.status_code == 200  # the page serves; the note is an error item on it
    assert listing.json()["errors"] == [{"id": note["id"], "code": "note_unreadable"}]
    metrics = client.get("/metrics").text
    assert "notelett_decrypt_failures_total 2.0" in metrics


@on_every_store
def test_a_note_whose_dek_is_missing_answers_500(
    client: TestClient, backend: Backend, create_note: CreateNote
) -> None:
    """A live row whose DEK was lost (not a delete) is a server error, not a 404."""
    note = create_note()
    lose_dek(backend, note["id"])
    response = client.get(f"/api/notes/{note['id']}", headers=auth())
    assert response.status_code == 500
    assert response.json()["error"]["code"] == "internal_error"


@on_every_store
def test_a_disabled_mek_version_answers_503_with_a_generic_message(
    client: TestClient,
    backend: Backend,
    provider: LocalKeyProvider,
    settings: NoteLettSettings,
    create_note: CreateNote,
) -> None:
    """Reads that need the disabled version, and writes, answer 503 without naming the key."""
    note = create_note()
    provider.set_enabled("1", False)
    backend.encryptor.cache.clear()
    read = client.get(f"/api/notes/{note['id']}", headers=auth())
    write = client.post(
        "/api/notes", json={"workspaceId": "ws-a", "title": "t", "body": "b"}, headers=auth()
    )
    for response in (read, write):
        assert response.status_code == 503, response.text
        assert response.json()["error"]["code"] == "encryption_unavailable"
        assert response.json()["error"]["correlationId"] == response.headers["x-request-id"]
        assert response.headers["retry-after"] == "5"
        for secret in _secrets(settings, backend):
            assert secret not in response.text


@on_every_store
def test_error_bodies_never_carry_secrets(
    client: TestClient, backend: Backend, settings: NoteLettSettings, create_note: CreateNote
) -> None:
    """No 4xx answer mentions the key name, keyring, database, secret or a token."""
    note = create_note()
    path = f"/api/notes/{note['id']}"
    answers = [
        client.get(path),
        client.get(path, headers={"Authorization": "Bearer x.y.z"}),
        client.get("/api/notes/" + "0" * 32, headers=auth()),
        client.put(path, json={"title": "t", "body": "b"}, headers=auth()),
        client.put(path, json={"title": "t", "body": "b"}, headers={**auth(), "If-Match": '"5"'}),
        client.post("/api/notes", content=b"{", headers=auth()),
        client.post("/api/notes", json={"x": 1}, headers=auth()),
        client.post("/api/notes", content=b"x" * 5000, headers=auth()),
        client.get("/api/notes/", params={"workspaceId": "ws-a", "cursor": "zz"}, headers=auth()),
    ]
    for response in answers:
        assert 400 <= response.status_code < 500
        assert "correlationId" not in response.json()["error"]
        for secret in _secrets(settings, backend):
            assert secret not in response.text, (response.status_code, secret)


@on_every_store
def test_responses_never_carry_tokens_or_key_names(
    client: TestClient, backend: Backend, settings: NoteLettSettings, create_note: CreateNote
) -> None:
    """Successful answers hold plaintext only: no token prefix, dekId or key name."""
    note = create_note()
    dek_id = backend.notes.get(note["id"]).dek_id
    assert dek_id is not None
    for response in (
        client.get(f"/api/notes/{note['id']}", headers=auth()),
        client.get("/api/notes/", params={"workspaceId": "ws-a"}, headers=auth()),
        client.get("/api/diagnostics/readiness"),
    ):
        assert response.status_code == 200
        assert dek_id not in response.text
        for secret in _secrets(settings, backend):
            assert secret not in response.text


@on_every_store
def test_metrics_count_requests_by_route_template_and_the_dek_cache(
    client: TestClient, create_note: CreateNote
) -> None:
    """/metrics has requests and latency by route template and status, and cache counters."""
    note = create_note()
    for _ in range(3):
        client.get(f"/api/notes/{note['id']}", headers=auth())
    client.get("/api/notes/" + "0" * 32, headers=auth())
    text = client.get("/metrics").text
    one = 'route="/api/notes/{note_id}"'
    assert f'notelett_http_requests_total{{method="GET",{one},status="200"}} 3.0' in text
    assert f'notelett_http_requests_total{{method="GET",{one},status="404"}} 1.0' in text
    assert 'notelett_http_requests_total{method="POST",route="/api/notes",status="201"} 1.0' in text
    bucket = f'notelett_http_request_duration_seconds_bucket{{le="0.5",method="GET",{one},'
    assert bucket + 'status="200"} 3.0' in text
    assert "notelett_dek_cache_hits_total 4.0" in text  # create seals, then three reads
    assert "notelett_dek_cache_misses_total 0.0" in text
    assert note["id"] not in text  # route templates, never concrete paths


@on_every_store
def test_metrics_include_the_key_state_the_library_and_the_process(
    client: TestClient, create_note: CreateNote, backend: Backend
) -> None:
    """/metrics also has the current MEK version, DEKs per version, provider calls and the
    process and Python collectors, with no key material."""
    create_note()
    text = client.get("/metrics").text
    current = backend.provider.current_version()
    assert (
        f'field_encrypt_deks{{current="true",mek_version="{current}",product="notelett"}} 1.0'
        in text
    )
    assert f'version="{current}"' in text and "field_encrypt_mek_info{" in text
    assert 'field_encrypt_key_state_up{product="notelett"} 1.0' in text
    assert "# TYPE field_encrypt_provider_calls_total counter" in text  # the library's too
    assert "process_cpu_seconds_total" in text and "python_info{" in text
    encryption = backend.runtime.settings
    for secret in (encryption.mek_name, str(encryption.keyring), SECRET, "Traceback", "fe1:"):
        assert secret not in text


def test_openapi_documents_models_errors_and_the_bearer_scheme(client: TestClient) -> None:
    """The OpenAPI document names the response and error models and the security scheme."""
    doc = client.get("/openapi.json").json()
    schemes = doc["components"]["securitySchemes"]
    assert any(s == {"type": "http", "scheme": "bearer", "bearerFormat": "JWT", **{
        k: v for k, v in s.items() if k == "description"}} for s in schemes.values())  # fmt: skip
    notes = doc["paths"]["/api/notes/{note_id}"]
    assert notes["get"]["responses"]["200"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/NoteOut"
    }
    put = notes["put"]
    for status in ("404", "412", "428", "413", "422", "401", "503"):  # each one it can send
        assert put["responses"][status]["content"]["application/json"]["schema"] == {
            "$ref": "#/components/schemas/ErrorOut"
        }, status
    assert put["security"]
    assert {p["name"] for p in put["parameters"]} == {"note_id", "if-match"}
    listing = doc["paths"]["/api/notes"]["get"]
    params = {p["name"]: p for p in listing["parameters"]}
    assert params["limit"]["schema"]["maximum"] == 200
    assert params["workspaceId"]["required"] is True
    assert doc["paths"]["/api/notes"]["post"]["responses"]["201"]
    schema = doc["components"]["schemas"]["NoteCreate"]
    assert schema["additionalProperties"] is False
    assert set(schema["properties"]) == {"workspaceId", "title", "body", "tags"}
    assert "/api/diagnostics/readiness" in doc["paths"] and "/health" in doc["paths"]
    assert "/metrics" not in doc["paths"]
