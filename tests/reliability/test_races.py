"""Writers and a second run racing a migration: nothing deleted comes back, nothing is stale.

* NoteLett's own service creates, updates and deletes notes *between* the rewrap's
  provider calls (a seeded schedule, so a failure replays): deleted notes stay deleted,
  their DEK rows do not come back, and every DEK left belongs to a live note.
* A writer replaces or deletes DEK rows the rewrap has already read, before it writes its
  batch back: the newer wrap is kept (never a stale one over it), the deleted row stays
  deleted.
* A document deleted while re-encrypt or the encrypt backfill migrates it is skipped, not
  failed, and leaves no DEK behind.
* Two rewrap runs with different targets started together: one refuses (exit 6), the
  other completes; the state stays consistent. Interleaved on purpose (a barrier between
  opening the run and taking its lease), and as two real processes started at once.
* A NoteLett update that loses its compare-and-swap leaves no DEK behind.
"""

from __future__ import annotations

import json
import random
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from field_encrypt import ConcurrentUpdateError, LeaseHeldError, WrapUpdate, load_settings
from field_encrypt.products import ProductRuntime
from field_encrypt.providers.base import dek_context
from field_encrypt.providers.local import LocalKeyProvider
from field_encrypt.rotation import MigrationOptions, migrate, open_ledger
from field_encrypt.testing import FaultInjectingProvider
from notelett.backend import Backend, open_backend
from notelett.binding import document_id
from notelett.service import NoteContent, NotesService
from notelett.settings import NoteLettSettings
from tests import figures
from tests.backends import BACKEND_KINDS, backend_for
from tests.reliability import processes
from tests.reliability.conftest import scaled
from tests.reliability.invariants import check
from tests.service.conftest import add_members
from tests.support.fixtures import ledger_runs, on_every_store
from tests.support.sample_product import product
from tests.support.seed import document, seed


def _hook(runtime: ProductRuntime, action: Any) -> FaultInjectingProvider:
    """The engine's provider calls ``action(n)`` before its n-th data-plane call."""
    hooked = FaultInjectingProvider(runtime.provider)
    seen = [0]

    def before(_name: str) -> None:
        seen[0] += 1
        action(seen[0])

    hooked.before_call(before)
    runtime.provider = hooked
    return hooked


# -- NoteLett writers during a rewrap ---------------------------------------------------------


@pytest.fixture
def store_environ(
    store_kind: str, request: pytest.FixtureRequest, tmp_path: Path
) -> dict[str, str]:
    """FIELD_ENCRYPT_DATABASE (and the Cosmos DB key) of a fresh database of ``store_kind``."""
    return backend_for(store_kind, request, tmp_path).environ


@pytest.fixture
def backend(store_environ: dict[str, str], tmp_path: Path) -> Iterator[Backend]:
    """NoteLett on a fresh database of the test's store kind, with a local keyring."""
    encryption = load_settings(store_environ, keyring=str(tmp_path / "keyring.json"), mek_name="m")
    provider = LocalKeyProvider(encryption.keyring, mek_name="m", refresh_seconds=0)
    settings = NoteLettSettings(
        database=store_environ["FIELD_ENCRYPT_DATABASE"],
        jwt_secret="races-7c2e9b4f1a8d3e6c0b5f2a9d4e7c1b8f3a6d",
    )  # type: ignore[arg-type]
    opened = open_backend(encryption, settings, provider=provider)
    add_members(opened)
    yield opened
    opened.close()


