"""The run ledgers: runs resume by plan, leases keep workers apart, shards add up.

Written once, run on the SQLite, PostgreSQL and Cosmos DB ledgers.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from field_encrypt.backends.registry import database_kind_of, open_database
from field_encrypt.backends.sqlite.ledger import SqliteRunLedger
from field_encrypt.errors import LeaseHeldError, RotationError
from field_encrypt.rotation import Counters, Failure, RunLedger, RunPlan
from field_encrypt.rotation.ledger import NewRun, Progress
from tests.backends import BACKEND_KINDS, backend_for

PLAN = RunPlan(mode="rewrap-deks", from_version=None, to_version="2", shards=3)
NOW = 1_700_000_000.0


@pytest.fixture(params=BACKEND_KINDS)
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    opened = open_database(backend_for(request.param, request, tmp_path).settings())
    yield opened
    opened.close()


def ledger_in(database: Any) -> RunLedger:
    """A ledger of the database's kind (as ``open_ledger`` picks it for a runtime)."""
    kind = database_kind_of(database)
    if kind == "postgres":
        from field_encrypt.backends.postgres.ledger import PostgresRunLedger

        return PostgresRunLedger(database)
    if kind == "cosmos":
        from field_encrypt.backends.cosmos.ledger import CosmosRunLedger

        return CosmosRunLedger(database)
    return SqliteRunLedger(database)


@pytest.fixture
def ledger(database: Any) -> RunLedger:
    return ledger_in(database)


def _open(ledger: RunLedger, plan: RunPlan = PLAN, now: float = NOW) -> tuple[str, bool]:
    run, resumed = ledger.open_run(
        new=NewRun(product="p", plan=plan, estimated_total=90, skipped_at_start=4), now=now
    )
    return run.run_id, resumed


def test_the_ledger_satisfies_the_protocol(ledger: RunLedger) -> None:
    """Each store's ledger is a RunLedger."""
    assert isinstance(ledger, RunLedger)


def test_same_plan_resumes_and_another_plan_abandons_an_idle_run(ledger: RunLedger) -> None:
    """The open run with the same plan is resumed; with nobody on it, another plan replaces it."""
    run_id, resumed = _open(ledger)
    assert not resumed
    assert _open(ledger) == (run_id, True)
    other = RunPlan(mode="rewrap-deks", from_version=None, to_version="3", shards=3)
    new_id, resumed = _open(ledger, other)
    assert new_id != run_id and not resumed
    assert ledger.get_run(run_id).status == "abandoned"


def test_a_live_lease_refuses_other_runs_and_other_owners(ledger: RunLedger) -> None:
    """Another plan, or another owner of the same shard, is refused until the TTL passes."""
    run_id, _ = _open(ledger)
    ledger.acquire_shard(run_id, 0, owner="a", now=NOW, ttl=60)
    with pytest.raises(LeaseHeldError, match="held by a"):
        ledger.acquire_shard(run_id, 0, owner="b", now=NOW + 10, ttl=60)
    other = RunPlan(mode="re-encrypt", from_version=None, to_version="2", shards=1)
    with pytest.raises(LeaseHeldError, match="in flight"):
        _open(ledger, other, now=NOW + 10)
    ledger.acquire_shard(run_id, 1, owner="b", now=NOW + 10, ttl=60)  # another shard: fine
    assert ledger.acquire_shard(run_id, 0, owner="b", now=NOW + 61, ttl=60).owner == "b"


def test_a_lost_lease_stops_renewals_and_checkpoints(ledger: RunLedger) -> None:
    """Once another worker took the shard over, the old owner can neither renew nor save."""
    run_id, _ = _open(ledger)
    ledger.acquire_shard(run_id, 0, owner="a", now=NOW, ttl=60)
    ledger.acquire_shard(run_id, 0, owner="b", now=NOW + 61, ttl=60)
    with pytest.raises(LeaseHeldError):
        ledger.renew_lease(run_id, 0, owner="a", now=NOW + 62, ttl=60)
    with pytest.raises(LeaseHeldError):
        ledger.checkpoint(
            run_id,
            0,
            owner="a",
            now=NOW + 62,
            ttl=60,
            progress=Progress(cursor="9", delta=Counters(matched=1)),
        )


