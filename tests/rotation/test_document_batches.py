"""The document modes write a page in batches, on every store, with the one-document outcomes.

A page's new DEKs are created in one store batch, its documents written in one batch with a
compare-and-swap per document, and the old DEKs of re-encrypted documents deleted in one batch
(``docwalk``). A document changed or deleted between the scan and the batched write takes the
one-document path; a wrap that fails fails only its document. The crash points of the same
steps are in ``tests/reliability/test_crash_consistency.py`` and ``test_kill_resume.py``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from field_encrypt import audit
from field_encrypt.audit_outbox import reconcile
from field_encrypt.backends.base import NewDek
from field_encrypt.backends.registry import open_lifecycle_store, open_run_ledger
from field_encrypt.config import load_settings
from field_encrypt.documents import BatchDocumentStore, DocumentWrite
from field_encrypt.errors import DekMissingError, KeyProviderError, LeaseHeldError
from field_encrypt.products import ProductRuntime
from field_encrypt.rotation import (
    MigrationOptions,
    RunReport,
    migrate,
    respond_to_compromise,
    verify,
)
from field_encrypt.testing import FaultInjectingProvider
from tests.backends import BACKEND_KINDS, Backend
from tests.support.sample_product import product
from tests.support.seed import document, read_all, seed

COUNT = 12


class _Recording:
    """A store that counts the calls made to it, and can act just before one of them."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.calls: Counter[str] = Counter()
        self.before: dict[str, Callable[[], None]] = {}

    def __getattr__(self, name: str) -> Any:
        method = getattr(self.inner, name)
        if not callable(method):
            return method

        def call(*args: Any, **kwargs: Any) -> Any:
            self.calls[name] += 1
            hook = self.before.pop(name, None)
            if hook is not None:
                hook()
            return method(*args, **kwargs)

        return call


@pytest.fixture
def runtime(store_backend: Backend, tmp_path: Path) -> Iterator[ProductRuntime]:
    env = {
        **store_backend.environ,
        "FIELD_ENCRYPT_KEY_PROVIDER": "local",
        "FIELD_ENCRYPT_KEYRING": str(tmp_path / "keyring.json"),
        "FIELD_ENCRYPT_ENABLED": "true",
    }
    rt = product.open(load_settings(env))
    seed(rt, COUNT)
    rt.provider.create_version()
    yield rt
    rt.close()


def _record(runtime: ProductRuntime) -> tuple[_Recording, _Recording]:
    docs = _Recording(runtime.documents["records"])
    deks = _Recording(runtime.dek_store)
    runtime.documents = {"records": docs}  # type: ignore[dict-item]
    runtime.dek_store = deks  # type: ignore[assignment]
    return docs, deks


def _reencrypt(runtime: ProductRuntime, batch_size: int = 5) -> RunReport:
    return migrate(
        runtime,
        open_run_ledger(runtime.database),
        MigrationOptions(mode="re-encrypt", batch_size=batch_size),
    )


def _dek_ids(runtime: ProductRuntime) -> dict[str, str | None]:
    return {d.id: d.dek_id for d in runtime.documents["records"].scan(limit=1000).documents}


def _check_all_on_2(runtime: ProductRuntime, expected: dict[str, dict[str, Any]]) -> None:
    runtime.encryptor.cache.clear()
    assert read_all(runtime) == expected
    assert runtime.dek_store.count_by_version() == {"2": len(expected)}
    assert verify(runtime, mek_version="2", sample=COUNT).clean


@pytest.mark.parametrize("store_backend", BACKEND_KINDS, indirect=True)
def test_reencrypt_writes_each_page_in_batches(runtime: ProductRuntime) -> None:
    """Three pages: three batches of new DEKs, of documents and of deleted old DEKs, and no
    one-row writes; every document under a fresh DEK, the old ones gone."""
    assert isinstance(runtime.documents["records"], BatchDocumentStore)
    before = _dek_ids(runtime)
    scanned = list(before)  # the store's scan order
    docs, deks = _record(runtime)
    report = _reencrypt(runtime)
    assert report.status == "completed"
    assert (report.counters.changed, report.counters.conflicts) == (COUNT, 0)
    assert (docs.calls["replace_many"], docs.calls["replace_fields"]) == (3, 0)
    assert (deks.calls["create_many"], deks.calls["create"]) == (3, 0)
    assert (deks.calls["delete_many"], deks.calls["delete"]) == (3, 0)
    after = _dek_ids(runtime)
    assert not set(before.values()) & set(after.values())
    assert runtime.dek_store.get_many([d for d in before.values() if d]) == {}
    _check_all_on_2(runtime, {f"doc-{i}": document(i) for i in range(COUNT)})
    assert runtime.audit is not None
    pages = runtime.audit.events(types=[audit.DOCUMENT_REENCRYPTED])
    items = [d for p in pages for d in p.data["documents"]]
    assert [d["id"] for d in items] == scanned  # named in scan order
    assert {d["previousDekId"] for d in items} == set(before.values())