@on_every_store
def test_notelett_writers_during_a_rewrap(backend: Backend) -> None:
    """Creates, updates and deletes between the rewrap's calls: the invariants hold after."""
    from notelett.auth import Principal

    service = NotesService(
        encryptor=backend.encryptor, notes=backend.notes, directory=backend.directory
    )
    alice = Principal(user_id="alice")
    live: dict[str, dict[str, str]] = {}
    deleted: set[str] = set()
    deleted_deks: set[str] = set()
    for i in range(scaled(60, 400)):
        note = service.create(alice, "ws-a", NoteContent(title=f"t{i}", body=f"b{i}", tags=()))
        live[note.id] = {"title": note.title, "body": note.body}
    backend.provider.create_version()
    rng = random.Random(1234)
    counts = {"create": 0, "update": 0, "delete": 0}

    def write(_call: int) -> None:
        kind = rng.choice(["create", "update", "delete", "none"])
        if kind == "create":
            note = service.create(alice, "ws-a", NoteContent(title="new", body="n", tags=()))
            live[note.id] = {"title": "new", "body": "n"}
        elif kind in ("update", "delete") and live:
            note_id = rng.choice(sorted(live))
            current = service.get(alice, note_id)
            if kind == "update":
                content = NoteContent(title=f"u{_call}", body="v", tags=())
                service.update(alice, note_id, content, if_match=current.etag)
                live[note_id] = {"title": content.title, "body": content.body}
            else:
                deleted_deks.add(backend.notes.get(note_id).dek_id or "")
                service.delete(alice, note_id, if_match=current.etag)
                del live[note_id]
                deleted.add(note_id)
        else:
            return
        counts[kind] += 1

    runtime = backend.runtime
    original = runtime.provider
    _hook(runtime, write)
    try:
        report = migrate(
            runtime, open_ledger(runtime), MigrationOptions(mode="rewrap-deks", batch_size=5)
        )
    finally:
        runtime.provider = original
    assert report.status == "completed" and report.failure_count == 0, report.as_dict()
    check(
        runtime, _bound(live), deleted={document_id("ws-a", n) for n in deleted}, completed_on="2"
    ).assert_ok("after the race")
    stored = set(runtime.dek_store.get_many(sorted(deleted_deks)))
    assert stored == set(), f"deleted notes' DEKs came back: {stored}"
    figures.record(
        "races",
        writes_during_rewrap=sum(counts.values()),
        deletes=counts["delete"],
        conflicts=report.counters.conflicts,
    )
    print(f"writes during the rewrap: {counts}, conflicts: {report.counters.conflicts}")


def _bound(notes: dict[str, dict[str, str]]) -> dict[str, dict[str, str]]:
    """Expected notes by their document id (the fields are bound to workspace and note)."""
    return {document_id("ws-a", note_id): fields for note_id, fields in notes.items()}


# -- a newer wrap, and a deleted row, under the rewrap's feet ---------------------------------


def _open(environ: dict[str, str], directory: Path) -> ProductRuntime:
    """The sample product on the test's database, its local keyring re-read on every call."""
    env = {**environ, "FIELD_ENCRYPT_KEYRING": str(directory / "keyring.json")}
    return product.open(load_settings(env, mek_name="m", provider_refresh_seconds=0))


def _sample(
    environ: dict[str, str], directory: Path, count: int, *, encrypt: bool = True
) -> ProductRuntime:
    runtime = _open(environ, directory)
    seed(runtime, count, encrypt=encrypt)
    return runtime


@on_every_store
def test_a_newer_wrap_is_never_overwritten_and_a_deleted_row_never_returns(
    store_environ: dict[str, str], tmp_path: Path
) -> None:
    """Rows of a batch the rewrap has read are rewrapped or deleted by another writer before
    the batch is written back: the writer's wrap stays, the deleted row stays gone."""
    runtime = _sample(store_environ, tmp_path, 20)
    provider = runtime.provider
    target = provider.create_version().version
    batch = 10
    second = runtime.dek_store.scan(limit=batch).cursor
    rows = runtime.dek_store.scan(cursor=second, limit=batch).records
    newer, gone = rows[2], rows[5]
    owners = {d.dek_id: d.id for d in runtime.documents["records"].scan(limit=100).documents}
    victim = owners[gone.dek_id]  # scan order is the store's own (Cosmos DB: not insertion)
    theirs: dict[str, bytes] = {}

    def writer(call: int) -> None:
        if call != 3 * batch + 1:  # the first call of the second batch: the page is read
            return
        context = dek_context(runtime.encryptor.product, newer.dek_id)
        dek = provider.unwrap(newer.wrapped, version=newer.mek_version, context=context)
        wrapped = provider.wrap(dek, context=context, version=target)
        assert (
            runtime.dek_store.replace_wraps(
                [
                    WrapUpdate(
                        record=newer,
                        mek_version=target,
                        wrapped=wrapped.ciphertext,
                        algorithm=wrapped.algorithm,
                    )
                ]
            )
            == []
        )
        theirs[newer.dek_id] = wrapped.ciphertext
        assert runtime.dek_store.delete(gone.dek_id)
        runtime.documents["records"].delete(victim)

    _hook(runtime, writer)
    report = migrate(
        runtime, open_ledger(runtime), MigrationOptions(mode="rewrap-deks", batch_size=batch)
    )
    runtime.provider = provider
    try:
        assert report.status == "completed", report.as_dict()
        assert report.counters.conflicts == 2 and report.counters.skipped >= 2, report.as_dict()
        assert runtime.dek_store.get(newer.dek_id).wrapped == theirs[newer.dek_id]
        assert runtime.dek_store.get_many([gone.dek_id]) == {}
        expected = {f"doc-{i}": document(i) for i in range(20) if f"doc-{i}" != victim}
        check(runtime, expected, deleted={victim}, completed_on=target).assert_ok()
        figures.record("races", stale_wraps_refused=1, resurrections_refused=1)
    finally:
        runtime.close()


