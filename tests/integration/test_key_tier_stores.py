"""The KEK tier on every store: documents under a KEK, MEK rotation moves the KEK only,
and the KEK's lifecycle is in the store's audit trail."""

from __future__ import annotations

from pathlib import Path

import pytest

from field_encrypt import audit
from field_encrypt.backends.base import KEK_PREFIX
from field_encrypt.rotation import MigrationOptions, migrate, open_ledger
from field_encrypt.runtime import open_runtime
from field_encrypt.usage import count_not_on, dek_counts
from tests.backends import BACKEND_KINDS, Backend

COLLECTIONS = {"notes": ["title", "body"]}
KEK_STORES = {
    "sqlite": "SqliteKekStore",
    "postgres": "PostgresKekStore",
    "cosmos": "CosmosKekStore",
}


@pytest.mark.parametrize("store_backend", BACKEND_KINDS, indirect=True)
def test_mek_rotation_under_the_tier_on_every_store(store_backend: Backend, tmp_path: Path) -> None:
    """Eight documents under one KEK; rewrap-deks moves the KEK (the DEK rows stay as they
    are), the count is 0 off the new version, every document reads through a fresh runtime."""
    settings = store_backend.settings(
        keyring=str(tmp_path / "keyring.json"), key_layout="kek", kek_retire_grace_seconds=0
    )
    runtime = open_runtime(settings, product="notelett", collections=COLLECTIONS)
    ids: list[str] = []
    try:
        tier = runtime.kek_tier
        assert tier is not None and type(tier.keks).__name__ == KEK_STORES[store_backend.kind]
        notes = runtime.documents["notes"]
        for i in range(8):
            doc = runtime.encryptor.encrypt_document("notes", f"n{i}", {"title": f"t{i}"})
            notes.insert(f"n{i}", doc, runtime.encryptor.dek_id_of("notes", doc))  # type: ignore[attr-defined]
            ids.append(f"n{i}")
        (kek,) = tier.keks.all()
        assert runtime.dek_store.count_by_version() == {KEK_PREFIX + kek.kek_id: 8}
        runtime.provider.create_version()
        report = migrate(runtime, open_ledger(runtime), MigrationOptions(mode="rewrap-deks"))
        assert (report.status, report.counters.changed, report.remaining) == ("completed", 8, 0)
        assert dek_counts(runtime) == {"2": 8} and count_not_on(runtime, "2") == 0
        assert runtime.audit is not None
        kinds = [e.type for e in runtime.audit.events(types=audit.KEK_EVENT_TYPES)]
        assert kinds == [audit.KEK_CREATED, audit.KEK_REWRAPPED]
    finally:
        runtime.close()
    fresh = open_runtime(settings, product="notelett", collections=COLLECTIONS)
    try:
        for doc_id in ids:
            stored = fresh.documents["notes"].get(doc_id)
            opened = fresh.encryptor.decrypt_document("notes", doc_id, stored.fields)
            assert opened == {"title": f"t{doc_id[1:]}"}
    finally:
        fresh.close()
