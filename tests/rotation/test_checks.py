"""verify and preflight find what they should, and nothing else."""

from __future__ import annotations

import pytest

from field_encrypt.backends.sqlite.ledger import SqliteRunLedger
from field_encrypt.products import ProductRuntime
from field_encrypt.rotation import BackupRecord, RunPlan, preflight, verify
from field_encrypt.rotation.ledger import NewRun
from field_encrypt.testing import FakeClock
from tests.support.seed import seed


def test_verify_names_missing_unreferenced_and_undecryptable(runtime: ProductRuntime) -> None:
    """A deleted DEK, an orphan DEK and a tampered field each show up, with examples."""
    seed(runtime, 6)
    assert verify(runtime, mek_version="1").clean
    docs = runtime.documents["records"]
    first, second = docs.scan(limit=2).documents
    runtime.dek_store.delete(first.dek_id or "")
    orphan = runtime.encryptor.create_dek()
    fields = dict(second.fields)
    fields["ssn"] = fields["ssn"][:-4] + ("AAAA" if fields["ssn"][-4:] != "AAAA" else "BBBB")
    docs.replace_fields(second, fields, second.dek_id)
    runtime.encryptor.cache.clear()
    report = verify(runtime, mek_version="1", sample=6)
    assert not report.clean
    assert report.missing_deks == 1 and report.missing_examples == [f"records/{first.id}"]
    assert report.unreferenced_deks == 1 and report.unreferenced_examples == [orphan]
    assert report.undecryptable == [f"records/{second.id}: DecryptionError"]
    assert report.not_on_version == 0


def test_preflight_passes_when_ready_and_names_each_failure(runtime: ProductRuntime) -> None:
    """No backup, a disabled version still in use and a live lease each fail their line."""
    clock = FakeClock()
    seed(runtime, 3)
    ledger = SqliteRunLedger(runtime.database)
    ledger.record_backup(
        BackupRecord(product="sample", at=clock.time(), path="b.jsonl", count=3, checksum="x")
    )
    runtime.provider.create_version()
    checks = preflight(runtime, ledger, target_version="2", clock=clock.time)
    assert all(c.ok for c in checks), checks
    assert [c.name for c in checks] == [
        "encryption enabled",
        "key provider configured",
        "wrap and unwrap permitted on version 2",
        "versions in use are enabled",
        "no migration in flight",
        "recent dek_store backup",
    ]

    clock.advance(25 * 3600)
    runtime.provider.set_enabled("1", False)
    run, _ = ledger.open_run(
        new=NewRun(
            product="sample",
            plan=RunPlan(mode="rewrap-deks", from_version=None, to_version="2"),
            estimated_total=3,
            skipped_at_start=0,
        ),
        now=clock.time(),
    )
    ledger.acquire_shard(run.run_id, 0, owner="host:1", now=clock.time(), ttl=60)
    failed = {
        c.name: c.detail
        for c in preflight(runtime, ledger, target_version="3", clock=clock.time)
        if not c.ok
    }
    assert set(failed) == {
        "wrap and unwrap permitted on version 3",
        "versions in use are enabled",
        "no migration in flight",
        "recent dek_store backup",
    }
    assert "1 (3 DEKs, disabled)" in failed["versions in use are enabled"]
    assert "held by host:1" in failed["no migration in flight"]


@pytest.mark.parametrize("enabled", [False])
def test_preflight_fails_when_encryption_is_disabled(
    runtime: ProductRuntime, enabled: bool
) -> None:
    """FIELD_ENCRYPT_ENABLED=false is the first line, failed."""
    runtime.settings = runtime.settings.model_copy(update={"enabled": enabled})
    checks = preflight(runtime, SqliteRunLedger(runtime.database))
    assert (checks[0].name, checks[0].ok) == ("encryption enabled", False)
