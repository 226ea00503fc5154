"""NoteLett with FIELD_ENCRYPT_KEY_LAYOUT=kek: notes under a KEK, MEK rotation moves the KEK."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

import field_encrypt
from field_encrypt.backends.base import KEK_PREFIX
from field_encrypt.providers.local import LocalKeyProvider
from field_encrypt.rotation import MigrationOptions, migrate, open_ledger, verify
from field_encrypt.testing import CountingProvider
from field_encrypt.usage import dek_counts
from notelett import NoteLettSettings, create_app
from notelett.backend import Backend, open_backend
from tests.support.fixtures import on_every_store

from .conftest import add_members, auth


@pytest.fixture
def kek_layout(encryption: field_encrypt.Settings) -> field_encrypt.Settings:
    """The test's encryption settings (keyring, MEK, the store's credentials) with
    FIELD_ENCRYPT_KEY_LAYOUT=kek."""
    return encryption.model_copy(update={"key_layout": "kek"})


@pytest.fixture
def tiered(
    kek_layout: field_encrypt.Settings, settings: NoteLettSettings, provider: LocalKeyProvider
) -> Iterator[tuple[Backend, CountingProvider]]:
    mek = CountingProvider(provider)
    opened = open_backend(kek_layout, settings, provider=mek)
    add_members(opened)
    yield opened, mek
    opened.close()


@on_every_store
def test_notes_go_under_a_kek_and_survive_a_mek_rotation(
    tiered: tuple[Backend, CountingProvider], settings: NoteLettSettings
) -> None:
    """Ten notes cost one MEK wrap (the KEK's); the rotation rewraps the KEK only; every
    note reads back after the old MEK version is disabled."""
    backend, mek = tiered
    assert backend.runtime.kek_tier is not None
    with TestClient(create_app(settings, backend=backend)) as client:
        ids = []
        for i in range(10):
            answer = client.post(
                "/api/notes",
                json={"workspaceId": "ws-a", "title": f"t{i}", "body": f"b{i}", "tags": []},
                headers=auth(),
            )
            assert answer.status_code == 201, answer.text
            ids.append(answer.json()["id"])
        (kek,) = backend.runtime.kek_tier.keks.all()
        assert backend.runtime.dek_store.count_by_version() == {KEK_PREFIX + kek.kek_id: 10}
        assert mek.calls["wrap"] >= 1 and mek.calls["unwrap"] == 0
        backend.provider.create_version()
        mek.calls.clear()
        report = migrate(
            backend.runtime, open_ledger(backend.runtime), MigrationOptions(mode="rewrap-deks")
        )
        assert (report.counters.changed, report.remaining) == (10, 0)
        assert mek.calls["wrap"] + mek.calls["unwrap"] + mek.calls["rewrap"] == 3
        assert dek_counts(backend.runtime) == {"2": 10}
        assert verify(backend.runtime, mek_version="2").not_on_version == 0
        backend.provider.set_enabled("1", False)
        backend.encryptor.cache.clear()
        backend.runtime.kek_tier.cache.clear()
        for i, note_id in enumerate(ids):
            got = client.get(f"/api/notes/{note_id}", headers=auth())
            assert got.status_code == 200 and got.json()["title"] == f"t{i}"


@on_every_store
def test_kek_per_workspace_shreds_one_workspace(
    kek_layout: field_encrypt.Settings, settings: NoteLettSettings, provider: LocalKeyProvider
) -> None:
    """NOTELETT_KEK_PER_WORKSPACE: each workspace's notes go under its own KEK; shredding
    ws-a's partition makes ws-a's notes unreadable (500) and leaves ws-b's readable."""
    per_workspace = settings.model_copy(update={"kek_per_workspace": True})
    backend = open_backend(kek_layout, per_workspace, provider=provider)
    add_members(backend)
    try:
        tier = backend.runtime.kek_tier
        assert tier is not None
        with TestClient(create_app(per_workspace, backend=backend)) as client:
            ids = {}
            for workspace in ("ws-a", "ws-b"):
                answer = client.post(
                    "/api/notes",
                    json={"workspaceId": workspace, "title": workspace, "body": "b", "tags": []},
                    headers=auth("carol"),
                )
                assert answer.status_code == 201, answer.text
                ids[workspace] = answer.json()["id"]
            assert sorted(k.partition for k in tier.keks.all()) == ["ws-a", "ws-b"]
            assert tier.shred_partition("ws-a") == 1
            backend.encryptor.cache.clear()  # what the cache TTL does in a real process
            assert client.get(f"/api/notes/{ids['ws-a']}", headers=auth("carol")).status_code == 500
            kept = client.get(f"/api/notes/{ids['ws-b']}", headers=auth("carol"))
            assert kept.status_code == 200 and kept.json()["title"] == "ws-b"
    finally:
        backend.close()
