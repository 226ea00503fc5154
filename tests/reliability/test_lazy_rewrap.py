"""Lazy rewrap on read: DEKs that are read move to the current MEK version by themselves.

Real runtimes on each store (the local provider, real crypto), reader threads as the read
traffic, and the rotation engine's own ``migrate`` for the race: the DEKs read leave the old
version and the others stay, no compare-and-swap is lost (each DEK moves exactly once,
by the rewrapper or the engine, never both), every document still decrypts to what it was,
and the rate limit holds.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from field_encrypt.audit import DEK_REWRAPPED_LAZILY
from field_encrypt.backends.base import DekRecord
from field_encrypt.config import Settings
from field_encrypt.errors import FieldEncryptError
from field_encrypt.lazy_rewrap import CALLS_PER_DEK, LazyRewrapper
from field_encrypt.products import ProductRuntime
from field_encrypt.rotation import MigrationOptions, migrate, open_ledger
from field_encrypt.runtime import open_runtime
from field_encrypt.testing import FakeClock
from tests import figures
from tests.backends import BACKEND_KINDS, backend_for

COLLECTIONS = {"c": ["f"]}


@pytest.fixture(params=BACKEND_KINDS)
def settings(request: pytest.FixtureRequest, tmp_path: Path) -> Settings:
    backend = backend_for(request.param, request, tmp_path)
    return backend.settings(
        keyring=str(tmp_path / "ring.json"), mek_name="m", key_state_poll_seconds=0
    )


def _open(settings: Settings, **overrides: Any) -> ProductRuntime:
    return open_runtime(settings.model_copy(update=overrides), product="p", collections=COLLECTIONS)


@pytest.fixture
def documents(settings: Settings) -> Iterator[dict[str, dict[str, Any]]]:
    """120 documents sealed under MEK version 1; version 2 is current afterwards."""
    writer = _open(settings)
    docs = {f"d{i}": writer.encryptor.encrypt_document("c", f"d{i}", {"f": i}) for i in range(120)}
    writer.provider.create_version()
    writer.close()
    yield docs


def _read(runtime: ProductRuntime, docs: dict[str, dict[str, Any]], rounds: int) -> None:
    """Read traffic: four threads decrypting ``docs`` over and over; every read must work."""
    errors: list[Exception] = []

    def reader(offset: int) -> None:
        items = list(docs.items())
        try:
            for _ in range(rounds):
                for doc_id, doc in items[offset:] + items[:offset]:
                    assert runtime.encryptor.decrypt_document("c", doc_id, doc)["f"] == int(
                        doc_id[1:]
                    )
        except (AssertionError, FieldEncryptError) as exc:  # reported in the test's thread
            errors.append(exc)

    threads = [threading.Thread(target=reader, args=(i * 7,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors[0]


def _versions(runtime: ProductRuntime, docs: dict[str, dict[str, Any]]) -> dict[str, str]:
    ids = {d: runtime.encryptor.dek_id_of("c", doc) for d, doc in docs.items()}
    records = runtime.dek_store.get_many([i for i in ids.values() if i])
    return {d: records[i].mek_version for d, i in ids.items() if i}


def _all_decrypt(settings: Settings, docs: dict[str, dict[str, Any]]) -> None:
    """A fresh process (cold cache) reads every document to what it was sealed from."""
    fresh = _open(settings)
    try:
        for doc_id, doc in docs.items():
            assert fresh.encryptor.decrypt_document("c", doc_id, doc)["f"] == int(doc_id[1:])
    finally:
        fresh.close()


def test_the_deks_that_are_read_move_to_the_current_version_and_the_others_stay(
    settings: Settings, documents: dict[str, dict[str, Any]]
) -> None:
    """Under read traffic alone, with lazy rewrap on: the 60 DEKs read are rewrapped under
    version 2 (checked, compare-and-swap), the 60 not read stay on 1, no read failed or
    waited for it, nothing conflicted or failed, and each batch left an audit event."""
    reader = _open(settings, lazy_rewrap=True, lazy_rewrap_max_rps=100_000)
    read = dict(list(documents.items())[:60])
    try:
        _read(reader, read, rounds=3)
        rewrapper = reader.encryptor.rewrapper
        assert rewrapper is not None and rewrapper.drain()
        stats = rewrapper.stats()
        versions = _versions(reader, documents)
        assert reader.audit is not None
        events = reader.audit.events(types=[DEK_REWRAPPED_LAZILY])
    finally:
        reader.close()
    assert {versions[d] for d in read} == {"2"}
    assert {v for d, v in versions.items() if d not in read} == {"1"}
    assert (stats.rewrapped, stats.conflicts, stats.failed, stats.dropped) == (60, 0, 0, 0)
    assert sum(e.data["rewrapped"] for e in events) == 60
    assert {i for e in events for i in e.data["dekIds"]} == {
        reader.encryptor.dek_id_of("c", doc) for doc in read.values()
    }
    _all_decrypt(settings, documents)


def test_an_engine_run_at_the_same_time_stays_correct(
    settings: Settings, documents: dict[str, dict[str, Any]]
) -> None:
    """Readers with lazy rewrap on and a ``migrate rewrap-deks`` run in another runtime,
    at once: the run completes with no failure, every DEK ends on version 2, each DEK was
    moved exactly once (rewrapper wins + engine changes = 120: no CAS lost, none doubled),
    and every document decrypts as before."""
    reader = _open(settings, lazy_rewrap=True, lazy_rewrap_max_rps=100_000)
    engine = _open(settings)
    try:
        traffic = threading.Thread(target=_read, args=(reader, documents, 2))
        traffic.start()
        rewrapper = reader.encryptor.rewrapper
        assert rewrapper is not None
        deadline = time.monotonic() + 30
        while rewrapper.stats().rewrapped < 10 and time.monotonic() < deadline:
            time.sleep(0.005)  # let the rewrapper get going, so both really race
        report = migrate(
            engine, open_ledger(engine), MigrationOptions(mode="rewrap-deks", batch_size=10)
        )
        traffic.join()
        assert rewrapper.drain()
        stats = rewrapper.stats()
        left = engine.dek_store.count_not_on("2")
    finally:
        reader.close()
        engine.close()
    assert report.status == "completed" and report.failure_count == 0
    assert left == 0
    assert stats.failed == 0
    assert stats.rewrapped + report.counters.changed == len(documents)
    _all_decrypt(settings, documents)
    figures.record(
        "lazy_rewrap",
        deks=len(documents),
        by_rewrapper=stats.rewrapped,
        by_engine=report.counters.changed,
        rewrapper_conflicts=stats.conflicts,
        engine_conflicts=report.counters.conflicts,
    )


def test_the_rewrapper_never_takes_more_than_its_share_of_the_provider(
    settings: Settings, documents: dict[str, dict[str, Any]]
) -> None:
    """At 30 calls a second (3 per DEK), 10 DEKs offered at once take 0.9 s of the bucket's
    (fake) clock (30 calls, one DEK's saved up): never more than the configured rate,
    however fast they are offered."""
    runtime = _open(settings)
    clock = FakeClock()
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        clock.advance(seconds)

    rewrapper = LazyRewrapper(
        product="p",
        provider=runtime.provider,
        store=runtime.dek_store,
        max_rps=30,
        clock=clock.monotonic,
        sleep=sleep,
    )
    try:
        records = _records(runtime, list(documents.values())[:10])
        assert all(rewrapper.offer(r) for r in records)
        assert not rewrapper.offer(records[0])  # already queued: not twice
        started = clock.monotonic()
        assert rewrapper.run_batch(timeout=0) == 10
        elapsed = clock.monotonic() - started
    finally:
        runtime.close()
    assert rewrapper.stats().rewrapped == 10
    assert elapsed == pytest.approx((10 * CALLS_PER_DEK - CALLS_PER_DEK) / 30)
    assert elapsed == pytest.approx(sum(slept))


def _records(runtime: ProductRuntime, docs: list[dict[str, Any]]) -> list[DekRecord]:
    ids = [runtime.encryptor.dek_id_of("c", d) for d in docs]
    found = runtime.dek_store.get_many([i for i in ids if i])
    return [found[i] for i in ids if i]


def test_a_full_queue_drops_offers_and_reads_never_wait(tmp_path: Path) -> None:
    """With the rewrapper stalled, reads go on at full speed; offers past the queue's size
    are dropped and counted (a later read offers them again)."""
    from field_encrypt.config import load_settings

    settings = load_settings(
        {}, database=str(tmp_path / "db.sqlite"), keyring=str(tmp_path / "ring.json")
    )
    runtime = _open(settings, key_state_poll_seconds=0)
    try:
        docs = [runtime.encryptor.encrypt_document("c", f"d{i}", {"f": i}) for i in range(5)]
        runtime.provider.create_version()
        rewrapper = LazyRewrapper(
            product="p", provider=runtime.provider, store=runtime.dek_store, queue_size=2
        )  # not started: nothing takes from its queue
        runtime.encryptor.rewrapper = rewrapper
        runtime.encryptor.cache.clear()
        started = time.perf_counter()
        for i, doc in enumerate(docs):
            assert runtime.encryptor.decrypt_document("c", f"d{i}", doc)["f"] == i
        assert time.perf_counter() - started < 5  # no read waited on the rewrapper
        stats = rewrapper.stats()
    finally:
        runtime.close()
    assert (stats.offered, stats.dropped, stats.pending) == (5, 3, 2)