@pytest.mark.parametrize("store_backend", BACKEND_KINDS, indirect=True)
def test_a_document_changed_before_its_page_is_written_is_redone_alone(
    runtime: ProductRuntime,
) -> None:
    """An application write lands between the page's sealing and its batched write: that
    document loses its compare-and-swap, is read again and re-encrypted with its new value."""
    docs, _ = _record(runtime)
    store = docs.inner
    target = list(_dek_ids(runtime))[1]  # on the first page, in any store's scan order
    number = int(target.removeprefix("doc-"))

    def app_writes() -> None:
        current = store.get(target)
        fields = runtime.encryptor.encrypt_document(
            "records", target, {**document(number), "ssn": "999-99-9999"}, dek_id=current.dek_id
        )
        store.replace_fields(current, fields, current.dek_id)

    docs.before["replace_many"] = app_writes
    report = _reencrypt(runtime)
    assert report.status == "completed"
    assert (report.counters.changed, report.counters.conflicts) == (COUNT, 1)
    assert report.failure_count == 0
    expected = {f"doc-{i}": document(i) for i in range(COUNT)}
    expected[target]["ssn"] = "999-99-9999"
    _check_all_on_2(runtime, expected)


@pytest.mark.parametrize("store_backend", BACKEND_KINDS, indirect=True)
def test_a_document_deleted_before_its_page_is_written_is_skipped(
    runtime: ProductRuntime,
) -> None:
    """A document deleted between the page's sealing and its batched write is skipped and the
    new DEK made for it dropped (no orphan); the others are re-encrypted."""
    docs, _ = _record(runtime)
    victim = docs.inner.get(list(_dek_ids(runtime))[2])  # on the first page
    docs.before["replace_many"] = lambda: docs.inner.delete(victim.id)
    report = _reencrypt(runtime)
    assert report.status == "completed"
    assert (report.counters.changed, report.counters.skipped) == (COUNT - 1, 1)
    assert report.failure_count == 0
    counts = runtime.dek_store.count_by_version()
    assert counts == {"1": 1, "2": COUNT - 1}  # the deleted document's own DEK stays its owner's
    assert victim.dek_id in runtime.dek_store.get_many([victim.dek_id])
    runtime.encryptor.cache.clear()
    expected = {f"doc-{i}": document(i) for i in range(COUNT)}
    del expected[victim.id]
    assert read_all(runtime) == expected


@pytest.mark.parametrize("store_backend", ["sqlite"], indirect=True)
def test_reencrypt_calls_an_in_process_provider_once_per_page(runtime: ProductRuntime) -> None:
    """With the local keyring, each page's new DEKs are wrapped in one ``wrap_many`` call and
    its old DEKs unwrapped in one ``unwrap_many`` call: no provider call per document."""
    provider = _Recording(runtime.provider)
    runtime.provider = provider  # type: ignore[assignment]
    runtime.encryptor.provider = provider  # type: ignore[assignment]
    runtime.encryptor.cache.clear()  # the seeding cached the old DEKs
    report = _reencrypt(runtime)
    assert report.status == "completed"
    assert (provider.calls["wrap_many"], provider.calls["wrap"]) == (3, 0)
    assert (provider.calls["unwrap_many"], provider.calls["unwrap"]) == (3, 0)
    _check_all_on_2(runtime, {f"doc-{i}": document(i) for i in range(COUNT)})


@pytest.mark.parametrize("store_backend", ["sqlite"], indirect=True)
def test_a_wrap_that_fails_fails_only_its_document(runtime: ProductRuntime) -> None:
    """The second new DEK of the run cannot be wrapped: that document is a failure and keeps
    its old DEK, every other one is re-encrypted, and no DEK is left over."""
    faulty = FaultInjectingProvider(runtime.provider)
    runtime.provider = faulty
    runtime.encryptor.provider = faulty
    wraps = []

    def second_wrap_fails(name: str) -> None:
        if name == "wrap":
            wraps.append(1)
            if len(wraps) == 2:
                raise KeyProviderError("the key service refused this wrap")

    faulty.before_call(second_wrap_fails)
    before = _dek_ids(runtime)
    report = _reencrypt(runtime)
    assert report.status == "completed_with_failures"
    assert (report.counters.changed, report.failure_count) == (COUNT - 1, 1)
    assert [f.item for f in report.failures] == ["records/doc-1"]
    assert _dek_ids(runtime)["doc-1"] == before["doc-1"]
    assert runtime.dek_store.count_by_version() == {"1": 1, "2": COUNT - 1}
    runtime.encryptor.cache.clear()
    assert read_all(runtime) == {f"doc-{i}": document(i) for i in range(COUNT)}


