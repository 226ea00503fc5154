"""``open_runtime`` and ``build_store`` reach the store FIELD_ENCRYPT_DATABASE names."""

from __future__ import annotations

from pathlib import Path

import pytest

from field_encrypt.backends.registry import database_kind
from field_encrypt.bootstrap import build_store
from field_encrypt.errors import ConfigurationError
from field_encrypt.runtime import open_runtime
from tests.backends import BACKEND_KINDS, Backend

COLLECTIONS = {"notes": ["title", "body"]}
STORE_CLASSES = {
    "sqlite": "SqliteDekStore",
    "postgres": "PostgresDekStore",
    "cosmos": "CosmosDekStore",
}
TRAIL_CLASSES = {
    "sqlite": "SqliteAuditTrail",
    "postgres": "PostgresAuditTrail",
    "cosmos": "CosmosAuditTrail",
}


@pytest.mark.parametrize("store_backend", BACKEND_KINDS, indirect=True)
def test_a_document_round_trips_through_the_runtime(store_backend: Backend, tmp_path: Path) -> None:
    """Encrypt, store, read back, decrypt and shred in the configured database, audit included."""
    settings = store_backend.settings(keyring=str(tmp_path / "keyring.json"))
    runtime = open_runtime(settings, product="notelett", collections=COLLECTIONS)
    try:
        assert type(runtime.dek_store).__name__ == STORE_CLASSES[store_backend.kind]
        encryptor = runtime.encryptor
        sealed = encryptor.encrypt_document("notes", "n1", {"title": "hello", "tags": ["x"]})
        notes = runtime.documents["notes"]
        dek_id = encryptor.dek_id_of("notes", sealed)
        notes.insert("n1", sealed, dek_id)  # type: ignore[attr-defined]
        stored = notes.get("n1")
        assert stored.fields["title"] != "hello"
        opened = encryptor.decrypt_document("notes", "n1", stored.fields)
        assert opened == {"title": "hello", "tags": ["x"]}
        assert runtime.dek_store.count_by_version() == {runtime.provider.current_version(): 1}
        assert type(runtime.audit).__name__ == TRAIL_CLASSES[store_backend.kind]
        assert encryptor.audit is runtime.audit
        encryptor.shred(dek_id)
        assert [e.subject for e in runtime.audit.events()] == [f"dek/{dek_id}"]
    finally:
        runtime.close()


@pytest.mark.parametrize("store_backend", BACKEND_KINDS, indirect=True)
def test_build_store_picks_the_store_from_the_url(store_backend: Backend) -> None:
    """build_store (init_encryption's default) opens the dek_store of the configured kind."""
    store = build_store(store_backend.settings(), product="notelett")
    assert type(store).__name__ == STORE_CLASSES[store_backend.kind]
    store.database.close()  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("url", "kind"),
    [
        ("var/field-encrypt.db", "sqlite"),
        ("sqlite:///var/x.db", "sqlite"),
        ("postgresql://app@db/notelett", "postgres"),
        ("postgres://app@db/notelett", "postgres"),
        ("cosmos://acct.documents.azure.com:443/?database=notelett", "cosmos"),
    ],
)
def test_database_kind_follows_the_scheme(url: str, kind: str) -> None:
    """The URL scheme alone decides the store."""
    assert database_kind(url) == kind


def test_an_unknown_scheme_is_a_configuration_error() -> None:
    """A scheme no store serves fails at start-up, naming the forms that work."""
    with pytest.raises(ConfigurationError, match="postgresql://"):
        database_kind("mongodb://db/notelett")
