"""NoteLett with lazy rewrap on: the notes people read move to the current MEK version."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

import field_encrypt
from field_encrypt.providers.local import LocalKeyProvider
from notelett import NoteLettSettings, create_app
from notelett.backend import Backend, open_backend
from tests.backends import BACKEND_KINDS

from .conftest import add_members, auth

pytestmark = pytest.mark.parametrize("store_kind", BACKEND_KINDS, indirect=True)


@pytest.fixture
def lazy_backend(
    settings: NoteLettSettings, encryption: field_encrypt.Settings, provider: LocalKeyProvider
) -> Iterator[Backend]:
    lazy = encryption.model_copy(update={"lazy_rewrap": True, "lazy_rewrap_max_rps": 1000.0})
    opened = open_backend(lazy, settings, provider=provider)
    add_members(opened)
    yield opened
    opened.close()


def test_reading_notes_after_a_rotation_moves_their_deks(
    settings: NoteLettSettings, lazy_backend: Backend, provider: LocalKeyProvider
) -> None:
    """Six notes under v1, v2 created: GET three of them (every answer 200, as before) and
    those three DEKs are rewrapped under v2 in the background; the three unread stay on v1."""
    with TestClient(create_app(settings, backend=lazy_backend)) as client:
        ids = []
        for i in range(6):
            response = client.post(
                "/api/notes/",
                json={"workspaceId": "ws-a", "title": f"t{i}", "body": "b", "tags": []},
                headers=auth("alice"),
            )
            assert response.status_code == 201, response.text
            ids.append(response.json()["id"])
        provider.create_version()
        lazy_backend.encryptor.cache.clear()  # a process started after the rotation
        for note_id in ids[:3]:
            response = client.get(f"/api/notes/{note_id}", headers=auth("alice"))
            assert response.status_code == 200 and response.json()["body"] == "b"
        rewrapper = lazy_backend.encryptor.rewrapper
        assert rewrapper is not None and rewrapper.drain()
    assert lazy_backend.runtime.dek_store.count_by_version() == {"1": 3, "2": 3}
    assert rewrapper.stats().rewrapped == 3
