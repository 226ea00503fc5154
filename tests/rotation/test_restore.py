"""restore repairs: a DEK row that no longer unwraps is replaced from the backup (compare-
and-swap, audited, counted), a missing one is added, and what no backup can save is named."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from field_encrypt import audit
from field_encrypt.products import ProductRuntime
from field_encrypt.rehearsal import check, corrupt, delete, product, seed
from field_encrypt.rotation import MigrationOptions, backup, migrate, open_ledger, restore
from tests.backends import BACKEND_KINDS, Backend


@pytest.fixture
def runtime(store_backend: Backend, tmp_path: Path) -> Iterator[ProductRuntime]:
    """The rehearsal product on a fresh database of each kind, 12 documents seeded."""
    rt = product.open(store_backend.settings(keyring=str(tmp_path / "keyring.json")))
    seed(rt, 12)
    yield rt
    rt.close()


def _restored(runtime: ProductRuntime) -> list[tuple[str, str]]:
    assert runtime.audit is not None
    events = runtime.audit.events(types=[audit.DEK_RESTORED])
    return sorted((e.data["dekId"], e.data["reason"]) for e in events)


@pytest.mark.parametrize("store_backend", BACKEND_KINDS, indirect=True)
def test_restore_repairs_corrupted_rows_and_adds_deleted_ones(
    runtime: ProductRuntime, tmp_path: Path
) -> None:
    """Backup, rewrap, then 3 wraps garbled and 2 rows deleted: restore puts back the 5 from
    the backup (their documents read again), keeps the 7 rewrapped rows, audits each write;
    a second restore changes nothing (it used to report the 3 garbled rows as "kept", exit 0)."""
    path = tmp_path / "deks.jsonl"
    backup(runtime, open_ledger(runtime), path)
    runtime.provider.create_version()
    migrate(runtime, open_ledger(runtime), MigrationOptions(mode="rewrap-deks"))
    garbled = corrupt(runtime, 3)
    deleted = delete(runtime, 2)
    runtime.encryptor.cache.clear()
    assert check(runtime) == (12, 5)

    report = restore(runtime, path)

    assert (report.inserted, report.repaired, report.identical, report.kept) == (2, 3, 0, 7)
    assert (report.unreadable, report.unreadable_examples) == (0, [])
    runtime.encryptor.cache.clear()
    assert check(runtime) == (12, 0)
    assert runtime.dek_store.count_by_version() == {"1": 5, "2": 7}
    expected = sorted([(d, "unreadable") for d in garbled] + [(d, "missing") for d in deleted])
    assert _restored(runtime) == expected
    again = restore(runtime, path)
    assert (again.inserted, again.repaired, again.identical, again.kept) == (0, 0, 5, 7)
    assert len(_restored(runtime)) == 5


@pytest.mark.parametrize("store_backend", BACKEND_KINDS, indirect=True)
def test_restore_names_what_the_backup_cannot_save(runtime: ProductRuntime, tmp_path: Path) -> None:
    """Rows garbled before the backup was taken stay unreadable: counted and named, not
    "kept" or "identical", and nothing is written over them."""
    garbled = corrupt(runtime, 2)
    path = tmp_path / "deks.jsonl"
    backup(runtime, open_ledger(runtime), path)

    report = restore(runtime, path)

    assert (report.unreadable, report.identical, report.repaired) == (2, 10, 0)
    assert sorted(report.unreadable_examples) == sorted(garbled)
    assert _restored(runtime) == []
