"""rewrap-deks through the library: the straight path, conflicts, failures and faults."""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
from typing import Any

import pytest

from field_encrypt import audit
from field_encrypt.backends.base import WrapUpdate
from field_encrypt.backends.registry import open_run_ledger
from field_encrypt.errors import LeaseHeldError
from field_encrypt.products import ProductRuntime
from field_encrypt.providers.base import dek_context
from field_encrypt.rotation import RetryPolicy, migrate
from field_encrypt.rotation.ledger import NewRun
from field_encrypt.rotation.run import NullObserver
from field_encrypt.testing import FakeClock
from tests.rotation.helpers import faulty, run, versions_of
from tests.support.fixtures import on_every_store
from tests.support.raw import set_wrap
from tests.support.seed import document, read_all, seed

pytestmark = on_every_store


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def test_rewrap_moves_every_dek_and_documents_still_read(
    runtime: ProductRuntime, clock: FakeClock
) -> None:
    """Every DEK ends on the new version, in batches, and every document decrypts the same."""
    seed(runtime, 120)
    runtime.provider.create_version()
    report = run(runtime, clock, batch_size=25)
    assert report.status == "completed"
    assert (report.counters.matched, report.counters.changed) == (120, 120)
    assert report.remaining == 0
    assert versions_of(runtime) == {"2": 120}
    runtime.encryptor.cache.clear()
    assert read_all(runtime) == {f"doc-{i}": document(i) for i in range(120)}