@pytest.mark.parametrize("store_backend", BACKEND_KINDS, indirect=True)
def test_dek_exposed_reencrypts_in_batches(runtime: ProductRuntime) -> None:
    """``keys compromised --dek-exposed`` on version 1 (what the CLI runs): rewrap, then the
    re-encrypt in page batches; every old DEK deleted, every document readable."""
    before = _dek_ids(runtime)
    docs, deks = _record(runtime)
    report = respond_to_compromise(
        runtime,
        open_run_ledger(runtime.database),
        open_lifecycle_store(runtime.database),
        "1",
        dek_exposed=True,
        batch_size=5,
    )
    assert report.stopped_at is None
    assert report.reencrypt is not None and report.reencrypt.counters.changed == COUNT
    assert (docs.calls["replace_many"], docs.calls["replace_fields"]) == (3, 0)
    assert deks.calls["delete_many"] == 3
    runtime.dek_store = deks.inner
    assert runtime.dek_store.get_many([d for d in before.values() if d]) == {}
    versions = runtime.dek_store.count_by_version()
    assert sum(versions.values()) == COUNT and "1" not in versions
    runtime.encryptor.cache.clear()
    assert read_all(runtime) == {f"doc-{i}": document(i) for i in range(COUNT)}


def test_writes_of_a_page_are_one_transaction_on_sqlite(tmp_path: Path) -> None:
    """On SQLite a batch either commits whole or not at all: a write that fails mid-batch
    leaves every document of it as it was."""
    from field_encrypt.backends.sqlite.db import SqliteDatabase
    from field_encrypt.backends.sqlite.documents import SqliteDocumentStore
    from field_encrypt.errors import StoreError

    database = SqliteDatabase(tmp_path / "docs.db")
    store = SqliteDocumentStore(database, collection="records")
    docs = [store.insert(f"doc-{i}", {"n": i}, None) for i in range(3)]
    database.connection().execute(
        "CREATE TRIGGER refuse BEFORE UPDATE ON documents WHEN NEW.id = 'doc-2' "
        "BEGIN SELECT RAISE(ABORT, 'refused'); END"
    )
    with pytest.raises(StoreError):
        store.replace_many([DocumentWrite(d, {"n": "new"}, None) for d in docs])
    assert [store.get(d.id) for d in docs] == docs
    database.close()


@pytest.mark.parametrize("store_backend", BACKEND_KINDS, indirect=True)
def test_a_dek_shredded_while_its_page_is_migrated_stays_shredded(
    runtime: ProductRuntime,
) -> None:
    """An application crypto-shreds a document's DEK (keeping the document) after the page
    read it and before the batched write: the document is a failure and stays unreadable,
    as when the shred comes before a one-document step; no new DEK is left for it."""
    docs, _ = _record(runtime)
    victim = docs.inner.get(list(_dek_ids(runtime))[3])  # on the first page
    assert victim.dek_id is not None
    docs.before["replace_many"] = lambda: runtime.encryptor.shred(victim.dek_id)  # type: ignore[arg-type]
    report = _reencrypt(runtime)
    assert report.status == "completed_with_failures"
    assert (report.counters.changed, report.failure_count) == (COUNT - 1, 1)
    assert [f.item for f in report.failures] == [f"records/{victim.id}"]
    assert "DekMissingError" in report.failures[0].reason
    assert runtime.dek_store.count_by_version() == {"2": COUNT - 1}
    stored = docs.inner.get(victim.id)
    assert stored.dek_id is not None and runtime.dek_store.get_many([stored.dek_id]) == {}
    runtime.encryptor.cache.clear()
    with pytest.raises(DekMissingError):
        runtime.encryptor.decrypt_document("records", victim.id, stored.fields)


def test_a_sqlite_document_scan_walks_by_seq(tmp_path: Path) -> None:
    """Each page of a SQLite document scan is a range of the rowid, not a read and sort of
    every document after the cursor (which made a whole scan quadratic in its size)."""
    from field_encrypt.backends.sqlite.db import SqliteDatabase
    from field_encrypt.backends.sqlite.documents import SqliteDocumentStore

    database = SqliteDatabase(tmp_path / "docs.db")
    store = SqliteDocumentStore(database, collection="records")
    for i in range(30):
        store.insert(f"doc-{i}", {"n": i}, None)
    seen: list[str] = []
    database.connection().set_trace_callback(seen.append)
    page = store.scan(limit=10)
    store.scan(cursor=page.cursor, limit=10, shard=(1, 2))
    database.connection().set_trace_callback(None)
    scans = [s for s in seen if s.lstrip().upper().startswith("SELECT")]
    assert len(scans) == 2
    for sql in scans:
        plan = " ".join(r[3] for r in database.query(f"EXPLAIN QUERY PLAN {sql}"))
        assert "TEMP B-TREE" not in plan and "PRIMARY KEY" in plan, plan
    database.close()


