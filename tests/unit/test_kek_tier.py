"""The intermediate KEK tier: MEK rotation in a handful of calls, layout migrations, shredding."""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from field_encrypt import DecryptionError, FieldEncryptor, KeyVersionDisabledError
from field_encrypt.backends.base import ScanFilter, WrapUpdate, effective_counts
from field_encrypt.backends.sqlite.db import SqliteDatabase
from field_encrypt.backends.sqlite.dek_store import SqliteDekStore
from field_encrypt.backends.sqlite.kek_store import SqliteKekStore
from field_encrypt.providers.base import KeyProvider, KeyVersion, WrappedDek
from field_encrypt.providers.kek_tier import KekTierProvider
from field_encrypt.providers.local import LocalKeyProvider

DOC = {"title": "t", "body": "b"}


class CountingProvider:
    """A real provider that counts the calls made to it (what a remote MEK would be billed)."""

    def __init__(self, inner: LocalKeyProvider) -> None:
        self.inner = inner
        self.kind = inner.kind
        self.mek_name = inner.mek_name
        self.remote = True
        self.calls: Counter[str] = Counter()

    def versions(self) -> list[KeyVersion]:
        return self.inner.versions()

    def current_version(self) -> str:
        return self.inner.current_version()

    def create_version(self) -> KeyVersion:
        return self.inner.create_version()

    def set_enabled(self, version: str, enabled: bool) -> KeyVersion:
        return self.inner.set_enabled(version, enabled)

    def wrap(self, dek: bytes, *, context: bytes, version: str | None = None) -> WrappedDek:
        self.calls["wrap"] += 1
        return self.inner.wrap(dek, context=context, version=version)

    def unwrap(self, ciphertext: bytes, *, version: str, context: bytes) -> bytes:
        self.calls["unwrap"] += 1
        return self.inner.unwrap(ciphertext, version=version, context=context)

    def rewrap(
        self, ciphertext: bytes, *, from_version: str, context: bytes, to_version: str | None = None
    ) -> WrappedDek:
        self.calls["rewrap"] += 1
        return self.inner.rewrap(
            ciphertext, from_version=from_version, context=context, to_version=to_version
        )


@pytest.fixture
def parts(tmp_path: Path) -> Iterator[tuple[CountingProvider, KekTierProvider, SqliteDekStore]]:
    database = SqliteDatabase(tmp_path / "db.sqlite")
    mek = CountingProvider(
        LocalKeyProvider(tmp_path / "ring.json", mek_name="m", refresh_seconds=0)
    )
    tier = KekTierProvider(mek, SqliteKekStore(database, product="p"), product="p")
    yield mek, tier, SqliteDekStore(database, product="p")
    database.close()


def _encryptor(provider: KeyProvider, store: SqliteDekStore) -> FieldEncryptor:
    return FieldEncryptor(
        product="p", provider=provider, store=store, collections={"notes": ["title", "body"]}
    )


def _rewrap_all(provider: KeyProvider, store: SqliteDekStore, target: str) -> int:
    """Move every DEK to ``target`` (the rotation engine does this with a ledger and retries)."""
    moved = 0
    cursor = None
    while True:
        page = store.scan(cursor=cursor, limit=50, where=ScanFilter(exclude_version=target))
        updates = []
        for record in page.records:
            wrapped = provider.rewrap(
                record.wrapped,
                from_version=record.mek_version,
                context=b"field-encrypt/dek/v1\x00p\x00" + record.dek_id.encode(),
                to_version=target,
            )
            updates.append(WrapUpdate(record=record, mek_version=wrapped.mek_version,
                                      wrapped=wrapped.ciphertext, algorithm=wrapped.algorithm))  # fmt: skip
        assert store.replace_wraps(updates) == []
        moved += len(updates)
        if page.cursor is None:
            return moved
        cursor = page.cursor


def test_mek_rotation_rewraps_only_the_keks(
    parts: tuple[CountingProvider, KekTierProvider, SqliteDekStore],
) -> None:
    """Rotating the MEK behind the tier costs three checked remote calls per KEK, none per DEK."""
    mek, tier, store = parts
    fe = _encryptor(tier, store)
    docs = {f"n{i}": fe.encrypt_document("notes", f"n{i}", DOC) for i in range(200)}
    assert mek.calls["wrap"] == 1, "one KEK wrapped, DEKs wrapped locally"
    mek.create_version()
    mek.calls.clear()
    result = tier.rewrap_keks()
    assert (result.rewrapped, result.remote_calls) == (1, 3), "unwrap, wrap, checked unwrap"
    assert sum(mek.calls.values()) == 3
    counts = effective_counts(store.count_by_version(), tier.keks.all())
    assert counts == {"2": 200}, "verify's count sees every DEK on the new version"
    assert tier.rewrap_keks().remote_calls == 0, "a re-run is free"
    mek.set_enabled("1", False)
    reader = _encryptor(KekTierProvider(mek, tier.keks, product="p"), store)
    for doc_id, sealed in docs.items():
        assert reader.decrypt_document("notes", doc_id, sealed) == DOC


