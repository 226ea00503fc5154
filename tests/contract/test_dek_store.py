"""The DekStore contract, written once; every store runs it (see conftest.py)."""

from __future__ import annotations

import os
import uuid

import pytest

from field_encrypt.backends.base import (
    EVERY_ROW,
    DekRecord,
    DekStore,
    NewDek,
    ScanFilter,
    WrapRow,
    WrapUpdate,
)
from field_encrypt.errors import AlreadyExistsError, NotFoundError


def _new(store: DekStore, version: str = "1") -> DekRecord:
    return store.create(
        dek_id=uuid.uuid4().hex,
        mek_name="mek",
        mek_version=version,
        wrapped=os.urandom(60),
        algorithm="A256GCM",
    )


def _all(store: DekStore, where: ScanFilter = EVERY_ROW) -> list[DekRecord]:
    out: list[DekRecord] = []
    cursor = None
    while True:
        page = store.scan(cursor=cursor, limit=7, where=where)
        out += page.records
        if page.cursor is None:
            return out
        cursor = page.cursor


def test_is_a_dek_store(dek_store: DekStore) -> None:
    """The store satisfies the runtime-checkable protocol."""
    assert isinstance(dek_store, DekStore)


def test_create_then_get(dek_store: DekStore) -> None:
    """A created row reads back with every field, revision included."""
    created = _new(dek_store)
    got = dek_store.get(created.dek_id)
    assert got == created
    assert got.product == dek_store.product
    assert got.mek_name == "mek" and got.algorithm == "A256GCM"


def test_create_twice_is_refused(dek_store: DekStore) -> None:
    """A dekId is unique."""
    created = _new(dek_store)
    with pytest.raises(AlreadyExistsError):
        dek_store.create(
            dek_id=created.dek_id, mek_name="mek", mek_version="1", wrapped=b"x", algorithm="A"
        )
    assert dek_store.get(created.dek_id).wrapped == created.wrapped


def test_missing_row_is_not_found(dek_store: DekStore) -> None:
    """Reading a dekId that is not there raises NotFoundError."""
    with pytest.raises(NotFoundError):
        dek_store.get(uuid.uuid4().hex)


def test_get_many_returns_those_that_exist(dek_store: DekStore) -> None:
    """get_many maps the existing dekIds to their rows and leaves out the others."""
    rows = [_new(dek_store) for _ in range(3)]
    found = dek_store.get_many([r.dek_id for r in rows] + [uuid.uuid4().hex])
    assert found == {r.dek_id: r for r in rows}


def test_delete(dek_store: DekStore) -> None:
    """delete removes the row once and says whether there was one."""
    row = _new(dek_store)
    assert dek_store.delete(row.dek_id) is True
    assert dek_store.delete(row.dek_id) is False
    with pytest.raises(NotFoundError):
        dek_store.get(row.dek_id)


def test_create_many_then_delete_many(dek_store: DekStore) -> None:
    """A batch of new rows reads back as one at a time would; delete_many removes those there
    are and counts them."""
    deks = [
        NewDek(
            dek_id=uuid.uuid4().hex,
            mek_name="mek",
            mek_version=str(i % 2 + 1),
            wrapped=os.urandom(60),
            algorithm="A256GCM",
        )
        for i in range(5)
    ]
    dek_store.create_many(deks)
    found = dek_store.get_many([d.dek_id for d in deks])
    assert {
        k: (r.product, r.mek_name, r.mek_version, r.wrapped, r.algorithm) for k, r in found.items()
    } == {d.dek_id: (dek_store.product, "mek", d.mek_version, d.wrapped, "A256GCM") for d in deks}
    assert dek_store.count_by_version() == {"1": 3, "2": 2}
    kept = _new(dek_store)
    gone = [d.dek_id for d in deks[:3]]
    assert dek_store.delete_many([*gone, uuid.uuid4().hex]) == 3
    assert dek_store.delete_many(gone) == 0
    assert set(dek_store.get_many([d.dek_id for d in deks] + [kept.dek_id])) == {
        deks[3].dek_id,
        deks[4].dek_id,
        kept.dek_id,
    }
    dek_store.create_many([])
    assert dek_store.delete_many([]) == 0


