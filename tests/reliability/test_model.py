"""A model-based test: random sequences of application writes, rewraps killed and resumed,
versions disabled and enabled, and time passing. The invariants hold after every step.

Hypothesis drives a ``RuleBasedStateMachine`` over the sample product (SQLite, local
keyring, real crypto) and a model of what each document should read back. A rewrap is
*killed* in process: an exception raised from a provider call, after which the dead run's
ledger keeps its lease exactly as a SIGKILLed process would (its release is dropped), so
the next run is refused until the clock passes the lease TTL. Disabling a version is what
``field-encrypt keys disable`` does to a process (the provider refuses it, the cache
forgets it); reads of documents under it must then fail with ``KeyVersionDisabledError``
and nothing else. CI runs ``max_examples=100`` sequences of up to 40 steps;
``FIELD_ENCRYPT_SOAK=1`` runs 1000 of up to 80.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

import hypothesis.strategies as st
from hypothesis import HealthCheck, settings
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from field_encrypt import (
    DekCache,
    KeyVersionDisabledError,
    LeaseHeldError,
    NotFoundError,
    RotationError,
)
from field_encrypt.backends.sqlite.ledger import SqliteRunLedger
from field_encrypt.providers.local import LocalKeyProvider
from field_encrypt.rotation import MigrationOptions, migrate
from field_encrypt.testing import FakeClock, FaultInjectingProvider
from tests import figures
from tests.reliability import remote
from tests.reliability.conftest import scaled
from tests.reliability.invariants import check

LEASE_TTL = 60.0
texts = st.text(alphabet="abcdefghij0123456789 ", min_size=0, max_size=12)


class Killed(BaseException):
    """The in-process stand-in for SIGKILL: nothing in the engine catches it."""


class _DeadOnKill(SqliteRunLedger):
    """A ledger that forgets to release a shard once its process was 'killed'."""

    killed = False

    def release_shard(self, run_id: str, index: int, **kwargs: Any) -> Any:
        if self.killed:
            return self.get_run(run_id)
        return super().release_shard(run_id, index, **kwargs)


class RotationModel(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.directory = Path(tempfile.mkdtemp(prefix="fe-model-"))
        self.clock = FakeClock()
        self.inner = LocalKeyProvider(self.directory / "ring.json", mek_name="m", refresh_seconds=0)
        self.provider = FaultInjectingProvider(self.inner, clock=self.clock.monotonic)
        self.runtime = remote.open_runtime(self.directory / "fe.db", self.provider)
        self.runtime.encryptor.cache = DekCache(ttl_seconds=30, clock=self.clock.monotonic)
        self.docs = self.runtime.documents["records"]
        self.model: dict[str, dict[str, Any]] = {}
        self.deleted: set[str] = set()
        self.disabled: set[str] = set()
        self.lease_until = float("-inf")
        self.kill_at: int | None = None
        self.calls = 0
        self.provider.before_call(self._maybe_kill)
        self.next_id = 0
        self.ledger = _DeadOnKill(self.runtime.database)
        figures.record("model-based", sequences=1)

    def teardown(self) -> None:
        self.runtime.close()
        shutil.rmtree(self.directory, ignore_errors=True)

    def _maybe_kill(self, _name: str) -> None:
        self.calls += 1
        if self.kill_at is not None and self.calls >= self.kill_at:
            self.kill_at = None
            self.ledger.killed = True  # from here on the process is dead: no release
            raise Killed()

    def _version_of(self, doc_id: str) -> str:
        dek_id = self.docs.get(doc_id).dek_id
        assert dek_id is not None
        return self.runtime.dek_store.get(dek_id).mek_version

    def _step(self, name: str) -> None:
        figures.record("model-based", steps=1, **{name: 1})

    # -- the application -------------------------------------------------------------------

    @initialize(count=st.integers(min_value=0, max_value=8))
    def documents(self, count: int) -> None:
        for i in range(count):
            self.create(ssn=f"ssn {i}", note=f"note {i}")

    @rule(ssn=texts, note=texts)
    def create(self, ssn: str, note: str) -> None:
        doc_id = f"doc-{self.next_id}"
        self.next_id += 1
        plain = {"ssn": ssn, "profile": {"note": note}}
        dek_id = self.runtime.encryptor.create_dek()
        sealed = self.runtime.encryptor.encrypt_document("records", doc_id, plain, dek_id=dek_id)
        self.docs.insert(doc_id, sealed, dek_id)
        self.model[doc_id] = plain
        self._step("creates")

    @precondition(lambda self: self.model)
    @rule(data=st.data(), ssn=texts)
    def update(self, data: st.DataObject, ssn: str) -> None:
        doc_id = data.draw(st.sampled_from(sorted(self.model)))
        stored = self.docs.get(doc_id)
        plain = {**self.model[doc_id], "ssn": ssn}
        try:
            sealed = self.runtime.encryptor.encrypt_document(
                "records", doc_id, plain, dek_id=stored.dek_id
            )
        except KeyVersionDisabledError:
            assert self._version_of(doc_id) in self.disabled
            return
        self.docs.replace_fields(stored, sealed, stored.dek_id)
        self.model[doc_id] = plain
        self._step("updates")

    @precondition(lambda self: self.model)
    @rule(data=st.data())
    def delete(self, data: st.DataObject) -> None:
        doc_id = data.draw(st.sampled_from(sorted(self.model)))
        dek_id = self.docs.get(doc_id).dek_id
        assert dek_id is not None
        self.runtime.encryptor.shred(dek_id)
        self.docs.delete(doc_id)
        del self.model[doc_id]
        self.deleted.add(doc_id)
        self._step("deletes")

    @precondition(lambda self: self.model or self.deleted)
    @rule(data=st.data())
    def read(self, data: st.DataObject) -> None:
        doc_id = data.draw(st.sampled_from(sorted(set(self.model) | self.deleted)))
        try:
            stored = self.docs.get(doc_id)
        except NotFoundError:
            assert doc_id in self.deleted
            return
        try:
            plain = self.runtime.encryptor.decrypt_document("records", doc_id, stored.fields)
        except KeyVersionDisabledError:
            assert self._version_of(doc_id) in self.disabled
            return
        assert {k: plain[k] for k in ("ssn", "profile")} == self.model[doc_id]
        self._step("reads")

    # -- the operator -------------------------------------------------------------------

    @precondition(lambda self: len(self.inner.versions()) < 4)
    @rule()
    def create_version(self) -> None:
        self.inner.create_version()
        self._step("versions_created")

    @rule(data=st.data())
    def disable(self, data: st.DataObject) -> None:
        current = self.inner.current_version()
        candidates = [v.version for v in self.inner.versions() if v.version != current]
        if not candidates:
            return
        version = data.draw(st.sampled_from(candidates))
        self.provider.disable(version)
        self.runtime.encryptor.cache.invalidate_version(version)
        self.disabled.add(version)
        self._step("disables")

    @precondition(lambda self: self.disabled)
    @rule(data=st.data())
    def enable(self, data: st.DataObject) -> None:
        version = data.draw(st.sampled_from(sorted(self.disabled)))
        self.provider.enable(version)
        self.disabled.discard(version)
        self._step("enables")

    @rule(seconds=st.sampled_from([1.0, 10.0, 45.0, 100.0]))
    def advance_clock(self, seconds: float) -> None:
        self.clock.advance(seconds)
        self._step("clock_advances")

    def _work_left(self) -> bool:
        target = self.inner.current_version()
        return any(v != target for v in self.runtime.dek_store.count_by_version())

    @precondition(lambda self: self._work_left())
    @rule(share=st.floats(min_value=0.0, max_value=1.0))
    def rewrap_killed(self, share: float) -> None:
        """Run (or resume) a rewrap, killed part way: after ``share`` of the provider calls
        it would make (three per DEK off the target)."""
        target = self.inner.current_version()
        off = sum(n for v, n in self.runtime.dek_store.count_by_version().items() if v != target)
        self.rewrap(1 + int(share * 3 * off))

    @rule()
    def rewrap_to_the_end(self) -> None:
        """Run (or resume) a rewrap to the current version."""
        self.rewrap(None)

    def rewrap(self, kill_after: int | None) -> None:
        ledger = self.ledger = _DeadOnKill(self.runtime.database)
        self.calls = 0
        self.kill_at = kill_after
        target = self.inner.current_version()
        counts = self.runtime.dek_store.count_by_version()
        blocked = any(v in self.disabled and n for v, n in counts.items() if v != target)
        live_lease = self.clock.time() < self.lease_until
        try:
            report = migrate(
                self.runtime,
                ledger,
                MigrationOptions(mode="rewrap-deks", batch_size=3, lease_ttl=LEASE_TTL),
                clock=self.clock.time,
                monotonic=self.clock.monotonic,
                sleep=self.clock.sleep,
            )
        except Killed:
            self.lease_until = self.clock.time() + LEASE_TTL
            self._step("rewraps_killed")
            return
        except LeaseHeldError:
            assert live_lease, "refused although no live lease"
            self._step("rewraps_refused")
            return
        except RotationError:
            assert blocked, "refused although no DEK is under a disabled version"
            self._step("rewraps_refused")
            return
        finally:
            self.kill_at = None
        assert not live_lease or counts.get(target, 0) == sum(counts.values()), "lease ignored"
        assert not blocked
        assert report.status == "completed", report.as_dict()
        check(
            self.runtime,
            self.model,
            provider=self.inner,
            deleted=self.deleted,
            completed_on=target,
        ).assert_ok("after a completed rewrap")
        self._step("rewraps_completed")

    # -- after every step ----------------------------------------------------------------------

    @invariant()
    def invariants_hold(self) -> None:
        report = check(self.runtime, self.model, provider=self.inner, deleted=self.deleted)
        report.assert_ok()
        assert report.unreferenced == 0, "a DEK outlived its document"
        figures.record("model-based", invariant_checks=1)


RotationModel.TestCase.settings = settings(
    max_examples=scaled(100, 1000),
    stateful_step_count=scaled(40, 80),
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
TestRotationModel = RotationModel.TestCase