def test_a_sqlite_get_many_reads_by_dek_id(tmp_path: Path) -> None:
    """A page's DEK rows are read through the dekId index, whatever the page's size: with
    many ids the planner preferred the (product, mek_version) index and read every DEK of
    the product for each page."""
    from field_encrypt.backends.sqlite.db import SqliteDatabase
    from field_encrypt.backends.sqlite.dek_store import SqliteDekStore

    database = SqliteDatabase(tmp_path / "deks.db")
    store = SqliteDekStore(database, product="p")
    deks = [
        NewDek(dek_id=f"{i:032x}", mek_name="m", mek_version="1", wrapped=b"w", algorithm="A")
        for i in range(600)
    ]
    store.create_many(deks)
    seen: list[str] = []
    database.connection().set_trace_callback(seen.append)
    found = store.get_many([d.dek_id for d in deks])
    database.connection().set_trace_callback(None)
    assert len(found) == 600
    reads = [s for s in seen if s.lstrip().upper().startswith("SELECT")]
    assert len(reads) == 2  # chunks of 500
    for sql in reads:
        plan = " ".join(r[3] for r in database.query(f"EXPLAIN QUERY PLAN {sql}"))
        assert "dek_id=?" in plan and "dek_store_version" not in plan, plan
    database.close()


class _OneAtATime(_Recording):
    """A document store without ``replace_many`` (as NoteLett's, or an application's own)."""

    def __getattr__(self, name: str) -> Any:
        if name == "replace_many":
            raise AttributeError(name)
        return super().__getattr__(name)


@pytest.mark.parametrize("store_backend", ["sqlite"], indirect=True)
def test_a_store_without_replace_many_is_migrated_one_document_at_a_time(
    runtime: ProductRuntime,
) -> None:
    """The one-document path: each document's DEK created, its write, its old DEK deleted."""
    docs = _OneAtATime(runtime.documents["records"])
    deks = _Recording(runtime.dek_store)
    runtime.documents = {"records": docs}  # type: ignore[dict-item]
    runtime.dek_store = deks  # type: ignore[assignment]
    assert not isinstance(docs, BatchDocumentStore)
    report = _reencrypt(runtime)
    assert report.status == "completed" and report.counters.changed == COUNT
    assert (docs.calls["replace_fields"], deks.calls["create"], deks.calls["delete"]) == (
        COUNT,
        COUNT,
        COUNT,
    )
    assert (deks.calls["create_many"], deks.calls["delete_many"]) == (0, 0)
    runtime.dek_store = deks.inner
    _check_all_on_2(runtime, {f"doc-{i}": document(i) for i in range(COUNT)})


class _LosesLease:
    """A run ledger whose ``at``-th checkpoint finds the lease taken over (after the page's
    writes: the first checkpoint of a re-encrypt page names its new DEKs, the second ends it)."""

    def __init__(self, inner: Any, at: int) -> None:
        self.inner, self.at, self.calls = inner, at, 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def checkpoint(self, *args: Any, **kwargs: Any) -> Any:
        self.calls += 1
        if self.calls == self.at:
            raise LeaseHeldError("the shard's lease was taken over")
        return self.inner.checkpoint(*args, **kwargs)


@pytest.mark.parametrize("store_backend", BACKEND_KINDS, indirect=True)
def test_a_page_whose_checkpoint_loses_the_lease_keeps_its_event(
    runtime: ProductRuntime, store_backend: Backend
) -> None:
    """The lease lost at a page's checkpoint, after the page's documents were written: on
    SQLite and PostgreSQL the page rolls back with its event; on Cosmos DB its writes stand
    and its intent stays (a lost lease is no refusal before the act), so the reconciliation
    ``audit verify`` runs records them. No document is left migrated without its event."""
    before = _dek_ids(runtime)
    ledger = _LosesLease(open_run_ledger(runtime.database), at=2)
    with pytest.raises(LeaseHeldError):
        migrate(runtime, ledger, MigrationOptions(mode="re-encrypt", batch_size=5))  # type: ignore[arg-type]
    reconcile(runtime)
    after = _dek_ids(runtime)
    moved = sorted(i for i in before if after[i] != before[i])
    assert runtime.audit is not None
    pages = runtime.audit.events(types=[audit.DOCUMENT_REENCRYPTED])
    assert sorted(d["id"] for p in pages for d in p.data["documents"]) == moved
    assert bool(moved) == (store_backend.kind == "cosmos")
    assert runtime.audit.verify().intact