def test_create_many_refuses_a_taken_dek_id(dek_store: DekStore) -> None:
    """A batch naming an existing dekId is refused and leaves that row as it was."""
    taken = _new(dek_store)
    with pytest.raises(AlreadyExistsError):
        dek_store.create_many(
            [
                NewDek(
                    dek_id=taken.dek_id, mek_name="m", mek_version="9", wrapped=b"x", algorithm="A"
                )
            ]
        )
    assert dek_store.get(taken.dek_id) == taken


def test_replace_wraps_is_compare_and_swap(dek_store: DekStore) -> None:
    """A wrap replacement applies only to an unchanged row; the stale writer loses."""
    row = _new(dek_store)
    first = WrapUpdate(record=row, mek_version="2", wrapped=b"new-wrap", algorithm="A256GCM")
    assert dek_store.replace_wraps([first]) == []
    after = dek_store.get(row.dek_id)
    assert (after.mek_version, after.wrapped) == ("2", b"new-wrap")
    assert after.revision != row.revision
    stale = WrapUpdate(record=row, mek_version="3", wrapped=b"stale", algorithm="A256GCM")
    assert dek_store.replace_wraps([stale]) == [row.dek_id]
    assert dek_store.get(row.dek_id).wrapped == b"new-wrap"


def test_replace_never_resurrects_a_deleted_row(dek_store: DekStore) -> None:
    """Replacing the wrap of a row deleted meanwhile loses and does not recreate it."""
    row = _new(dek_store)
    dek_store.delete(row.dek_id)
    update = WrapUpdate(record=row, mek_version="2", wrapped=b"w", algorithm="A256GCM")
    assert dek_store.replace_wraps([update]) == [row.dek_id]
    with pytest.raises(NotFoundError):
        dek_store.get(row.dek_id)


def test_replace_batch_applies_the_winners(dek_store: DekStore) -> None:
    """In one batch, the unchanged rows are updated even when others lose."""
    rows = [_new(dek_store) for _ in range(4)]
    dek_store.replace_wraps(
        [WrapUpdate(record=rows[1], mek_version="9", wrapped=b"x", algorithm="A")]
    )
    batch = [WrapUpdate(record=r, mek_version="2", wrapped=b"y", algorithm="A") for r in rows]
    assert dek_store.replace_wraps(batch) == [rows[1].dek_id]
    versions = {r.dek_id: dek_store.get(r.dek_id).mek_version for r in rows}
    assert versions == {
        rows[0].dek_id: "2",
        rows[1].dek_id: "9",
        rows[2].dek_id: "2",
        rows[3].dek_id: "2",
    }


def _all_wraps(store: DekStore, limit: int, where: ScanFilter = EVERY_ROW) -> list[WrapRow]:
    out: list[WrapRow] = []
    cursor = None
    while True:
        page = store.scan_wraps(cursor=cursor, limit=limit, where=where)
        out += page.rows
        if page.cursor is None:
            return out
        cursor = page.cursor


@pytest.mark.parametrize(
    "where",
    [
        EVERY_ROW,
        ScanFilter(exclude_version="2"),
        ScanFilter(only_version="2"),
        ScanFilter(shard=(1, 2)),
    ],
)
def test_scan_wraps_is_scan_as_tuples(dek_store: DekStore, where: ScanFilter) -> None:
    """scan_wraps returns scan's rows, in its order and with its cursors, each as
    (row, revision, dekId, version, wrap)."""
    for i in range(17):
        _new(dek_store, str(i % 3 + 1))
    pages = []
    cursor = None
    while True:
        page = dek_store.scan(cursor=cursor, limit=5, where=where)
        wraps = dek_store.scan_wraps(cursor=cursor, limit=5, where=where)
        assert wraps.cursor == page.cursor
        pages.append((page.records, wraps.rows))
        if page.cursor is None:
            break
        cursor = page.cursor
    for records, rows in pages:
        assert [(r.dek_id, r.mek_version, r.wrapped) for r in records] == [
            (dek_id, version, wrapped) for _, _, dek_id, version, wrapped in rows
        ]
        assert all(isinstance(w, bytes) for *_, w in rows)
    assert len(_all_wraps(dek_store, 4, where)) == sum(len(rows) for _, rows in pages)


