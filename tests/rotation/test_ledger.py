"""The SQLite run ledger: runs resume by plan, leases keep workers apart, shards add up."""

from __future__ import annotations

import pytest

from field_encrypt.errors import LeaseHeldError, RotationError
from field_encrypt.rotation import Counters, Failure, RunLedger, RunPlan, SqliteRunLedger
from field_encrypt.stores.sqlite_db import SqliteDatabase

PLAN = RunPlan(mode="rewrap-deks", from_version=None, to_version="2", shards=3)
NOW = 1_700_000_000.0


@pytest.fixture
def ledger(tmp_path: object) -> SqliteRunLedger:
    return SqliteRunLedger(SqliteDatabase(f"{tmp_path}/ledger.db"))


def _open(ledger: SqliteRunLedger, plan: RunPlan = PLAN, now: float = NOW) -> tuple[str, bool]:
    run, resumed = ledger.open_run(
        product="p", plan=plan, now=now, estimated_total=90, skipped_at_start=4
    )
    return run.run_id, resumed


def test_sqlite_ledger_satisfies_the_protocol(ledger: SqliteRunLedger) -> None:
    """SqliteRunLedger is a RunLedger (the protocol other stores implement)."""
    assert isinstance(ledger, RunLedger)


def test_same_plan_resumes_and_another_plan_abandons_an_idle_run(ledger: SqliteRunLedger) -> None:
    """The open run with the same plan is resumed; with nobody on it, another plan replaces it."""
    run_id, resumed = _open(ledger)
    assert not resumed
    assert _open(ledger) == (run_id, True)
    other = RunPlan(mode="rewrap-deks", from_version=None, to_version="3", shards=3)
    new_id, resumed = _open(ledger, other)
    assert new_id != run_id and not resumed
    assert ledger.get_run(run_id).status == "abandoned"


def test_a_live_lease_refuses_other_runs_and_other_owners(ledger: SqliteRunLedger) -> None:
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


def test_a_lost_lease_stops_renewals_and_checkpoints(ledger: SqliteRunLedger) -> None:
    """Once another worker took the shard over, the old owner can neither renew nor save."""
    run_id, _ = _open(ledger)
    ledger.acquire_shard(run_id, 0, owner="a", now=NOW, ttl=60)
    ledger.acquire_shard(run_id, 0, owner="b", now=NOW + 61, ttl=60)
    with pytest.raises(LeaseHeldError):
        ledger.renew_lease(run_id, 0, owner="a", now=NOW + 62, ttl=60)
    with pytest.raises(LeaseHeldError):
        ledger.checkpoint(
            run_id, 0, owner="a", now=NOW + 62, ttl=60, cursor="9", delta=Counters(matched=1)
        )


def test_shards_add_up_and_the_last_one_done_completes_the_run(ledger: SqliteRunLedger) -> None:
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
            cursor="10",
            delta=Counters(matched=10, changed=9, failed=1),
            failures=[Failure(item=f"dek{index}", reason="DecryptionError", shard=index)],
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


def test_pending_items_block_another_plan(ledger: SqliteRunLedger) -> None:
    """A run interrupted with documents half-migrated must be finished before another starts."""
    run_id, _ = _open(ledger)
    ledger.acquire_shard(run_id, 0, owner="a", now=NOW, ttl=60)
    ledger.checkpoint(
        run_id, 0, owner="a", now=NOW, ttl=60, cursor=None, delta=Counters(), pending=["x"]
    )
    other = RunPlan(mode="re-encrypt", from_version=None, to_version="2", shards=1)
    with pytest.raises(RotationError, match="half-migrated"):
        _open(ledger, other, now=NOW + 120)
    assert ledger.get_run(run_id).shard(0).pending == ("x",)