def test_rewrap_counts_the_deks_once_before_and_once_after(
    runtime: ProductRuntime, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run counts the product's DEKs by version once for its plan and once at its end
    (the run.completed event and the report share that count): each count reads every row."""
    seed(runtime, 30)
    runtime.provider.create_version()
    store_type = type(runtime.dek_store)
    counted = store_type.count_by_version
    calls: list[int] = []

    def counting(self: Any) -> dict[str, int]:
        calls.append(1)
        return counted(self)

    monkeypatch.setattr(store_type, "count_by_version", counting)
    report = run(runtime, clock, batch_size=10)
    assert (report.status, report.counters.changed, report.remaining) == ("completed", 30, 0)
    assert len(calls) == 2
    (completed,) = runtime.audit.events(types=[audit.RUN_COMPLETED])
    assert completed.data["remaining"] == 0


def test_rewrap_invalidates_the_cached_deks(runtime: ProductRuntime, clock: FakeClock) -> None:
    """A rewrapped DEK is dropped from the cache, so readers pick up the new wrap."""
    seed(runtime, 10)
    assert runtime.encryptor.cache.stats().size == 10
    runtime.provider.create_version()
    run(runtime, clock)
    assert runtime.encryptor.cache.stats().size == 0


def test_old_version_flag_selects_only_that_version(
    runtime: ProductRuntime, clock: FakeClock
) -> None:
    """With from_version, DEKs on other versions are left alone and counted as skipped."""
    seed(runtime, 5)
    runtime.provider.create_version()
    seed(runtime, 7, start=5)
    runtime.provider.create_version()
    report = run(runtime, clock, old_version="1", new_version="3")
    assert versions_of(runtime) == {"2": 7, "3": 5}
    assert (report.counters.changed, report.counters.skipped) == (5, 7)


def test_concurrent_writer_is_never_overwritten(runtime: ProductRuntime, clock: FakeClock) -> None:
    """Rows changed mid-batch lose the compare-and-swap, are re-read and redone or left."""
    seed(runtime, 6)
    store = runtime.dek_store
    provider = runtime.provider
    provider.create_version()
    first = store.scan(limit=10).records
    moved, touched = first[0], first[1]
    mine: dict[str, bytes] = {}

    def writer(name: str) -> None:
        if mine or name != "wrap":
            return
        # Another process rewraps one DEK itself and re-wraps another under the old version.
        for record, version in ((moved, "2"), (touched, "1")):
            context = dek_context(runtime.encryptor.product, record.dek_id)
            dek = provider.unwrap(record.wrapped, version="1", context=context)
            new = provider.wrap(dek, context=context, version=version)
            mine[record.dek_id] = new.ciphertext
            assert not store.replace_wraps(
                [
                    WrapUpdate(
                        record=record,
                        mek_version=version,
                        wrapped=new.ciphertext,
                        algorithm=new.algorithm,
                    )
                ]
            )

    faulty(runtime, clock).before_call(writer)
    report = run(runtime, clock)
    assert report.counters.conflicts == 2
    assert report.counters.skipped == 1  # the DEK the writer moved to the target itself
    assert store.get(moved.dek_id).wrapped == mine[moved.dek_id]  # the writer's wrap survives
    assert store.get(touched.dek_id).mek_version == "2"
    assert versions_of(runtime) == {"2": 6}
    runtime.encryptor.cache.clear()
    assert len(read_all(runtime)) == 6


def test_a_second_run_is_refused_while_the_first_holds_the_lease(
    runtime: ProductRuntime, clock: FakeClock
) -> None:
    """Same plan or another plan: a run started while one is live raises LeaseHeldError."""
    seed(runtime, 20)
    runtime.provider.create_version()
    refusals: list[str] = []

    def second_run(name: str) -> None:
        if refusals:
            return
        for mode in ("rewrap-deks", "re-encrypt"):
            with pytest.raises(LeaseHeldError) as info:
                run(runtime, clock, mode=mode, owner="intruder")
            refusals.append(str(info.value))

    faulty(runtime, clock).before_call(second_run)
    report = run(runtime, clock, batch_size=5)
    assert report.status == "completed"
    assert len(refusals) == 2
    assert "held by test-worker" in refusals[0]
    assert "in flight" in refusals[1]


def test_a_dead_runs_lease_expires_and_the_run_resumes_from_its_cursor(
    runtime: ProductRuntime, clock: FakeClock
) -> None:
    """A worker that died keeps its shard until the TTL passes; then the next run resumes it."""
    seed(runtime, 30)
    runtime.provider.create_version()
    ledger = open_run_ledger(runtime.database)
    calls = 0

    def die(name: str) -> None:
        nonlocal calls
        calls += 1
        if calls == 40:  # mid-way through the second batch of 10
            raise SystemExit("killed")

    provider = faulty(runtime, clock)
    provider.before_call(die)
    with pytest.raises(SystemExit):
        run(runtime, clock, batch_size=10, owner="dead", lease_ttl=60)
    # SystemExit released the shard politely; take it again as a worker that vanished.
    (open_run,) = [r for r in ledger.latest_runs("sample") if not r.finished]
    ledger.acquire_shard(open_run.run_id, 0, owner="dead", now=clock.time(), ttl=60)
    assert open_run.shard(0).cursor is not None
    with pytest.raises(LeaseHeldError):
        run(runtime, clock, owner="next")
    clock.advance(61)
    report = run(runtime, clock, owner="next")
    assert report.resumed and report.run_id == open_run.run_id
    assert report.status == "completed"
    assert report.processed == 20  # only what the cursor had not covered
    assert versions_of(runtime) == {"2": 30}


def test_throttling_and_transient_faults_are_retried_until_done(
    runtime: ProductRuntime, clock: FakeClock
) -> None:
    """429s with Retry-After and random transient faults slow the run but it completes."""
    seed(runtime, 50)
    runtime.provider.create_version()
    provider = faulty(runtime, clock)
    provider.throttle(4, retry_after=2.5)
    provider.fail_randomly(0.2, seed=7)
    report = run(runtime, clock, batch_size=10)
    assert report.status == "completed"
    assert versions_of(runtime) == {"2": 50}
    assert provider.faults > 10
    assert sum(1 for s in clock.slept if s >= 2.5) >= 4  # Retry-After honoured


def test_a_persistent_outage_stops_the_run_within_the_budget_and_a_rerun_finishes(
    runtime: ProductRuntime, clock: FakeClock
) -> None:
    """The run ends cleanly after the retry budget, cursor saved; the re-run completes."""
    seed(runtime, 40)
    runtime.provider.create_version()
    provider = faulty(runtime, clock)
    calls = 0

    def outage_after_two_batches(name: str) -> None:
        nonlocal calls
        calls += 1
        if calls == 61:  # three calls per DEK: the first call of the third batch
            provider.outage(10_000)

    provider.before_call(outage_after_two_batches)
    started = clock.time()
    report = run(runtime, clock, batch_size=10, retry=RetryPolicy(budget=30, max_delay=5))
    assert report.status == "stopped"
    assert "KeyProviderUnavailableError" in (report.stop_reason or "")
    assert clock.time() - started <= 30 + 5
    assert versions_of(runtime) == {"1": 20, "2": 20}
    clock.advance(10_000)
    report = run(runtime, clock, batch_size=10)
    assert report.status == "completed" and report.resumed
    assert versions_of(runtime) == {"2": 40}


def test_deks_that_cannot_be_unwrapped_are_named_and_the_run_goes_on(
    runtime: ProductRuntime, clock: FakeClock
) -> None:
    """A corrupted wrap and an unknown version fail alone; the rest are rewrapped."""
    seed(runtime, 12)
    runtime.provider.create_version()
    first = runtime.dek_store.scan(limit=3).records
    set_wrap(
        runtime, first[0].dek_id, wrapped=bytes([first[0].wrapped[0] ^ 1]) + first[0].wrapped[1:]
    )
    set_wrap(runtime, first[2].dek_id, mek_version="99")
    report = run(runtime, clock, batch_size=5)
    assert report.status == "completed_with_failures"
    assert report.failure_count == 2
    reasons = {f.item: f.reason for f in report.failures}
    assert reasons[first[0].dek_id] == "DecryptionError: decryption failed"
    assert reasons[first[2].dek_id].startswith("KeyVersionNotFoundError")
    assert versions_of(runtime) == {"1": 1, "99": 1, "2": 10}


def test_rate_limit_paces_provider_calls(runtime: ProductRuntime, clock: FakeClock) -> None:
    """At max_rps=50, 30 DEKs (three calls each) take about 90/50 seconds of clock time."""
    seed(runtime, 30)
    runtime.provider.create_version()
    started = clock.time()
    report = run(runtime, clock, max_rps=50)
    assert report.status == "completed"
    assert 1.5 <= clock.time() - started <= 2.0


def test_remote_providers_run_calls_concurrently(runtime: ProductRuntime, clock: FakeClock) -> None:
    """A provider marked remote is driven through the thread pool, with the same result."""
    seed(runtime, 40)
    runtime.provider.create_version()
    provider = faulty(runtime, clock)
    provider.remote = True
    provider.fail_randomly(0.1, seed=3)
    report = run(runtime, clock, concurrency=4, batch_size=16)
    assert report.status == "completed"
    assert versions_of(runtime) == {"2": 40}


def test_an_embedded_store_is_read_and_written_on_the_rewrapping_thread(
    runtime: ProductRuntime, clock: FakeClock, store_kind: str
) -> None:
    """SQLite (``remote`` false) is scanned and written on the thread that rewraps (on
    threads its driver waited for the GIL); a networked store on a reader and a writer
    thread, which overlap the crypto."""
    seed(runtime, 30)
    runtime.provider.create_version()
    store = runtime.dek_store
    threads: dict[str, set[str]] = {"scan_wraps": set(), "swap_wraps": set()}
    for name in threads:
        method = getattr(store, name)

        def recorded(*args: Any, _method: Any = method, _name: str = name, **kwargs: Any) -> Any:
            threads[_name].add(threading.current_thread().name)
            return _method(*args, **kwargs)

        setattr(store, name, recorded)
    report = run(runtime, clock, batch_size=7)
    assert report.status == "completed" and versions_of(runtime) == {"2": 30}
    here = threading.current_thread().name
    if store_kind == "sqlite":
        assert threads == {"scan_wraps": {here}, "swap_wraps": {here}}
    else:
        assert {n.split("_")[0] for n in threads["scan_wraps"]} == {"rewrap-scan"}
        assert {n.split("_")[0] for n in threads["swap_wraps"]} == {"rewrap-write"}


def test_a_dead_workers_shard_is_taken_over_after_its_lease_expires(
    runtime: ProductRuntime, clock: FakeClock
) -> None:
    """Worker 1 of 2 finishes its shard; worker 2's dead shard is taken over after the TTL."""
    seed(runtime, 40)
    runtime.provider.create_version()
    ledger = open_run_ledger(runtime.database)
    first = run(runtime, clock, worker=(0, 2), owner="w1")
    assert first.status == "completed"  # nobody held shard 2: worker 1 did both
    runtime.provider.create_version()
    from field_encrypt.rotation import MigrationOptions, prepare_job

    plan = prepare_job(runtime, MigrationOptions(mode="rewrap-deks", worker=(0, 2))).plan
    open_run, _ = ledger.open_run(
        new=NewRun(product="sample", plan=plan, estimated_total=40, skipped_at_start=0),
        now=clock.time(),
    )
    ledger.acquire_shard(open_run.run_id, 1, owner="dead", now=clock.time(), ttl=60)
    report = run(runtime, clock, worker=(0, 2), owner="w1", lease_ttl=60)
    assert report.status == "in_progress"  # shard 2 still leased by the dead worker
    assert 0 < versions_of(runtime).get("3", 0) < 40
    clock.advance(61)
    report = run(runtime, clock, worker=(0, 2), owner="w1", lease_ttl=60)
    assert report.status == "completed" and report.run_id == open_run.run_id
    assert versions_of(runtime) == {"3": 40}
    assert report.counters.changed == 40


def test_a_shard_of_a_worker_that_died_here_meanwhile_is_taken_over_at_once(
    runtime: ProductRuntime, clock: FakeClock
) -> None:
    """Worker 1 of 2 starts while worker 2, a process of this host, holds shard 2; worker 2
    dies while worker 1 works. Worker 1, done with its shard, sees the holder is gone and
    takes shard 2 over (audited) instead of stopping with the run half done."""
    seed(runtime, 40)
    runtime.provider.create_version()
    ledger = open_run_ledger(runtime.database)
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    holder = f"{socket.gethostname()}:{child.pid}:abc123"
    from field_encrypt.rotation import MigrationOptions, prepare_job

    plan = prepare_job(runtime, MigrationOptions(mode="rewrap-deks", worker=(0, 2))).plan
    open_run, _ = ledger.open_run(
        new=NewRun(product="sample", plan=plan, estimated_total=40, skipped_at_start=0),
        now=clock.time(),
    )
    ledger.acquire_shard(open_run.run_id, 1, owner=holder, now=clock.time(), ttl=3600)
    heard: list[str] = []

    class Killer(NullObserver):
        def run_started(self, run: Any, *, shard: int, resumed: bool) -> None:
            heard.append(f"started {shard}")
            if shard == 0:  # worker 2 dies while worker 1 rewraps its own shard
                child.kill()
                child.wait()

        def event(self, name: str, fields: Any) -> None:
            heard.append(name)

    report = migrate(
        runtime,
        ledger,
        MigrationOptions(mode="rewrap-deks", worker=(0, 2), lease_ttl=3600),
        clock=clock.time,
        monotonic=clock.monotonic,
        sleep=clock.sleep,
        observer=Killer(),
        owner="w1",
    )
    assert heard[0] == "started 0" and "lease_reclaimed" in heard and "started 1" in heard
    assert report.status == "completed" and report.run_id == open_run.run_id
    assert versions_of(runtime) == {"2": 40}
    assert runtime.audit is not None
    (event,) = runtime.audit.events(types=[audit.LEASE_RECLAIMED])
    assert event.data == {"runId": open_run.run_id, "shard": 1, "holder": holder}
