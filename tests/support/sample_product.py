"""A sample product for the CLI and rotation tests: ``tests.support.sample_product:product``.

The rehearsal product (:mod:`field_encrypt.rehearsal`), re-exported. One collection, ``records``, with an encrypted top-level field (``ssn``) and a nested one
(``profile.note``), both blind-indexed (``profile.note`` case-insensitively; their index
values are in ``ssn__bi`` and ``profile.note__bi`` once an index key exists), opened on the database ``FIELD_ENCRYPT_DATABASE`` names (SQLite,
PostgreSQL or Cosmos DB) with the provider the settings name. Variants for the reliability tests:

* ``counting_product``: the provider is wrapped in a :class:`CountingProvider`, kept in
  :data:`LAST_COUNTER` so an in-process test can read how many calls a command made;
* ``unreachable_product``: every data-plane call fails transiently, for ever;
* ``killable_product``: ``SAMPLE_KILL_AT=provider:N`` kills the process with SIGKILL
  just before the N-th data-plane provider call, ``SAMPLE_KILL_AT=store:N`` right after
  the N-th batch write (``replace_wraps``, ``swap_wraps``) committed (before the ledger
  heard of it), and
  ``SAMPLE_KILL_AT=document:N`` right after the N-th document write committed (with a
  page written in one batch: right after the batch that holds the N-th write committed),
  ``SAMPLE_KILL_AT=scan:N`` just before the N-th page is read (dek_store or documents):
  scan ``N`` comes right after batch ``N-1`` was checkpointed, so ``scan:1..`` are the
  batch boundaries of a run; for the scheduled rotation, ``SAMPLE_KILL_AT=stage:NAME``
  right after the rotation entered stage NAME (its state saved and its ``rotation.stage``
  event stored, before the stage's work), and ``SAMPLE_KILL_AT=control:METHOD`` right
  after the provider's ``create_version`` or ``set_enabled`` returned (before anyone
  recorded it).
* ``killable_audit_product``: ``SAMPLE_KILL_AT=audit:STAGE:TYPE`` kills the process at one
  point between an act and its audit event of type ``io.field-encrypt.TYPE``: ``intent``
  right after the act was announced (an act outside the database), ``control`` right after
  the key service's ``set_enabled`` (``create_version`` for ``mek.version.created``) returned, ``act`` when the event is about to be
  written (the act's rows written, uncommitted where the act and the event are one unit),
  ``emitted`` right after the event was written, ``committed`` right after the unit that
  holds both committed.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, nullcontext
from typing import Any

from field_encrypt.audit import ROTATION_STAGE, TYPE_PREFIX, AuditEvent, AuditTrail, ChainReport
from field_encrypt.backends.base import (
    DekPage,
    DekRecord,
    DekStore,
    NewDek,
    NewWrap,
    WrapPage,
    WrapUpdate,
)
from field_encrypt.config import Settings
from field_encrypt.documents import DocumentWrite, StoredDocument
from field_encrypt.products import Product, ProductRuntime
from field_encrypt.providers.base import KeyProvider, KeyVersion
from field_encrypt.rehearsal import COLLECTIONS, NAME, _open, product
from field_encrypt.testing import CountingProvider, FaultInjectingProvider

__all__ = [
    "COLLECTIONS",
    "NAME",
    "counting_product",
    "killable_audit_product",
    "killable_product",
    "product",
]

LAST_COUNTER: list[CountingProvider] = []


def _open_counting(settings: Settings) -> ProductRuntime:
    runtime = _open(settings)
    counter = CountingProvider(runtime.provider)
    runtime.provider = counter
    runtime.encryptor.provider = counter
    LAST_COUNTER.append(counter)
    return runtime


counting_product = Product(name=NAME, collections=COLLECTIONS, open=_open_counting)


def _kill() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


class _Countdown:
    def __init__(self, n: int) -> None:
        self.n = n

    def tick(self) -> None:
        self.n -= 1
        if self.n == 0:
            _kill()


class _KillingStore:
    """A DekStore that dies right after its N-th batch write (``replace_wraps`` or
    ``swap_wraps``) has committed, or on its N-th scan."""

    def __init__(
        self, inner: DekStore, countdown: _Countdown | None, scans: _Countdown | None = None
    ) -> None:
        self.inner = inner
        self.product = inner.product
        self.remote = inner.remote
        self.countdown = countdown
        self.scans = scans

    def create(self, **kwargs: Any) -> DekRecord:
        return self.inner.create(**kwargs)

    def create_many(self, deks: Sequence[NewDek]) -> None:
        self.inner.create_many(deks)

    def get(self, dek_id: str) -> DekRecord:
        return self.inner.get(dek_id)

    def get_many(self, dek_ids: Sequence[str]) -> dict[str, DekRecord]:
        return self.inner.get_many(dek_ids)

    def delete(self, dek_id: str) -> bool:
        return self.inner.delete(dek_id)

    def delete_many(self, dek_ids: Sequence[str]) -> int:
        return self.inner.delete_many(dek_ids)

    def replace_wraps(self, updates: Sequence[WrapUpdate]) -> list[str]:
        lost = self.inner.replace_wraps(updates)
        if self.countdown is not None:
            self.countdown.tick()
        return lost

    def swap_wraps(
        self, wraps: Sequence[NewWrap], *, mek_version: str, algorithm: str
    ) -> list[str]:
        lost = self.inner.swap_wraps(wraps, mek_version=mek_version, algorithm=algorithm)
        if self.countdown is not None:
            self.countdown.tick()
        return lost

    def scan(self, **kwargs: Any) -> DekPage:
        if self.scans is not None:
            self.scans.tick()
        return self.inner.scan(**kwargs)

    def scan_wraps(self, **kwargs: Any) -> WrapPage:
        if self.scans is not None:
            self.scans.tick()
        return self.inner.scan_wraps(**kwargs)

    def count_by_version(self) -> dict[str, int]:
        return self.inner.count_by_version()

    def count_not_on(self, version: str) -> int:
        return self.inner.count_not_on(version)

    def count_under(self, mek_name: str, version: str) -> dict[str, int]:
        return self.inner.count_under(mek_name, version)

    def active_keks_under(self, mek_name: str, version: str) -> dict[str, int]:
        return self.inner.active_keks_under(mek_name, version)


class _KillingDocuments:
    """A DocumentStore that dies right after its N-th write has committed."""

    def __init__(
        self, inner: Any, countdown: _Countdown | None, scans: _Countdown | None = None
    ) -> None:
        self.inner = inner
        self.collection = inner.collection
        self.countdown = countdown
        self.scans = scans

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def scan(self, **kwargs: Any) -> Any:
        if self.scans is not None:
            self.scans.tick()
        return self.inner.scan(**kwargs)

    def replace_fields(
        self, document: StoredDocument, fields: dict[str, Any], dek_id: str | None
    ) -> StoredDocument:
        written = self.inner.replace_fields(document, fields, dek_id)
        if self.countdown is not None:
            self.countdown.tick()
        return written

    def replace_many(self, writes: Sequence[DocumentWrite]) -> list[str]:
        """The batch commits, then each write that won counts (a page is one commit)."""
        lost = self.inner.replace_many(writes)
        if self.countdown is not None:
            for _ in range(len(writes) - len(lost)):
                self.countdown.tick()
        return lost


class _KillingTrail:
    """An audit trail that dies right after storing the event that enters stage ``stage``."""

    def __init__(self, inner: AuditTrail, stage: str) -> None:
        self.inner = inner
        self.stage = stage

    def emit(self, type: str, *, subject: str, data: Mapping[str, Any] | None = None) -> AuditEvent:
        event = self.inner.emit(type, subject=subject, data=data)
        if (
            type == ROTATION_STAGE
            and (data or {}).get("stage") == self.stage
            and "previous" in (data or {})
        ):
            _kill()
        return event

    def events(self, **filters: Any) -> list[AuditEvent]:
        return self.inner.events(**filters)

    def verify(self) -> ChainReport:
        return self.inner.verify()


class _KillingControl(FaultInjectingProvider):
    """A provider that dies right after one control-plane call (create or enable/disable)."""

    def __init__(self, inner: KeyProvider, method: str) -> None:
        super().__init__(inner)
        self.method = method

    def create_version(self) -> KeyVersion:
        version = self.inner.create_version()
        if self.method == "create_version":
            _kill()
        return version

    def set_enabled(self, version: str, enabled: bool) -> KeyVersion:
        state = self.inner.set_enabled(version, enabled)
        if self.method == "set_enabled":
            _kill()
        return state


def _open_killable(settings: Settings) -> ProductRuntime:
    runtime = _open(settings)
    where, _, count = os.environ.get("SAMPLE_KILL_AT", "").partition(":")
    if not where:
        return runtime
    countdown = _Countdown(int(count))
    if where == "provider":
        faulty = FaultInjectingProvider(runtime.provider)
        faulty.before_call(lambda _name: countdown.tick())
        runtime.provider = faulty
        runtime.encryptor.provider = faulty
    elif where == "store":
        runtime.dek_store = _KillingStore(runtime.dek_store, countdown)
    elif where == "document":
        runtime.documents = {
            name: _KillingDocuments(docs, countdown) for name, docs in runtime.documents.items()
        }
    elif where == "scan":
        runtime.dek_store = _KillingStore(runtime.dek_store, None, countdown)
        runtime.documents = {
            name: _KillingDocuments(docs, None, countdown)
            for name, docs in runtime.documents.items()
        }
    return runtime


def _open_killable_rotation(settings: Settings) -> ProductRuntime:
    where, _, what = os.environ.get("SAMPLE_KILL_AT", "").partition(":")
    if where not in ("stage", "control"):
        return _open_killable(settings)
    runtime = _open(settings)
    if where == "stage" and runtime.audit is not None:
        runtime.audit = _KillingTrail(runtime.audit, what)
    elif where == "control":
        control = _KillingControl(runtime.provider, what)
        runtime.provider = control
        runtime.encryptor.provider = control
    return runtime


class _KillingOutbox:
    """An audit trail that dies at one point between an act and its event (see the module
    docstring); everything else is the trail's own."""

    def __init__(self, inner: AuditTrail, stage: str, type: str) -> None:
        self.inner = inner
        self.stage = stage
        self.type = type
        self._depth = 0
        self._kill_on_commit = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def emit(self, type: str, *, subject: str, data: Mapping[str, Any] | None = None) -> AuditEvent:
        return self.emit_for(None, type, subject=subject, data=data or {})

    def emit_for(
        self, intent: str | None, type: str, *, subject: str, data: Mapping[str, Any]
    ) -> AuditEvent:
        hit = type == self.type and not data.get("recovered")
        if hit and self.stage == "act":
            _kill()
        inner: Any = self.inner
        if hasattr(inner, "emit_for"):
            event: AuditEvent = inner.emit_for(intent, type, subject=subject, data=data)
        else:
            event = inner.emit(type, subject=subject, data=data)
        if hit and self.stage == "emitted":
            _kill()
        if hit and self.stage == "committed":
            if not self._depth:
                _kill()
            self._kill_on_commit = True
        return event

    @contextmanager
    def within(self) -> Iterator[None]:
        inner = getattr(self.inner, "within", None)
        self._depth += 1
        try:
            with inner() if inner is not None else nullcontext():
                yield
        finally:
            self._depth -= 1
        if not self._depth and self._kill_on_commit:
            _kill()

    def intend(self, type: str, **kwargs: Any) -> str:
        intent: str = self.inner.intend(type, **kwargs)  # type: ignore[attr-defined]
        if type == self.type and self.stage == "intent":
            _kill()
        return intent

    def events(self, **filters: Any) -> list[AuditEvent]:
        return self.inner.events(**filters)

    def verify(self) -> ChainReport:
        return self.inner.verify()