def test_shards_add_up_and_the_last_one_done_completes_the_run(ledger: RunLedger) -> None:
    """Counters are summed over shards (plus skipped at start); failures are listed."""
    run_id, _ = _open(ledger)
    for index in range(3):
        ledger.acquire_shard(run_id, index, owner=f"w{index}", now=NOW, ttl=60)
        ledger.checkpoint(
            run_id,
            index,
            owner=f"w{index}",
            now=NOW,
            ttl=60,
            progress=Progress(
                cursor="10",
                delta=Counters(matched=10, changed=9, failed=1),
                failures=[Failure(item=f"dek{index}", reason="DecryptionError", shard=index)],
            ),
        )
    assert ledger.release_shard(run_id, 0, owner="w0", now=NOW, done=True).status == "running"
    assert ledger.release_shard(run_id, 1, owner="w1", now=NOW, done=False).status == "running"
    ledger.release_shard(run_id, 2, owner="w2", now=NOW, done=True)
    ledger.acquire_shard(run_id, 1, owner="w0", now=NOW, ttl=60)  # taken over
    run = ledger.release_shard(run_id, 1, owner="w0", now=NOW + 5, done=True)
    assert run.status == "completed_with_failures"
    assert run.finished_at == NOW + 5
    assert run.counters == Counters(matched=30, changed=27, failed=3, skipped=4)
    failures, count = ledger.failures(run_id, limit=2)
    assert count == 3 and len(failures) == 2


def test_pending_items_block_another_plan(ledger: RunLedger) -> None:
    """A run interrupted with documents half-migrated must be finished before another starts."""
    run_id, _ = _open(ledger)
    ledger.acquire_shard(run_id, 0, owner="a", now=NOW, ttl=60)
    ledger.checkpoint(
        run_id,
        0,
        owner="a",
        now=NOW,
        ttl=60,
        progress=Progress(cursor=None, delta=Counters(), pending=["x"]),
    )
    other = RunPlan(mode="re-encrypt", from_version=None, to_version="2", shards=1)
    with pytest.raises(RotationError, match="half-migrated"):
        _open(ledger, other, now=NOW + 120)
    assert ledger.get_run(run_id).shard(0).pending == ("x",)


def test_racing_workers_never_both_win_a_shard(database: Any) -> None:
    """Eight workers (each with its own ledger object) grab the same free shard at once: one wins.

    The others get LeaseHeldError; once the winner's lease has expired, the shard can be
    taken over, again by exactly one of them.
    """
    run_id, _ = _open(ledger_in(database))
    ledgers = [ledger_in(database) for _ in range(8)]

    def race(now: float) -> list[str]:
        barrier = threading.Barrier(len(ledgers))
        winners: list[str] = []
        errors: list[BaseException] = []

        def grab(index: int) -> None:
            barrier.wait()
            try:
                state = ledgers[index].acquire_shard(run_id, 0, owner=f"w{index}", now=now, ttl=60)
                winners.append(state.owner or "")
            except LeaseHeldError:
                pass
            except BaseException as exc:  # noqa: BLE001 - asserted below
                errors.append(exc)

        threads = [threading.Thread(target=grab, args=(i,)) for i in range(len(ledgers))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert errors == []
        return winners

    first = race(NOW)
    assert len(first) == 1
    assert ledger_in(database).get_run(run_id).shard(0).owner == first[0]
    second = race(NOW + 61)
    assert len(second) == 1
    assert ledger_in(database).get_run(run_id).shard(0).owner == second[0]


def test_runs_are_listed_newest_first_with_backups_and_failures(ledger: RunLedger) -> None:
    """latest_runs lists finished and open runs; backups and failures read back."""
    from field_encrypt.rotation import BackupRecord

    first, _ = _open(ledger, RunPlan(mode="rewrap-deks", from_version=None, to_version="2"))
    ledger.acquire_shard(first, 0, owner="a", now=NOW, ttl=60)
    ledger.checkpoint(
        first,
        0,
        owner="a",
        now=NOW,
        ttl=60,
        progress=Progress(
            cursor=None,
            delta=Counters(matched=2, changed=1, failed=1),
            failures=[Failure(item="dek/1", reason="DecryptionError: decryption failed")],
        ),
    )
    assert ledger.release_shard(first, 0, owner="a", now=NOW + 1, done=True).finished
    second, _ = _open(ledger, PLAN, now=NOW + 2)
    assert [r.run_id for r in ledger.latest_runs("p")] == [second, first]
    assert ledger.get_run(first).status == "completed_with_failures"
    assert ledger.failures(first) == (
        [Failure(item="dek/1", reason="DecryptionError: decryption failed")],
        1,
    )
    assert ledger.last_backup("p") is None
    backup = BackupRecord(product="p", at=NOW, path="/b/1.json", count=3, checksum="c")
    ledger.record_backup(backup)
    ledger.record_backup(BackupRecord(product="q", at=NOW + 5, path="/b/2", count=1, checksum="d"))
    assert ledger.last_backup("p") == backup
    assert ledger.live_leases("p", now=NOW) == []
