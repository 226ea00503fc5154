"""The runbook, at library level, on every provider that can create versions: encrypt under v1,
create v2, rewrap every DEK, disable v1, and every document still decrypts with a cold cache.
Then a migration from one provider to another.

The rewrap and migrate loops here are written by hand with the store and provider protocols.
ROTATION ENGINE: when ``field_encrypt.rotation.rewrap`` (the CLI branch) is merged, these two
loops become calls to it; the assertions stay.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from field_encrypt.backends.base import DekStore, WrapUpdate
from field_encrypt.backends.sqlite.db import SqliteDatabase
from field_encrypt.backends.sqlite.dek_store import SqliteDekStore
from field_encrypt.cache import DekCache
from field_encrypt.envelope import FieldEncryptor
from field_encrypt.errors import KeyVersionDisabledError
from field_encrypt.providers.base import KeyProvider, dek_context
from field_encrypt.providers.local import LocalKeyProvider
from tests.harnesses import HARNESS_FIXTURES

PRODUCT = "notelett"
COLLECTIONS = {"notes": ["title", "body", "meta.mood"]}
DOCUMENTS = 24

ProviderFactory = Callable[[str], KeyProvider]
"""Makes a provider (with no versions yet, or local's first) on the MEK of the given name."""


@pytest.fixture
def store(tmp_path: Path) -> Iterator[DekStore]:
    database = SqliteDatabase(tmp_path / "dek_store.db")
    yield SqliteDekStore(database, product=PRODUCT)
    database.close()


@pytest.fixture(params=["local", *HARNESS_FIXTURES])
def factory(request: pytest.FixtureRequest, tmp_path: Path) -> ProviderFactory:
    return _factory(request, request.param, tmp_path)


def _factory(request: pytest.FixtureRequest, kind: str, tmp_path: Path) -> ProviderFactory:
    if kind == "local":
        return lambda name: LocalKeyProvider(tmp_path / f"{name}.json", mek_name=name)
    harness: Any = request.getfixturevalue(HARNESS_FIXTURES[kind])

    def make(name: str) -> KeyProvider:
        provider: KeyProvider = harness.provider(mek_name=name)
        provider.create_version()
        return provider

    return make


def note(i: int) -> dict[str, Any]:
    return {"title": f"note {i}", "body": "ü" * i, "meta": {"mood": i}, "tags": ["x"]}


def encrypt_notes(encryptor: FieldEncryptor) -> dict[str, dict[str, Any]]:
    return {
        f"n{i}": encryptor.encrypt_document("notes", f"n{i}", note(i)) for i in range(DOCUMENTS)
    }


def assert_all_readable(
    provider: KeyProvider, store: DekStore, stored: dict[str, dict[str, Any]]
) -> None:
    """Every document decrypts through a fresh encryptor, whose DEK cache is cold."""
    cold = FieldEncryptor(
        product=PRODUCT, provider=provider, store=store, collections=COLLECTIONS, cache=DekCache()
    )
    for i in range(DOCUMENTS):
        assert cold.decrypt_document("notes", f"n{i}", stored[f"n{i}"]) == note(i)


def rewrap_all(provider: KeyProvider, store: DekStore, target: str) -> int:
    """Rewrap every DEK not yet on ``target``; how many were rewrapped.

    ROTATION ENGINE: replaced by field_encrypt.rotation.rewrap once merged.
    """
    rewrapped, cursor = 0, None
    while True:
        page = store.scan(cursor=cursor, limit=10, exclude_version=target)
        updates = []
        for record in page.records:
            moved = provider.rewrap(
                record.wrapped,
                from_version=record.mek_version,
                context=dek_context(PRODUCT, record.dek_id),
                to_version=target,
            )
            updates.append(
                WrapUpdate(
                    record=record,
                    mek_version=moved.mek_version,
                    wrapped=moved.ciphertext,
                    algorithm=moved.algorithm,
                )
            )
        assert store.replace_wraps(updates) == []
        rewrapped += len(updates)
        if page.cursor is None:
            return rewrapped
        cursor = page.cursor


def test_rotation_keeps_every_document_readable(
    factory: ProviderFactory, store: DekStore, request: pytest.FixtureRequest
) -> None:
    """Encrypt under v1, create v2, rewrap every DEK, disable v1: all documents still decrypt
    (cold cache), no DEK is left on v1, and v1 really refuses what it used to unwrap."""
    provider = factory(f"rotate-{request.node.callspec.id}")
    encryptor = FieldEncryptor(
        product=PRODUCT, provider=provider, store=store, collections=COLLECTIONS
    )
    stored = encrypt_notes(encryptor)
    v1 = provider.current_version()
    old_row = store.get(encryptor.dek_id_of("notes", stored["n0"]) or "")
    assert store.count_by_version() == {v1: DOCUMENTS}

    v2 = provider.create_version().version
    assert provider.current_version() == v2
    assert rewrap_all(provider, store, v2) == DOCUMENTS
    assert rewrap_all(provider, store, v2) == 0  # idempotent: a re-run skips rewrapped DEKs
    assert store.count_not_on(v2) == 0
    provider.set_enabled(v1, False)

    assert_all_readable(provider, store, stored)
    with pytest.raises(KeyVersionDisabledError):
        provider.unwrap(old_row.wrapped, version=v1, context=dek_context(PRODUCT, old_row.dek_id))
    new_document = encryptor.encrypt_document("notes", "new", note(1))
    assert store.count_by_version() == {v2: DOCUMENTS + 1}
    assert encryptor.decrypt_document("notes", "new", new_document) == note(1)


@pytest.mark.parametrize(
    ("source", "target"),
    [("local", "akv"), ("akv", "aws-kms"), ("aws-kms", "pkcs11"), ("pkcs11", "local")],
)
def test_migration_between_providers(
    source: str, target: str, store: DekStore, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """Every DEK is unwrapped by the source provider and wrapped by the target under the same
    MEK name; documents (untouched) then read back through an encryptor on the target alone."""
    name = f"migrate-{source}-{target}".replace("aws-kms", "kms")
    old = _factory(request, source, tmp_path)(name)
    new = _factory(request, target, tmp_path)(name)
    stored = encrypt_notes(
        FieldEncryptor(product=PRODUCT, provider=old, store=store, collections=COLLECTIONS)
    )

    # ROTATION ENGINE: a cross-provider migrate mode would replace this loop.
    cursor = None
    while True:
        page = store.scan(cursor=cursor, limit=10)
        updates = []
        for record in page.records:
            context = dek_context(PRODUCT, record.dek_id)
            dek = old.unwrap(record.wrapped, version=record.mek_version, context=context)
            wrapped = new.wrap(dek, context=context)
            updates.append(
                WrapUpdate(
                    record=record,
                    mek_version=wrapped.mek_version,
                    wrapped=wrapped.ciphertext,
                    algorithm=wrapped.algorithm,
                )
            )
        assert store.replace_wraps(updates) == []
        if page.cursor is None:
            break
        cursor = page.cursor

    assert store.count_not_on(new.current_version()) == 0
    assert_all_readable(new, store, stored)
