"""``migrate --mode reindex`` and the index-key retire gate, on SQLite, PostgreSQL and Cosmos DB."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from field_encrypt import audit
from field_encrypt.blind_index import BlindIndex, index_key_version_of
from field_encrypt.errors import ConfigurationError, RotationError
from field_encrypt.index_keys import IndexKeyring
from field_encrypt.index_values import with_index_values
from field_encrypt.products import ProductRuntime
from field_encrypt.rotation import MigrationOptions, RunReport, migrate, open_ledger, verify
from field_encrypt.rotation.reindex import index_value_counts, keyring_of, retire_index_version
from field_encrypt.testing import FakeClock
from tests.backends import BACKEND_KINDS, Backend
from tests.support.sample_product import product
from tests.support.seed import document, seed

N = 24


@pytest.fixture
def rt(store_backend: Backend, tmp_path: Path) -> Iterator[ProductRuntime]:
    """The sample product (``ssn`` and ``profile.note`` blind-indexed) on one backend."""
    runtime = product.open(
        store_backend.settings(keyring=str(tmp_path / "keyring.json"), enabled=True)
    )
    yield runtime
    runtime.close()


def _run(runtime: ProductRuntime, clock: FakeClock, owner: str = "w", **options: Any) -> RunReport:
    return migrate(
        runtime,
        open_ledger(runtime),
        MigrationOptions(mode="reindex", **options),
        clock=clock.time,
        monotonic=clock.monotonic,
        sleep=clock.sleep,
        owner=owner,
    )


def _seeded(runtime: ProductRuntime) -> IndexKeyring:
    """``N`` documents indexed under version 1, then version 2 created (now current)."""
    keyring = keyring_of(runtime)
    keyring.create(1)
    seed(runtime, N, index=keyring.open(product.indexed))
    assert keyring.create_next() == 2
    return keyring


def _find(runtime: ProductRuntime, index: BlindIndex, ssn: str) -> list[str]:
    """What an application's equality query does: match any of the value's index values."""
    return _find_each(runtime, index, [ssn])[0]


def _find_each(runtime: ProductRuntime, index: BlindIndex, ssns: list[str]) -> list[list[str]]:
    """:func:`_find` for each of ``ssns``, in one scan of the documents (a scan per lookup
    made the Cosmos DB variant a minute long)."""
    wanted = [set(index.lookup_values("records", "ssn", ssn)) for ssn in ssns]
    docs = runtime.documents["records"]
    found: list[list[str]] = [[] for _ in ssns]
    cursor = None
    while True:
        page = docs.scan(cursor=cursor, limit=50)
        for d in page.documents:
            for values, ids in zip(wanted, found, strict=True):
                if d.fields.get("ssn__bi") in values:
                    ids.append(d.id)
        if page.cursor is None:
            return found
        cursor = page.cursor


def _stored(runtime: ProductRuntime) -> dict[str, tuple[Any, ...]]:
    docs = runtime.documents["records"].scan(limit=1000).documents
    return {d.id: (d.fields, d.dek_id) for d in docs}


def _ssn_versions(runtime: ProductRuntime) -> dict[int, int]:
    out: dict[int, int] = {}
    for fields, _ in _stored(runtime).values():
        v = index_key_version_of(fields["ssn__bi"])
        out[v] = out.get(v, 0) + 1
    return out


class _Crash(BaseException):
    """A process dying (not an error the run handles)."""


class _AfterWrites:
    """A document store that calls ``then`` right after its ``n``-th write committed."""

    def __init__(self, inner: Any, n: int, then: Any) -> None:
        self.inner, self.collection, self.n, self.then = inner, inner.collection, n, then

    def __getattr__(self, name: str) -> Any:
        if name == "replace_many":  # one write at a time, so "the n-th write" is exact (the
            raise AttributeError(name)  # batched path: tests/rotation/test_document_batches.py)
        return getattr(self.inner, name)

    def replace_fields(self, document: Any, fields: Any, dek_id: Any) -> Any:
        written = self.inner.replace_fields(document, fields, dek_id)
        self.n -= 1
        if self.n == 0:
            self.then()
        return written


pytestmark = pytest.mark.parametrize("store_backend", BACKEND_KINDS, indirect=True)


def test_reindex_moves_every_value_while_lookups_find_both_versions(rt: ProductRuntime) -> None:
    """In the middle of the run (after its 10th document write) verify counts the values
    still on version 1 and a lookup finds every document, whichever version its value is
    on; at the end every value is on version 2, the tokens and DEKs are unchanged, and a
    re-run finds nothing to do."""
    clock = FakeClock()
    keyring = _seeded(rt)
    before = _stored(rt)
    index = keyring.open(product.indexed)
    assert index.versions == (2, 1)
    docs = rt.documents["records"]
    ssns = [document(i)["ssn"] for i in range(N)]
    seen: dict[str, Any] = {}

    def during() -> None:
        seen["versions"] = _ssn_versions(rt)
        seen["verify"] = verify(rt, mek_version="1", sample=0)
        seen["found"] = _find_each(rt, index, ssns)

    rt.documents = {"records": _AfterWrites(docs, 10, during)}
    report = _run(rt, clock, batch_size=5)
    rt.documents = {"records": docs}
    assert seen["versions"] == {2: 10, 1: N - 10}
    assert seen["verify"].index_version == 2
    assert seen["verify"].old_index_values == {
        "records.ssn": N - 10,
        "records.profile.note": N - 10,
    }
    assert seen["found"] == [[f"doc-{i}"] for i in range(N)]
    assert report.status == "completed" and report.remaining == 0
    assert report.counters.changed == N
    assert _ssn_versions(rt) == {2: N}
    after = _stored(rt)
    for doc_id, (fields, dek_id) in before.items():
        assert after[doc_id][1] == dek_id and after[doc_id][0]["ssn"] == fields["ssn"]
    assert _find_each(rt, index, ssns) == [[f"doc-{i}"] for i in range(N)]
    assert all(_find_each(rt, keyring.blind_index(product.indexed, version=2), ssns))
    report = verify(rt, mek_version="1", sample=N)
    assert report.clean and report.old_index_values == {"records.ssn": 0, "records.profile.note": 0}
    again = _run(rt, clock)
    assert again.counters.changed == 0 and again.remaining == 0
    assert rt.audit is not None
    events = rt.audit.events(types=(audit.DOCUMENT_REINDEXED,))
    assert sum(e.data["count"] for e in events) == N
    assert {d["indexKeyVersion"] for e in events for d in e.data["documents"]} == {"2"}


def test_dry_run_changes_nothing(rt: ProductRuntime) -> None:
    """A dry run counts the values per version and the documents it would move, writes none."""
    _seeded(rt)
    before = _stored(rt)
    report = _run(rt, FakeClock(), dry_run=True)
    assert report.status == "dry_run" and report.dry_run is not None
    assert report.dry_run.matched == N and report.dry_run.by_version == {"index:1": 2 * N}
    assert _stored(rt) == before
    assert index_value_counts(rt) == {"records.ssn": {"1": N}, "records.profile.note": {"1": N}}


def test_a_crash_mid_run_resumes_where_it_stopped(
    rt: ProductRuntime, store_backend: Backend
) -> None:
    """A run interrupted after some documents were written (between checkpoints) is resumed
    by the next one from its last checkpoint; every value ends on version 2, none is lost.
    On SQLite and PostgreSQL the interrupted page's writes are one transaction with its
    event, so they are rolled back; on Cosmos DB they stand (their page's intent records
    them). (kill -9, where the lease has to expire: test_kill_resume.py.)"""
    clock = FakeClock()
    _seeded(rt)

    docs = rt.documents["records"]

    def crash() -> None:
        raise _Crash()

    rt.documents = {"records": _AfterWrites(docs, 8, crash)}
    with pytest.raises(_Crash):
        _run(rt, clock, owner="dead", batch_size=5)
    rt.documents = {"records": docs}
    written = 8 if store_backend.kind == "cosmos" else 5  # the first page of 5 committed
    assert _ssn_versions(rt) == {2: written, 1: N - written}
    report = _run(rt, clock, owner="next", batch_size=5)
    assert report.resumed and report.status == "completed" and report.remaining == 0
    assert report.counters.failed == 0
    assert _ssn_versions(rt) == {2: N}
    for fields, _ in _stored(rt).values():
        assert index_key_version_of(fields["profile"]["note__bi"]) == 2


def test_the_old_version_retires_only_through_the_gate(rt: ProductRuntime) -> None:
    """Retiring refuses the current version and an old one that index values are still on;
    after the reindex it deletes the root key (audited), lookups go on with version 2 alone."""
    clock = FakeClock()
    keyring = _seeded(rt)
    with pytest.raises(RotationError, match="still on it"):
        retire_index_version(rt, 1)
    with pytest.raises(RotationError, match="current"):
        retire_index_version(rt, 2)
    with pytest.raises(ConfigurationError, match="does not exist"):
        retire_index_version(rt, 7)
    _run(rt, clock, batch_size=10)
    retired = retire_index_version(rt, 1)
    assert retired.current == 2 and keyring.versions() == [2]
    index = keyring.open(product.indexed)
    assert index.versions == (2,)
    assert _find(rt, index, document(3)["ssn"]) == ["doc-3"]
    assert rt.audit is not None
    kinds = [
        (e.type, e.data["version"])
        for e in rt.audit.events(types=(audit.INDEX_KEY_CREATED, audit.INDEX_KEY_RETIRED))
    ]
    created, retired = audit.INDEX_KEY_CREATED, audit.INDEX_KEY_RETIRED
    assert kinds == [(created, 1), (created, 2), (retired, 1)]
    for event in rt.audit.events():
        assert "wrapped" not in str(event.data).lower()
    # Version 66 (in the second probe window) becomes current and every value moves to it;
    # retiring 2 would leave versions 1..64 all missing, so 66 could no longer be found.
    assert keyring.create(66)
    assert _run(rt, clock, batch_size=10).counters.changed == N
    with pytest.raises(RotationError, match="windows of 64"):
        retire_index_version(rt, 2)
    assert keyring.versions() == [2, 66]


def test_application_writes_during_the_run_are_never_lost(rt: ProductRuntime) -> None:
    """Mid-page, the application rewrites two documents the run has already read: one with
    a new value under version 2 (the run skips it), one by a process still on version 1 (the
    run re-reads it and indexes the new value). Both values are found afterwards."""
    clock = FakeClock()
    keyring = _seeded(rt)
    old = keyring.blind_index(product.indexed, version=1)
    new = keyring.open(product.indexed)
    docs = rt.documents["records"]

    def app_write(doc_id: str, ssn: str, index: BlindIndex) -> None:
        current = docs.get(doc_id)
        plain = {**rt.encryptor.decrypt_document("records", doc_id, current.fields), "ssn": ssn}
        plain = {k: v for k, v in plain.items() if k != "ssn__bi"}
        sealed = rt.encryptor.encrypt_document("records", doc_id, plain, dek_id=current.dek_id)
        docs.replace_fields(
            current, with_index_values(index, "records", sealed, plain), current.dek_id
        )

    *_, a, b = [d.id for d in docs.scan(limit=5).documents]  # in the run's first page

    def during() -> None:
        app_write(a, "999-00-0003", new)
        app_write(b, "999-00-0004", old)

    rt.documents = {"records": _AfterWrites(docs, 1, during)}
    report = _run(rt, clock, batch_size=5)
    rt.documents = {"records": docs}
    assert report.status == "completed" and report.counters.failed == 0
    # a: lost its write, re-read, already on version 2: skipped; b: re-read, redone
    c = report.counters
    assert (c.changed, c.skipped, c.conflicts) == (N - 1, 1, 1)
    assert _ssn_versions(rt) == {2: N}
    assert _find(rt, new, "999-00-0003") == [a]
    assert _find(rt, new, "999-00-0004") == [b]
    assert _find(rt, new, document(int(b.removeprefix("doc-")))["ssn"]) == []
