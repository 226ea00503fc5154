"""Fixtures: a NoteLett app on a fresh SQLite file and local keyring, and token makers."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import jwt
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

import field_encrypt
from field_encrypt.providers.local import LocalKeyProvider
from notelett import NoteLettSettings, create_app
from notelett.backend import Backend, open_backend
from tests.backends import backend_for

SECRET = "test-secret-5f1c9a7e3b2d8f604e1a9c3b5d7f0e2a4c6b8d9f1e3a5c7b0d2f4a6c8e1b3d5f"
ISSUER = "https://idp.test"
AUDIENCE = "notelett-test"

# alice belongs to ws-a, bob to ws-b; carol to both.
MEMBERS = {"alice": ["ws-a"], "bob": ["ws-b"], "carol": ["ws-a", "ws-b"]}


@pytest.fixture
def store_kind(request: pytest.FixtureRequest) -> str:
    """The notes database: SQLite unless a module parametrizes it over ``BACKEND_KINDS``."""
    return getattr(request, "param", "sqlite")


@pytest.fixture
def database_url(store_kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh database of ``store_kind`` (a SQLite file in tmp_path by default)."""
    if store_kind == "sqlite":
        return str(tmp_path / "notelett.db")
    return backend_for(store_kind, request, tmp_path).url


@pytest.fixture
def settings(database_url: str) -> NoteLettSettings:
    return NoteLettSettings(
        database=database_url,
        jwt_secret=SECRET,  # type: ignore[arg-type]
        jwt_issuer=ISSUER,
        jwt_audience=AUDIENCE,
        jwt_leeway_seconds=0,
        max_body_bytes=4096,
    )


@pytest.fixture
def encryption(
    store_kind: str, request: pytest.FixtureRequest, tmp_path: Path
) -> field_encrypt.Settings:
    extra = {}
    if store_kind == "cosmos":
        extra["cosmos_key"] = request.getfixturevalue("cosmos_server").key
    return field_encrypt.load_settings(
        environ={}, keyring=str(tmp_path / "keyring.json"), mek_name="notelett-test-mek", **extra
    )


@pytest.fixture
def provider(encryption: field_encrypt.Settings) -> LocalKeyProvider:
    return LocalKeyProvider(encryption.keyring, mek_name=encryption.mek_name, refresh_seconds=0)


@pytest.fixture
def backend(
    settings: NoteLettSettings, encryption: field_encrypt.Settings, provider: LocalKeyProvider
) -> Iterator[Backend]:
    opened = open_backend(encryption, settings, provider=provider)
    add_members(opened)
    yield opened
    opened.close()


def add_members(backend: Backend) -> None:
    for workspace in ("ws-a", "ws-b"):
        backend.directory.add_workspace(workspace, name=workspace.upper())
    for user, workspaces in MEMBERS.items():
        backend.directory.add_user(user, name=user.title())
        for workspace in workspaces:
            backend.directory.add_member(user, workspace)


@pytest.fixture
def app(settings: NoteLettSettings, backend: Backend) -> FastAPI:
    return create_app(settings, backend=backend)


@pytest.fixture
def client(app: FastAPI) -> Iterator[TestClient]:
    with TestClient(app, raise_server_exceptions=False) as test_client:
        yield test_client


def make_token(
    user: str = "alice",
    *,
    key: Any = SECRET,
    algorithm: str = "HS256",
    headers: dict[str, Any] | None = None,
    drop: tuple[str, ...] = (),
    **claims: Any,
) -> str:
    """A token with sane defaults; ``claims`` override, ``drop`` removes."""
    now = dt.datetime.now(dt.UTC)
    body: dict[str, Any] = {
        "sub": user,
        "iss": ISSUER,
        "aud": AUDIENCE,
        "iat": now,
        "nbf": now - dt.timedelta(seconds=5),
        "exp": now + dt.timedelta(minutes=5),
    }
    body.update(claims)
    for name in drop:
        body.pop(name)
    return jwt.encode(body, key, algorithm=algorithm, headers=headers)


def auth(user: str = "alice", **kwargs: Any) -> dict[str, str]:
    return {"Authorization": f"Bearer {make_token(user, **kwargs)}"}


@pytest.fixture
def create_note(client: TestClient) -> Callable[..., dict[str, Any]]:
    def create(
        user: str = "alice",
        workspace: str = "ws-a",
        title: str = "t",
        body: str = "b",
        **extra: Any,
    ) -> dict[str, Any]:
        response = client.post(
            "/api/notes",
            json={"workspaceId": workspace, "title": title, "body": body, **extra},
            headers=auth(user),
        )
        assert response.status_code == 201, response.text
        return dict(response.json())

    return create
