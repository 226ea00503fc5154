"""Notes whose plaintext is a recognisable canary, driven down every error path.

Run on its own it checks that no error answer carries the plaintext; under the secret
scan (``tests/reliability/test_secret_hygiene.py``) the canaries are also looked for in
every log line, at DEBUG, and every captured output.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi.testclient import TestClient

from notelett.backend import Backend
from tests.reliability.canaries import canary
from tests.support.fixtures import on_every_store

from .conftest import auth


@on_every_store
def test_error_paths_never_echo_a_notes_plaintext(
    client: TestClient, backend: Backend, create_note: Callable[..., dict[str, Any]]
) -> None:
    """Tampered, shredded, disabled, refused and invalid: no answer carries the canary."""
    secret = canary()
    note = create_note(title=secret, body=secret)
    path = f"/api/notes/{note['id']}"
    answers = [
        client.put(path, json={"title": secret, "body": secret}, headers=auth()),  # 428
        client.put(
            path, json={"title": secret, "body": secret}, headers={**auth(), "If-Match": '"9"'}
        ),
        client.put(path, json={"title": secret, "body": secret, "extra": secret}, headers=auth()),
        client.post(
            "/api/notes",
            json={"workspaceId": "ws-a", "title": secret * 40, "body": secret},
            headers=auth(),
        ),
        client.post(
            "/api/notes",
            json={"workspaceId": secret, "title": secret, "body": secret},
            headers=auth(),
        ),
        client.get(path, headers=auth("bob")),
        client.get(path, headers={"Authorization": f"Bearer {secret}"}),
    ]
    provider = backend.provider
    provider.create_version()
    provider.set_enabled("1", False)  # the note's DEK is under a disabled version: 503
    backend.encryptor.cache.clear()
    answers.append(client.get(path, headers=auth()))
    provider.set_enabled("1", True)
    dek_id = backend.notes.get(note["id"]).dek_id
    assert dek_id is not None
    backend.runtime.dek_store.delete(dek_id)  # its DEK is gone: 500
    backend.encryptor.cache.clear()
    answers.append(client.get(path, headers=auth()))
    assert [a.status_code for a in answers] == [428, 412, 422, 422, 404, 404, 401, 503, 500]
    for answer in answers:
        assert secret not in answer.text