def test_disabled_mek_version_refuses_a_kek_read(
    parts: tuple[CountingProvider, KekTierProvider, SqliteDekStore],
) -> None:
    """A KEK still on a disabled MEK version cannot be unwrapped, so its DEKs cannot either."""
    mek, tier, store = parts
    sealed = _encryptor(tier, store).encrypt_document("notes", "n1", DOC)
    mek.create_version()
    tier.set_enabled("1", False)
    with pytest.raises(KeyVersionDisabledError):
        _encryptor(tier, store).decrypt_document("notes", "n1", sealed)


def test_direct_to_tier_and_back(
    parts: tuple[CountingProvider, KekTierProvider, SqliteDekStore],
) -> None:
    """A product moves from the direct layout to the tier and back; every document reads throughout."""
    mek, tier, store = parts
    direct = _encryptor(mek, store)
    docs = {f"n{i}": direct.encrypt_document("notes", f"n{i}", DOC) for i in range(20)}
    assert store.count_by_version() == {"1": 20}
    target = tier.dek_version()
    assert _rewrap_all(tier, store, target) == 20
    assert store.count_by_version() == {target: 20}
    for doc_id, sealed in docs.items():
        assert _encryptor(tier, store).decrypt_document("notes", doc_id, sealed) == DOC
    assert _rewrap_all(tier, store, "1") == 20
    assert store.count_by_version() == {"1": 20}
    for doc_id, sealed in docs.items():
        assert _encryptor(mek, store).decrypt_document("notes", doc_id, sealed) == DOC


def test_kek_rotation_is_local(
    parts: tuple[CountingProvider, KekTierProvider, SqliteDekStore],
) -> None:
    """Replacing a KEK rewraps its DEKs locally; the old KEK can then be destroyed."""
    mek, tier, store = parts
    fe = _encryptor(tier, store)
    docs = {f"n{i}": fe.encrypt_document("notes", f"n{i}", DOC) for i in range(30)}
    old = tier.keks.active()
    assert old is not None
    new = tier.new_kek()
    mek.calls.clear()
    assert _rewrap_all(tier, store, "kek:" + new.kek_id) == 30
    assert mek.calls["unwrap"] + mek.calls["rewrap"] + mek.calls["wrap"] == 0
    assert tier.keks.delete(old.kek_id)
    reader = _encryptor(KekTierProvider(mek, tier.keks, product="p"), store)
    for doc_id, sealed in docs.items():
        assert reader.decrypt_document("notes", doc_id, sealed) == DOC


def test_partition_shredding(
    parts: tuple[CountingProvider, KekTierProvider, SqliteDekStore],
) -> None:
    """Destroying one partition's KEK makes that tenant's documents unreadable and no other's."""
    _, tier, store = parts
    fe = _encryptor(tier, store)
    a = fe.encrypt_document(
        "notes", "a", DOC, dek_id=fe.create_dek(version=tier.dek_version("tenant-a"))
    )
    b = fe.encrypt_document(
        "notes", "b", DOC, dek_id=fe.create_dek(version=tier.dek_version("tenant-b"))
    )
    assert tier.shred_partition("tenant-a") == 1
    reader = _encryptor(KekTierProvider(tier.mek, tier.keks, product="p"), store)
    with pytest.raises(DecryptionError):  # the KEK is gone: as undecryptable as tampering
        reader.decrypt_document("notes", "a", a)
    assert reader.decrypt_document("notes", "b", b) == DOC


def test_kek_wrap_is_bound_to_its_row(
    parts: tuple[CountingProvider, KekTierProvider, SqliteDekStore],
) -> None:
    """A wrapped KEK copied onto another KEK row does not unwrap there."""
    _, tier, _ = parts
    first = tier.new_kek("x")
    second = tier.new_kek("y")
    tier.keks.database.execute(  # type: ignore[attr-defined]
        "UPDATE kek_store SET wrapped = ? WHERE kek_id = ?", (first.wrapped, second.kek_id)
    )
    fresh = KekTierProvider(tier.mek, tier.keks, product="p")
    with pytest.raises(DecryptionError):
        fresh.wrap(os.urandom(32), context=b"c", version="kek:" + second.kek_id)