@on_every_store
@pytest.mark.parametrize("mode", ["re-encrypt", "encrypt"])
def test_a_document_deleted_during_its_migration_is_skipped(
    store_environ: dict[str, str], tmp_path: Path, mode: str
) -> None:
    """The application deletes a document (and shreds its DEK) while the document mode is
    migrating it: skipped, not failed, and no DEK of it is left."""
    runtime = _sample(store_environ, tmp_path, 12, encrypt=mode == "re-encrypt")
    if mode == "re-encrypt":
        runtime.provider.create_version()
    target = runtime.provider.current_version()
    runtime.close()
    fresh = _open(store_environ, tmp_path)
    victim = "doc-5"
    docs = fresh.documents["records"]

    def app_deletes(call: int) -> None:
        if call == 6:  # creating doc-5's new DEK (the decrypting encryptor is not hooked)
            old = docs.get(victim).dek_id
            docs.delete(victim)
            if old:
                fresh.encryptor.shred(old)

    _hook(fresh, app_deletes)
    try:
        report = migrate(fresh, open_ledger(fresh), MigrationOptions(mode=mode, batch_size=4))
        assert report.status == "completed", report.as_dict()
        assert report.failure_count == 0, report.failures
        expected = {f"doc-{i}": document(i) for i in range(12) if f"doc-{i}" != victim}
        check(fresh, expected, deleted={victim}, completed_on=target).assert_ok(mode)
        figures.record("races", deleted_during_migration=1)
    finally:
        fresh.close()


# -- two runs with different targets ----------------------------------------------------------


class _Meeting:
    """A run ledger whose open_run waits for the other run's open_run before going on; the
    run opened first (the one the second abandons) then tries to take its lease first."""

    def __init__(self, inner: Any, barrier: threading.Barrier, shared: dict[str, Any]) -> None:
        self.inner = inner
        self.barrier = barrier
        self.shared = shared

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def open_run(self, **kwargs: Any) -> Any:
        opened = self.inner.open_run(**kwargs)
        with self.shared["lock"]:
            self.shared["order"].append(opened[0].run_id)
        self.barrier.wait(30)
        # The second run waits here, outside any transaction: a shard is taken inside the
        # unit that records run.started (the audit outbox), which on SQLite holds the write
        # lock, so waiting in acquire_shard would block the first run's attempt.
        if opened[0].run_id == self.shared["order"][1]:
            assert self.shared["first_tried"].wait(30)
        return opened

    def acquire_shard(self, run_id: str, index: int, **kwargs: Any) -> Any:
        first, _ = self.shared["order"]
        try:
            return self.inner.acquire_shard(run_id, index, **kwargs)
        finally:
            if run_id == first:
                self.shared["first_tried"].set()


