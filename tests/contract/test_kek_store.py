"""The KekStore contract, written once; every store with a kek_store runs it (conftest.py)."""

from __future__ import annotations

import os
import uuid

import pytest

from field_encrypt.backends.base import KekRecord, KekStore
from field_encrypt.errors import AlreadyExistsError, NotFoundError


def _new(store: KekStore, partition: str = "", version: str = "1") -> KekRecord:
    return store.create(
        kek_id=uuid.uuid4().hex,
        partition=partition,
        mek_name="mek",
        mek_version=version,
        wrapped=os.urandom(60),
        algorithm="A256GCM",
    )


def test_is_a_kek_store(kek_store: KekStore) -> None:
    """The store satisfies the runtime-checkable protocol."""
    assert isinstance(kek_store, KekStore)


def test_create_then_get(kek_store: KekStore) -> None:
    """A created KEK reads back field for field, active, with a revision."""
    made = _new(kek_store, "ws-1", "7")
    got = kek_store.get(made.kek_id)
    assert got == made
    assert (got.partition, got.mek_version, got.active, got.product) == (
        "ws-1", "7", True, "contract"
    )  # fmt: skip
    assert "wrapped" not in repr(got)


def test_get_missing_is_not_found(kek_store: KekStore) -> None:
    """An unknown kekId raises NotFoundError."""
    with pytest.raises(NotFoundError):
        kek_store.get(uuid.uuid4().hex)


def test_create_twice_is_refused(kek_store: KekStore) -> None:
    """A kekId is unique."""
    made = _new(kek_store)
    with pytest.raises(AlreadyExistsError):
        kek_store.create(
            kek_id=made.kek_id, partition="", mek_name="m", mek_version="1",
            wrapped=b"x", algorithm="a",
        )  # fmt: skip


def test_one_active_kek_per_partition(kek_store: KekStore) -> None:
    """A new KEK replaces the partition's active one; other partitions are untouched."""
    first = _new(kek_store)
    other = _new(kek_store, "ws-2")
    second = _new(kek_store)
    active = kek_store.active("")
    assert active is not None and active.kek_id == second.kek_id
    assert not kek_store.get(first.kek_id).active
    assert kek_store.active("ws-2") == kek_store.get(other.kek_id)
    assert kek_store.active("nobody") is None
    assert [k.kek_id for k in kek_store.all()] == [first.kek_id, other.kek_id, second.kek_id]


def test_replace_wrap_is_compare_and_swap(kek_store: KekStore) -> None:
    """The wrap changes only against the revision read; a stale record loses."""
    made = _new(kek_store)
    assert kek_store.replace_wrap(made, mek_version="2", wrapped=b"w2", algorithm="a2")
    moved = kek_store.get(made.kek_id)
    assert (moved.mek_version, moved.wrapped, moved.algorithm) == ("2", b"w2", "a2")
    assert moved.revision != made.revision
    assert not kek_store.replace_wrap(made, mek_version="3", wrapped=b"w3", algorithm="a3")
    assert kek_store.get(made.kek_id).mek_version == "2"


def test_retire_then_delete(kek_store: KekStore) -> None:
    """Retiring leaves no active KEK; delete removes the KEK once, then says there was none."""
    made = _new(kek_store)
    assert kek_store.retire(made.kek_id)
    assert not kek_store.retire(made.kek_id)
    assert kek_store.active("") is None
    assert kek_store.delete(made.kek_id)
    assert not kek_store.delete(made.kek_id)
    with pytest.raises(NotFoundError):
        kek_store.get(made.kek_id)
