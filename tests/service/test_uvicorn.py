"""A real ``notelett serve`` (uvicorn) process on a loopback port."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from notelett import NoteLettSettings
from notelett.backend import Backend

from .conftest import AUDIENCE, ISSUER, SECRET, auth
from .server import NoteLettServer, start_server


def server_env(settings: NoteLettSettings, backend: Backend) -> dict[str, str]:
    """The environment that points a server process at the test's database and keyring."""
    encryption = backend.runtime.settings
    key = encryption.cosmos_key
    return {
        **({"FIELD_ENCRYPT_COSMOS_KEY": key.get_secret_value()} if key is not None else {}),
        "NOTELETT_DATABASE": str(settings.database),
        "NOTELETT_JWT_SECRET": SECRET,
        "NOTELETT_JWT_ISSUER": ISSUER,
        "NOTELETT_JWT_AUDIENCE": AUDIENCE,
        "NOTELETT_MAX_BODY_BYTES": "4096",
        "FIELD_ENCRYPT_KEYRING": str(encryption.keyring),
        "FIELD_ENCRYPT_MEK_NAME": encryption.mek_name,
    }


@pytest.fixture
def server(
    settings: NoteLettSettings, backend: Backend, tmp_path: Path
) -> Iterator[NoteLettServer]:
    running = start_server(server_env(settings, backend), workdir=tmp_path)
    yield running
    running.stop()


def test_crud_over_a_real_socket(server: NoteLettServer) -> None:
    """Create, read, list, replace and delete through uvicorn."""
    with httpx.Client(base_url=server.base_url, headers=auth(), timeout=10) as http:
        created = http.post("/api/notes", json={"workspaceId": "ws-a", "title": "t", "body": "b"})
        assert created.status_code == 201, created.text
        path = f"/api/notes/{created.json()['id']}"
        assert http.get(path).json()["title"] == "t"
        page = http.get("/api/notes/", params={"workspaceId": "ws-a"})
        assert [n["id"] for n in page.json()["items"]] == [created.json()["id"]]
        replaced = http.put(path, json={"title": "u", "body": "v"}, headers={"If-Match": '"1"'})
        assert replaced.status_code == 200 and replaced.headers["etag"] == '"2"'
        assert http.delete(path).status_code == 204
        assert http.get(path).status_code == 404
        assert http.get("/api/diagnostics/readiness").status_code == 200


def _raw_exchange(server: NoteLettServer, head: bytes, first_body_bytes: bytes) -> bytes:
    """Send headers and only part of the body, then read what the server answers."""
    host, port = server.base_url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(head + first_body_bytes)
        answer = b""
        while b"\r\n\r\n" not in answer:
            chunk = sock.recv(65536)
            if not chunk:
                break
            answer += chunk
        return answer


def test_a_declared_oversize_body_is_refused_before_it_is_sent(server: NoteLettServer) -> None:
    """Content-Length of 10 MB is answered 413 after the headers, without waiting for it."""
    token = auth()["Authorization"]
    head = (
        "POST /api/notes HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
        f"Authorization: {token}\r\nContent-Length: 10000000\r\n\r\n"
    ).encode()
    answer = _raw_exchange(server, head, b'{"title": "')
    assert answer.startswith(b"HTTP/1.1 413 ")


def test_a_chunked_oversize_body_is_refused_once_past_the_limit(server: NoteLettServer) -> None:
    """A chunked body that never ends is answered 413 as soon as it passes the limit."""
    token = auth()["Authorization"]
    head = (
        "POST /api/notes HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
        f"Authorization: {token}\r\nTransfer-Encoding: chunked\r\n\r\n"
    ).encode()
    chunk = b"1000\r\n" + b"x" * 4096 + b"\r\n"
    answer = _raw_exchange(server, head, chunk * 2)  # 8 KiB sent, the terminator never is
    assert answer.startswith(b"HTTP/1.1 413 ")