@pytest.mark.parametrize("store_backend", BACKEND_KINDS, indirect=True)
def test_two_runs_with_different_targets_interleaved(store_backend: Any, tmp_path: Path) -> None:
    """Both open their run before either takes a lease: one refuses, the other completes
    (on every store's run ledger)."""
    env = {
        **store_backend.environ,
        "FIELD_ENCRYPT_KEY_PROVIDER": "local",
        "FIELD_ENCRYPT_KEYRING": str(tmp_path / "keyring.json"),
    }
    runtime = product.open(load_settings(env))
    seed(runtime, 30)
    v2 = runtime.provider.create_version().version
    v3 = runtime.provider.create_version().version
    runtime.close()
    barrier = threading.Barrier(2)
    shared = {"lock": threading.Lock(), "order": [], "first_tried": threading.Event()}
    outcome: dict[str, Any] = {}

    def run(target: str) -> None:
        rt = product.open(load_settings(env))
        try:
            outcome[target] = migrate(
                rt,
                _Meeting(open_ledger(rt), barrier, shared),
                MigrationOptions(mode="rewrap-deks", new_version=target, batch_size=5),
            )
        except Exception as exc:  # noqa: BLE001 - recorded for the assertion below
            outcome[target] = exc
        finally:
            rt.close()

    threads = [threading.Thread(target=run, args=(t,)) for t in (v2, v3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    refused = [t for t, o in outcome.items() if isinstance(o, LeaseHeldError)]
    finished = [t for t, o in outcome.items() if not isinstance(o, LeaseHeldError)]
    assert len(refused) == 1 and len(finished) == 1, outcome
    assert outcome[finished[0]].status == "completed"
    runtime = product.open(load_settings(env))
    try:
        expected = {f"doc-{i}": document(i) for i in range(30)}
        check(runtime, expected, completed_on=finished[0]).assert_ok(store_backend.kind)
    finally:
        runtime.close()
    figures.record("races", concurrent_runs_refused=1)


@on_every_store
def test_two_cli_processes_with_different_targets_started_together(
    store_kind: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """Real processes, started at once, again and again: never two runs at the same time
    (on a server database, one round: the test's database is its one fresh database)."""
    rounds = scaled(3, 15) if store_kind == "sqlite" else 1
    refusals = 0
    for round_ in range(rounds):
        directory = tmp_path / f"round-{round_}"
        directory.mkdir()
        env = {
            "FIELD_ENCRYPT_KEY_PROVIDER": "local",
            "FIELD_ENCRYPT_KEYRING": str(directory / "keyring.json"),
            **backend_for(store_kind, request, directory).environ,
        }
        runtime = product.open(load_settings(env))
        seed(runtime, 150)
        runtime.provider.create_version()
        runtime.provider.create_version()
        runtime.close()
        args = ["migrate", "--product", "tests.support.sample_product:product"]
        args += ["--mode", "rewrap-deks", "--batch-size", "10", "--json"]
        started = [processes.start(*args, "--new-mek-version", t, env=env) for t in ("2", "3")]
        results = [processes.finish(p, w) for p, w in started]
        codes = sorted(r.returncode for r in results)
        assert codes in ([0, 0], [0, 6]), [(r.returncode, r.stderr[-500:]) for r in results]
        refusals += codes == [0, 6]
        statuses = [json.loads(r.stdout)["status"] for r in results if r.returncode == 0]
        assert statuses and all(s == "completed" for s in statuses), statuses
        runs = ledger_runs(env, field="to_version")
        completed = [r for r in runs if r[1] == "completed"]
        assert len(completed) == codes.count(0), runs  # every exit 0 is a completed run
        assert len(runs) - len(completed) <= codes.count(6), runs  # abandoned ones refused
        # Which completed last: the one whose target every DEK is on (a run's start time
        # is read before it waits for the database, so it cannot order them).
        runtime = product.open(load_settings(env))
        try:
            (last,) = runtime.dek_store.count_by_version()
        finally:
            runtime.close()
        assert last in {r[0] for r in completed}, (last, runs)
        runtime = product.open(load_settings(env))
        try:
            expected = {f"doc-{i}": document(i) for i in range(150)}
            check(runtime, expected, completed_on=last).assert_ok(f"round {round_}")
        finally:
            runtime.close()
    figures.record("races", cli_race_rounds=rounds, concurrent_runs_refused=refusals)
    print(f"{rounds} rounds of two processes: {refusals} refused the other's run")


@on_every_store
def test_an_update_that_loses_its_compare_and_swap_leaves_no_dek(backend: Backend) -> None:
    """A plaintext note (from before encryption) updated while someone else writes it: the
    update answers 412 and the DEK it made for the note is gone again."""
    from notelett.auth import Principal
    from notelett.errors import PreconditionFailedError
    from notelett.repositories.base import NoteRecord

    service = NotesService(
        encryptor=backend.encryptor, notes=backend.notes, directory=backend.directory
    )
    import datetime as dt

    now = dt.datetime.now(dt.UTC)
    backend.notes.insert(
        NoteRecord(
            id="plain",
            workspace_id="ws-a",
            title="t",
            body="b",
            tags=(),
            dek_id=None,
            revision=1,
            created_at=now,
            updated_at=now,
        )
    )
    original = backend.notes.replace

    def racing_replace(note_id: str, **kwargs: Any) -> Any:
        original(note_id, **{**kwargs, "dek_id": None, "title": "x", "body": "y"})
        return original(note_id, **kwargs)  # now stale: the other writer went first

    backend.notes.replace = racing_replace  # type: ignore[method-assign]
    # the lost swap re-reads the note: its revision moved past If-Match, so 412
    with pytest.raises((ConcurrentUpdateError, PreconditionFailedError)):
        service.update(
            Principal(user_id="alice"),
            "plain",
            NoteContent(title="n", body="m", tags=()),
            if_match='"1"',
        )
    assert backend.runtime.dek_store.count_by_version() == {}
    figures.record("races", orphan_deks_refused=1)


@on_every_store
def test_writer_threads_during_a_rewrap(backend: Backend) -> None:
    """Real threads: three writers create, update and delete notes (each its own share, so
    the expected state is exact) while a rewrap runs; the invariants hold afterwards."""
    from notelett.auth import Principal

    service = NotesService(
        encryptor=backend.encryptor, notes=backend.notes, directory=backend.directory
    )
    alice = Principal(user_id="alice")
    writers = 3
    shares: list[dict[str, dict[str, str]]] = [{} for _ in range(writers)]
    for i in range(scaled(150, 1500)):
        note = service.create(alice, "ws-a", NoteContent(title=f"t{i}", body="b", tags=()))
        shares[i % writers][note.id] = {"title": note.title, "body": note.body}
    backend.provider.create_version()
    deleted: set[str] = set()
    done = threading.Event()
    writes = [0] * writers

    def write(index: int) -> None:
        rng = random.Random(index)
        mine = shares[index]
        while not done.is_set():
            kind = rng.choice(["create", "update", "delete"])
            if kind == "create" or not mine:
                note = service.create(alice, "ws-a", NoteContent(title="n", body="w", tags=()))
                mine[note.id] = {"title": "n", "body": "w"}
            elif kind == "update":
                note_id = rng.choice(sorted(mine))
                current = service.get(alice, note_id)
                title = f"u{writes[index]}"
                service.update(
                    alice,
                    note_id,
                    NoteContent(title=title, body="v", tags=()),
                    if_match=current.etag,
                )
                mine[note_id] = {"title": title, "body": "v"}
            else:
                note_id = rng.choice(sorted(mine))
                service.delete(alice, note_id, if_match=None)
                del mine[note_id]
                deleted.add(note_id)
            writes[index] += 1

    threads = [threading.Thread(target=write, args=(i,)) for i in range(writers)]
    for thread in threads:
        thread.start()
    try:
        report = migrate(
            backend.runtime,
            open_ledger(backend.runtime),
            MigrationOptions(mode="rewrap-deks", batch_size=10),
        )
    finally:
        done.set()
        for thread in threads:
            thread.join(30)
    assert report.status == "completed" and report.failure_count == 0, report.as_dict()
    # Notes created after the rewrap passed them are on v2 anyway; nothing else may be off.
    live = {k: v for share in shares for k, v in share.items()}
    check(
        backend.runtime,
        _bound(live),
        deleted={document_id("ws-a", n) for n in deleted},
        completed_on="2",
    ).assert_ok("after threads")
    figures.record(
        "races", threaded_writes_during_rewrap=sum(writes), conflicts=report.counters.conflicts
    )
    print(f"{sum(writes)} threaded writes during the rewrap, {report.counters.conflicts} conflicts")