def test_swap_wraps_is_compare_and_swap(dek_store: DekStore) -> None:
    """swap_wraps writes new wraps to the rows scan_wraps read, each only if unchanged: a
    row changed or deleted since the scan loses (and is not recreated), the others win."""
    made = [_new(dek_store) for _ in range(4)]
    rows = {r[2]: r for r in _all_wraps(dek_store, 100)}
    changed, deleted = made[1], made[2]
    dek_store.replace_wraps(
        [WrapUpdate(record=changed, mek_version="9", wrapped=b"other", algorithm="A")]
    )
    dek_store.delete(deleted.dek_id)
    new = [
        (row, revision, dek_id, b"new-" + dek_id.encode())
        for row, revision, dek_id, _, _ in rows.values()
    ]
    lost = dek_store.swap_wraps(new, mek_version="2", algorithm="A256GCM")
    assert sorted(lost) == sorted([changed.dek_id, deleted.dek_id])
    for record in (made[0], made[3]):
        after = dek_store.get(record.dek_id)
        assert (after.mek_version, after.wrapped, after.algorithm) == (
            "2",
            b"new-" + record.dek_id.encode(),
            "A256GCM",
        )
        assert after.revision != record.revision
    assert dek_store.get(changed.dek_id).wrapped == b"other"
    with pytest.raises(NotFoundError):
        dek_store.get(deleted.dek_id)
    stale = [(row, revision, dek_id, b"stale") for row, revision, dek_id, _, _ in rows.values()]
    assert sorted(dek_store.swap_wraps(stale, mek_version="3", algorithm="A")) == sorted(
        r.dek_id for r in made
    )
    assert dek_store.swap_wraps([], mek_version="3", algorithm="A") == []


def test_scan_pages_cover_every_row_once(dek_store: DekStore) -> None:
    """Keyset pages return each row exactly once, and the last page ends the scan."""
    rows = {_new(dek_store).dek_id for _ in range(30)}
    seen = [r.dek_id for r in _all(dek_store)]
    assert sorted(seen) == sorted(rows)


def test_scan_filters_by_version(dek_store: DekStore) -> None:
    """exclude_version and only_version select the rows on or off a version."""
    ones = {_new(dek_store, "1").dek_id for _ in range(9)}
    twos = {_new(dek_store, "2").dek_id for _ in range(5)}
    assert {r.dek_id for r in _all(dek_store, ScanFilter(exclude_version="2"))} == ones
    assert {r.dek_id for r in _all(dek_store, ScanFilter(only_version="2"))} == twos


def test_scan_shards_split_the_rows(dek_store: DekStore) -> None:
    """Shards of a scan are disjoint and together hold every row."""
    rows = {_new(dek_store).dek_id for _ in range(40)}
    parts = [{r.dek_id for r in _all(dek_store, ScanFilter(shard=(i, 3)))} for i in range(3)]
    assert set().union(*parts) == rows
    assert sum(len(p) for p in parts) == len(rows)


def test_counts(dek_store: DekStore) -> None:
    """count_by_version and count_not_on answer the runbook's verification question."""
    for version, n in (("1", 4), ("2", 3), ("3", 1)):
        for _ in range(n):
            _new(dek_store, version)
    assert dek_store.count_by_version() == {"1": 4, "2": 3, "3": 1}
    assert dek_store.count_not_on("2") == 5
    assert dek_store.count_not_on("9") == 8
    mek_name = dek_store.get(_new(dek_store, "3").dek_id).mek_name
    assert dek_store.count_under(mek_name, "3") == {dek_store.product: 2}
    assert dek_store.count_under("another-mek", "3") == {}


def test_repr_shows_no_wrapped_key(dek_store: DekStore) -> None:
    """A record's repr leaves out the wrapped DEK bytes."""
    row = _new(dek_store)
    assert repr(row.wrapped) not in repr(row)
