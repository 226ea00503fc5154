"""The document modes: re-encrypt, the encrypt backfill and decrypt, through the library."""

from __future__ import annotations

import json

import pytest

from field_encrypt import compiled, token
from field_encrypt.backends.registry import open_run_ledger
from field_encrypt.products import ProductRuntime
from field_encrypt.rotation import Counters, MigrationOptions, prepare_job, verify
from field_encrypt.rotation.docwalk import Pending
from field_encrypt.rotation.ledger import NewRun, Progress
from field_encrypt.testing import FakeClock
from tests.rotation.helpers import faulty, run, versions_of
from tests.support.fixtures import on_every_store
from tests.support.seed import document, read_all, seed

pytestmark = on_every_store


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def _dek_ids(runtime: ProductRuntime) -> set[str]:
    page = runtime.documents["records"].scan(limit=10_000)
    return {d.dek_id for d in page.documents if d.dek_id}


def test_reencrypt_gives_every_document_a_fresh_dek_and_deletes_the_old(
    runtime: ProductRuntime, clock: FakeClock
) -> None:
    """New DEKs on the new version, old DEKs gone, same plaintext; a re-run does nothing."""
    seed(runtime, 30)
    before = _dek_ids(runtime)
    runtime.provider.create_version()
    report = run(runtime, clock, mode="re-encrypt", batch_size=7)
    assert report.status == "completed" and report.counters.changed == 30
    after = _dek_ids(runtime)
    assert len(after) == 30 and not after & before
    assert versions_of(runtime) == {"2": 30}
    runtime.encryptor.cache.clear()
    assert read_all(runtime) == {f"doc-{i}": document(i) for i in range(30)}
    assert verify(runtime, mek_version="2").clean
    again = run(runtime, clock, mode="re-encrypt")
    assert (again.counters.changed, again.counters.skipped) == (0, 30)


@pytest.mark.skipif(not compiled.built(), reason="field_encrypt._gcm is not built")
def test_the_fresh_deks_of_reencrypt_are_cached_for_the_compiled_read_path(
    runtime: ProductRuntime, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The DEKs re-encrypt makes are cached with the compiled path's key as well as the
    cipher, like every DEK the encryptor loads itself: reads of the re-encrypted
    documents in the same process take the compiled path (they fell back to Python)."""
    if runtime.encryptor._open is None:
        pytest.skip("this runtime reads in pure Python (FIELD_ENCRYPT_PURE_PYTHON)")
    seed(runtime, 5)
    runtime.provider.create_version()
    runtime.encryptor.cache.clear()
    assert run(runtime, clock, mode="re-encrypt").counters.changed == 5
    cache = runtime.encryptor.cache
    assert all(cache.key(bytes.fromhex(d)) is not None for d in _dek_ids(runtime))
    assert read_all(runtime) == {f"doc-{i}": document(i) for i in range(5)}


def test_reencrypt_settles_pending_steps_left_by_a_crash(
    runtime: ProductRuntime, clock: FakeClock
) -> None:
    """Resume drops the new DEK of an uncommitted step and the old DEK of a committed one."""
    seed(runtime, 4)
    runtime.provider.create_version()
    ledger = open_run_ledger(runtime.database)
    docs = runtime.documents["records"]
    first, second = docs.scan(limit=2).documents
    # Simulate a crash: two steps named, both new DEKs created, only the first document written.
    job = prepare_job(runtime, MigrationOptions(mode="re-encrypt"))
    run_record, _ = ledger.open_run(
        new=NewRun(product="sample", plan=job.plan, estimated_total=4, skipped_at_start=0),
        now=clock.time(),
    )
    steps = [
        Pending("records", d.id, f"{i:032x}", d.dek_id) for i, d in enumerate((first, second), 1)
    ]
    ledger.acquire_shard(run_record.run_id, 0, owner="dead", now=clock.time(), ttl=60)
    ledger.checkpoint(
        run_record.run_id,
        0,
        owner="dead",
        now=clock.time(),
        ttl=60,
        progress=Progress(cursor=None, delta=Counters(), pending=[s.encode() for s in steps]),
    )
    for step in steps:
        job.create_dek(step.new, "2")  # type: ignore[attr-defined]
    job.migrate("records", first, steps[0])  # type: ignore[attr-defined]
    clock.advance(61)
    report = run(runtime, clock, mode="re-encrypt")
    assert report.resumed and report.status == "completed"
    store = runtime.dek_store
    assert store.get_many([first.dek_id, steps[1].new]) == {}  # old of committed, new of the other
    assert docs.get(first.id).dek_id == steps[0].new
    assert versions_of(runtime) == {"2": 4}
    assert verify(runtime, mek_version="2").clean


def test_reencrypt_retries_a_document_a_writer_changed(
    runtime: ProductRuntime, clock: FakeClock
) -> None:
    """A concurrent application write makes the step re-read and redo that document."""
    seed(runtime, 3)
    runtime.provider.create_version()
    docs = runtime.documents["records"]
    target = docs.get("doc-1")
    done = []

    def app_write(name: str) -> None:
        if name == "wrap" and not done:
            done.append(1)
            fields = runtime.encryptor.encrypt_document(
                "records", "doc-1", {**document(1), "ssn": "999-99-9999"}, dek_id=target.dek_id
            )
            docs.replace_fields(target, fields, target.dek_id)

    faulty(runtime, clock).before_call(app_write)
    report = run(runtime, clock, mode="re-encrypt")
    assert report.counters.changed == 3
    runtime.encryptor.cache.clear()
    assert read_all(runtime)["doc-1"]["ssn"] == "999-99-9999"
    assert verify(runtime, mek_version="2").clean


def test_encrypt_backfills_plaintext_and_decrypt_backs_it_out(
    runtime: ProductRuntime, clock: FakeClock
) -> None:
    """Plaintext documents get DEKs and tokens; decrypt writes plaintext back; both idempotent."""
    seed(runtime, 10, encrypt=False)
    seed(runtime, 5, start=10)
    report = run(runtime, clock, mode="encrypt", batch_size=4)
    assert (report.counters.changed, report.counters.skipped) == (10, 5)
    stored = runtime.documents["records"].get("doc-3")
    assert token.is_token(stored.fields["ssn"]) and token.is_token(stored.fields["profile"]["note"])
    assert stored.fields["name"] == "person 3"
    assert verify(runtime, mek_version="1").clean
    assert run(runtime, clock, mode="encrypt").counters.changed == 0

    report = run(runtime, clock, mode="decrypt", batch_size=4)
    assert report.counters.changed == 15
    stored = runtime.documents["records"].get("doc-12")
    assert stored.dek_id is None and stored.fields == document(12)
    assert run(runtime, clock, mode="decrypt").counters.changed == 0
    assert sum(versions_of(runtime).values()) == 15  # decrypt keeps the DEKs
    assert verify(runtime, mek_version="1").unreferenced_deks == 15
    # backed out, readers run with encryption off, which reads plaintext
    runtime.encryptor.allow_plaintext = True
    assert json.dumps(read_all(runtime))  # everything is plaintext and readable
