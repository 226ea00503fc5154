"""collect-orphans: DEKs no document refers to (a create killed before its document was
written) are found by a dry run and deleted on request, never within the grace period nor
while an unfinished run names them; verify is clean again."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from field_encrypt import audit
from field_encrypt.products import ProductRuntime
from field_encrypt.rehearsal import check, product, seed
from field_encrypt.rotation import RunPlan, collect_orphans, open_ledger, verify
from field_encrypt.rotation.docwalk import Pending
from field_encrypt.rotation.ledger import Counters, NewRun, Progress
from tests.backends import BACKEND_KINDS, Backend
from tests.cli.helpers import PRODUCT, cli

LATER = 2 * 3600.0


def _orphaned(rt: ProductRuntime) -> ProductRuntime:
    """6 documents and 3 orphaned DEKs (created, their documents never written)."""
    seed(rt, 6)
    for _ in range(3):
        rt.encryptor.create_dek()
    return rt


@pytest.fixture
def orphaned(store_backend: Backend, tmp_path: Path) -> Iterator[ProductRuntime]:
    rt = product.open(store_backend.settings(keyring=str(tmp_path / "keyring.json")))
    yield _orphaned(rt)
    rt.close()


def _later() -> float:
    return time.time() + LATER


@pytest.mark.parametrize("store_backend", BACKEND_KINDS, indirect=True)
def test_orphans_are_found_then_deleted_and_verify_is_clean(orphaned: ProductRuntime) -> None:
    """Within the hour nothing is touched; two hours on, the dry run names the 3 and changes
    nothing; the real run deletes them (audited) and verify is clean (it reported 3 for ever)."""
    ledger = open_ledger(orphaned)
    assert verify(orphaned, mek_version="1").unreferenced_deks == 3
    fresh = collect_orphans(orphaned, ledger, dry_run=False)
    assert (fresh.orphans, fresh.deleted, fresh.too_new) == (0, 0, 3)
    dry = collect_orphans(orphaned, ledger, clock=_later)
    assert (dry.dry_run, dry.orphans, dry.deleted, len(dry.examples)) == (True, 3, 0, 3)
    assert orphaned.dek_store.count_by_version() == {"1": 9}

    done = collect_orphans(orphaned, ledger, dry_run=False, clock=_later)

    assert (done.orphans, done.deleted) == (3, 3)
    assert orphaned.dek_store.count_by_version() == {"1": 6}
    assert verify(orphaned, mek_version="1", sample=6).clean
    assert check(orphaned) == (6, 0)
    assert orphaned.audit is not None
    collected = orphaned.audit.events(types=[audit.DEK_COLLECTED])
    assert sorted(e.data["dekId"] for e in collected) == sorted(dry.examples)


@pytest.mark.parametrize("store_backend", BACKEND_KINDS, indirect=True)
def test_a_dek_an_unfinished_run_names_is_left(orphaned: ProductRuntime) -> None:
    """A re-encrypt run killed after naming its new DEK (pending in the ledger) keeps it:
    the run settles it when it resumes."""
    ledger = open_ledger(orphaned)
    (named, *_) = collect_orphans(orphaned, ledger, clock=_later).examples
    run, _ = ledger.open_run(
        new=NewRun(
            product="sample",
            plan=RunPlan(mode="re-encrypt", from_version=None, to_version="1"),
            estimated_total=6,
            skipped_at_start=0,
        ),
        now=time.time(),
    )
    ledger.acquire_shard(run.run_id, 0, owner="t", now=time.time(), ttl=60)
    step = Pending("records", "doc-0", named, None).encode()
    ledger.checkpoint(
        run.run_id, 0, owner="t", now=time.time(), ttl=60,
        progress=Progress(cursor=None, delta=Counters(), pending=[step]),
    )  # fmt: skip

    report = collect_orphans(orphaned, ledger, dry_run=False, clock=_later)

    assert (report.orphans, report.deleted, report.pending) == (2, 2, 1)
    assert orphaned.dek_store.get(named).dek_id == named


def test_the_command_is_a_dry_run_unless_told(env: dict[str, str], runtime: ProductRuntime) -> None:
    """``collect-orphans`` reports and keeps; ``--delete --older-than 0s`` deletes; a bad
    duration is a usage error (exit 2)."""
    _orphaned(runtime)
    dry = cli("collect-orphans", "--product", PRODUCT, "--older-than", "0s")
    assert dry.exit_code == 0, dry.stderr
    assert "dry run: 3 orphaned DEKs" in dry.stdout and "--delete" in dry.stdout
    assert runtime.dek_store.count_by_version() == {"1": 9}
    done = cli("collect-orphans", "--product", PRODUCT, "--older-than", "0s", "--delete")
    assert done.exit_code == 0, done.stderr
    assert "deleted 3 orphaned DEKs" in done.stdout
    assert cli("verify", "--product", PRODUCT, "--mek-version", "1").exit_code == 0
    bad = cli("collect-orphans", "--product", PRODUCT, "--older-than", "soon")
    assert bad.exit_code == 2 and "not a duration" in bad.stderr


@pytest.mark.parametrize("store_backend", ["sqlite"], indirect=True)
def test_an_index_root_key_is_never_collected(orphaned: ProductRuntime) -> None:
    """Index root keys live in the dek_store and no document names them: collecting orphans
    must leave them, or every blind index of the product becomes unqueryable."""
    from field_encrypt.index_keys import IndexKeyring, index_key_id

    keyring = IndexKeyring(
        product=orphaned.encryptor.product, provider=orphaned.provider, store=orphaned.dek_store
    )
    keyring.create(1)
    done = collect_orphans(orphaned, open_ledger(orphaned), dry_run=False, clock=_later)
    assert (done.orphans, done.deleted) == (3, 3)
    key_id = index_key_id(orphaned.encryptor.product, 1)
    assert orphaned.dek_store.get_many([key_id]).keys() == {key_id}