def _open_killable_audit(settings: Settings) -> ProductRuntime:
    runtime = _open(settings)
    where, _, what = os.environ.get("SAMPLE_KILL_AT", "").partition(":")
    if where != "audit" or runtime.audit is None:
        return runtime
    stage, _, type = what.partition(":")
    if stage == "control":
        method = "create_version" if type == "mek.version.created" else "set_enabled"
        control = _KillingControl(runtime.provider, method)
        runtime.provider = control
        runtime.encryptor.provider = control
    else:
        trail: Any = _KillingOutbox(runtime.audit, stage, TYPE_PREFIX + type)
        runtime.audit = trail
        runtime.encryptor.audit = trail
        if runtime.kek_tier is not None:
            runtime.kek_tier.audit = trail
    return runtime


killable_product = Product(name=NAME, collections=COLLECTIONS, open=_open_killable)
killable_audit_product = Product(name=NAME, collections=COLLECTIONS, open=_open_killable_audit)
"""The sample product with kill points between an act and its audit event (``audit:...``)."""
killable_rotation_product = Product(
    name=NAME, collections=COLLECTIONS, open=_open_killable_rotation
)
"""``killable_product`` plus the rotation's kill points (``stage:NAME``, ``control:METHOD``)."""


def _open_unreachable(settings: Settings) -> ProductRuntime:
    runtime = _open(settings)
    faulty = FaultInjectingProvider(runtime.provider)
    faulty.outage(float("inf"))
    runtime.provider = faulty
    runtime.encryptor.provider = faulty
    return runtime


unreachable_product = Product(name=NAME, collections=COLLECTIONS, open=_open_unreachable)
"""Every wrap, unwrap and rewrap fails transiently, for ever (the exit code 7 test)."""
