"""Index root keys in the dek_store: every store (sqlite, postgres, cosmos) runs these."""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Any

import pytest

from field_encrypt.backends.base import DekStore, WrapUpdate
from field_encrypt.blind_index import IndexedField
from field_encrypt.errors import ConfigurationError, DecryptionError
from field_encrypt.index_keys import IndexKeyring, index_key_id, is_index_key_id
from field_encrypt.providers.base import dek_context
from field_encrypt.providers.local import LocalKeyProvider

TAGS = IndexedField(collection="notes", path="tags")


@pytest.fixture
def provider(tmp_path: Path) -> LocalKeyProvider:
    return LocalKeyProvider(tmp_path / "keyring.json", mek_name="mek", refresh_seconds=0)


def _keyring(store: DekStore, provider: LocalKeyProvider, **kwargs: Any) -> IndexKeyring:
    return IndexKeyring(product=store.product, provider=provider, store=store, **kwargs)


def test_create_once_and_read_from_another_process(
    dek_store: DekStore, provider: LocalKeyProvider
) -> None:
    """The first create stores a wrapped key; a second create (another process at start-up)
    keeps it; a fresh keyring unwraps the same key and computes the same index values."""
    first = _keyring(dek_store, provider)
    assert first.create(1) is True
    assert _keyring(dek_store, provider).create(1) is False
    assert first.exists(1) and not first.exists(2)
    a = first.blind_index([TAGS], version=1).value("notes", "tags", "work")
    b = _keyring(dek_store, provider).blind_index([TAGS], version=1).value("notes", "tags", "work")
    assert a == b and a.startswith("bi1:1:")


def test_stored_like_a_dek_under_a_reserved_id(
    dek_store: DekStore, provider: LocalKeyProvider
) -> None:
    """The row is the wrapped key under the current MEK version, at the reserved id, which
    no DEK id can take; nothing in it is the plaintext key."""
    secret = os.urandom(32)
    _keyring(dek_store, provider, random_bytes=lambda n: secret[:n]).create(3)
    record = dek_store.get(index_key_id(dek_store.product, 3))
    assert record.mek_version == provider.current_version()
    assert secret not in record.wrapped
    assert is_index_key_id(record.dek_id)
    assert not any(is_index_key_id(uuid.uuid4().hex) for _ in range(2000))
    root = _keyring(dek_store, provider).root_keys([3])
    assert root == {3: secret}


def test_products_sharing_a_database_have_their_own_keys(
    dek_store: DekStore, provider: LocalKeyProvider
) -> None:
    """Two products in one database each get their own version 1 (the SQL dek_id is unique
    across products)."""
    other = type(dek_store)(dek_store.database, product="other")  # type: ignore[call-arg, attr-defined]
    assert index_key_id(dek_store.product, 1) != index_key_id("other", 1)
    assert _keyring(dek_store, provider).create(1)
    assert _keyring(other, provider).create(1)
    mine = _keyring(dek_store, provider).root_keys([1])[1]
    theirs = _keyring(other, provider).root_keys([1])[1]
    assert mine != theirs


def test_missing_version_names_what_to_do(dek_store: DekStore, provider: LocalKeyProvider) -> None:
    """Asking for a version never created is a ConfigurationError naming it and the fix."""
    keyring = _keyring(dek_store, provider)
    keyring.create(1)
    with pytest.raises(ConfigurationError, match=r"index-key version 2 .*create it first"):
        keyring.blind_index([TAGS], version=2, previous=[1])


def test_tampered_wrap_does_not_open(dek_store: DekStore, provider: LocalKeyProvider) -> None:
    """A single flipped byte of the stored wrap is a DecryptionError, never another key."""
    keyring = _keyring(dek_store, provider)
    keyring.create(1)
    record = dek_store.get(index_key_id(dek_store.product, 1))
    flipped = bytearray(record.wrapped)
    flipped[len(flipped) // 2] ^= 0x01
    update = WrapUpdate(
        record=record,
        mek_version=record.mek_version,
        wrapped=bytes(flipped),
        algorithm=record.algorithm,
    )
    assert dek_store.replace_wraps([update]) == []  # no update lost
    with pytest.raises(DecryptionError):
        keyring.root_keys([1])


def test_a_wrap_moved_to_another_version_does_not_open(
    dek_store: DekStore, provider: LocalKeyProvider
) -> None:
    """The wrap is bound to its id: version 1's wrap copied under version 2's id is refused."""
    keyring = _keyring(dek_store, provider)
    keyring.create(1)
    record = dek_store.get(index_key_id(dek_store.product, 1))
    dek_store.create(
        dek_id=index_key_id(dek_store.product, 2),
        mek_name=record.mek_name,
        mek_version=record.mek_version,
        wrapped=record.wrapped,
        algorithm=record.algorithm,
    )
    with pytest.raises(DecryptionError):
        keyring.root_keys([2])


def test_rewrapped_key_keeps_its_index_values(
    dek_store: DekStore, provider: LocalKeyProvider
) -> None:
    """After the MEK rotates and the row is rewrapped like any DEK, index values are unchanged."""
    keyring = _keyring(dek_store, provider)
    keyring.create(1)
    before = keyring.blind_index([TAGS], version=1).value("notes", "tags", "work")
    provider.create_version()
    record = dek_store.get(index_key_id(dek_store.product, 1))
    new = provider.rewrap(
        record.wrapped,
        from_version=record.mek_version,
        context=dek_context(dek_store.product, record.dek_id),
    )
    dek_store.replace_wraps(
        [
            WrapUpdate(
                record=record,
                mek_version=new.mek_version,
                wrapped=new.ciphertext,
                algorithm=new.algorithm,
            )
        ]
    )
    assert dek_store.get(record.dek_id).mek_version == provider.current_version() != "1"
    assert keyring.blind_index([TAGS], version=1).value("notes", "tags", "work") == before


def test_repr_shows_no_key(dek_store: DekStore, provider: LocalKeyProvider) -> None:
    """Neither the keyring's repr nor the index built from it shows the root key."""
    secret = os.urandom(32)
    keyring = _keyring(dek_store, provider, random_bytes=lambda n: secret[:n])
    keyring.create(1)
    index = keyring.blind_index([TAGS], version=1)
    for text in (repr(keyring), repr(index), repr(dek_store.get(index_key_id(keyring.product, 1)))):
        assert secret.hex() not in text and repr(secret) not in text
