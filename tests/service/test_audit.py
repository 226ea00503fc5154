"""NoteLett's audit trail: a DELETE records the shred, denied reads are recorded once."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from fastapi.testclient import TestClient

from field_encrypt import audit
from field_encrypt.providers.local import LocalKeyProvider
from notelett.backend import Backend
from tests.backends import BACKEND_KINDS
from tests.service.conftest import auth

CreateNote = Callable[..., dict[str, Any]]


@pytest.mark.parametrize("store_kind", BACKEND_KINDS, indirect=True)
def test_delete_records_the_shred(
    client: TestClient, backend: Backend, create_note: CreateNote
) -> None:
    """DELETE goes through FieldEncryptor.shred: one dek.shredded, in the notes' own database."""
    note = create_note()
    dek_id = backend.notes.get(note["id"]).dek_id
    assert client.delete(f"/api/notes/{note['id']}", headers=auth()).status_code == 204
    trail = backend.runtime.audit
    assert trail is not None and backend.encryptor.audit is trail
    (event,) = trail.events(types=[audit.DEK_SHREDDED])
    assert event.subject == f"dek/{dek_id}"
    assert event.data == {"dekId": dek_id, "existed": True}
    assert event.cloudevent()["source"] == "field-encrypt/notelett"
    assert trail.verify().intact


def test_reads_under_a_disabled_version_are_recorded_once(
    client: TestClient, backend: Backend, provider: LocalKeyProvider, create_note: CreateNote
) -> None:
    """A client retrying a note whose MEK version was disabled leaves one decrypt.denied."""
    note = create_note()
    provider.create_version()
    provider.set_enabled("1", False)
    backend.encryptor.cache.clear()
    for _ in range(50):
        response = client.get(f"/api/notes/{note['id']}", headers=auth())
        assert response.status_code >= 500
    trail = backend.runtime.audit
    assert trail is not None
    (event,) = trail.events(types=[audit.DECRYPT_DENIED])
    dek_id = backend.notes.get(note["id"]).dek_id
    assert event.subject == f"dek/{dek_id}"
    assert event.data["mekVersion"] == "1" and event.data["mekName"] == "notelett-test-mek"
