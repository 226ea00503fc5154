"""Lazy rewrap on read (opt-in, ``FIELD_ENCRYPT_LAZY_REWRAP=true``): DEKs that are read move
to the current MEK version by themselves.

The tail of a rotation is DEKs nobody rewrapped yet. With this on, when
:class:`~field_encrypt.envelope.FieldEncryptor` unwraps a DEK whose row is wrapped under a
MEK version other than the current one, it hands the row to a :class:`LazyRewrapper`
(:meth:`~LazyRewrapper.offer`: a bounded queue, never blocking, never raising; the read
goes on with the DEK it already has). A daemon thread takes the rows in batches and
performs the rotation engine's guarded compare-and-swap rewrap on each:

1. the new wrap is made under the current version and **checked** before it is written
   (in process: unwrap, wrap, unwrap the new wrap and compare; a remote provider: its
   ``rewrap``, then both wraps unwrapped and compared), three provider calls per DEK;
2. the batch is swapped in with ``replace_wraps``, each row only if it is still at the
   revision that was read; a row that lost (the engine, another process or an application
   write got there first) is read again: on the target already, or deleted, it is left
   alone (``skipped``); still off it, it is redone (at most :data:`MAX_ROUNDS` times).

Provider calls go through a token bucket of ``FIELD_ENCRYPT_LAZY_REWRAP_MAX_RPS`` calls a
second (at most one DEK's calls saved up), so the rewrapper never takes more than that
share of the key service's quota, however many reads there are; rows offered while the queue is full are dropped (a
later read offers them again). DEKs under a KEK (``kek:`` rows) are left to the KEK tier's
own rotation. Every outcome is counted (``field_encrypt_lazy_rewraps_total``) and each
batch that changed or failed something is one ``dek.rewrapped.lazily`` audit event.
"""

from __future__ import annotations

import hmac
import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from field_encrypt import metrics
from field_encrypt.audit import DEK_REWRAPPED_LAZILY, AuditTrail
from field_encrypt.backends.base import KEK_PREFIX, DekRecord, DekStore, WrapUpdate
from field_encrypt.errors import FieldEncryptError, KeyProviderError
from field_encrypt.poller import Poller
from field_encrypt.providers.base import KeyProvider, dek_context
from field_encrypt.rotation.ratelimit import TokenBucket

if TYPE_CHECKING:
    from field_encrypt.products import ProductRuntime

log = logging.getLogger("field_encrypt.lazy_rewrap")

CALLS_PER_DEK = 3
"""Provider calls one checked rewrap takes (what the token bucket is charged)."""
MAX_ROUNDS = 3
"""Times a row that lost its compare-and-swap, and is still off the target, is redone."""
EVENT_IDS = 100
"""dekIds named in one audit event at most (the counts are always complete)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class LazyRewrapStats:
    """What a :class:`LazyRewrapper` did since it was made."""

    offered: int
    dropped: int
    rewrapped: int
    skipped: int
    conflicts: int
    failed: int
    pending: int


class LazyRewrapper:
    """Rewraps, in the background and rate-limited, the DEKs reads found off the current version."""

    def __init__(
        self,
        *,
        product: str,
        provider: KeyProvider,
        store: DekStore,
        audit: AuditTrail | None = None,
        max_rps: float = 5.0,
        queue_size: int = 1000,
        batch_size: int = 100,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] | None = None,
    ) -> None:
        if max_rps <= 0 or queue_size < 1 or batch_size < 1:
            raise ValueError("max_rps, queue_size and batch_size must be positive")
        self.product = product
        self.provider = provider
        self.store = store
        self.audit = audit
        self.max_rps = max_rps
        self.batch_size = batch_size
        self._poller = Poller(
            f"field-encrypt-lazy-rewrap-{product}", self._step, self._step_failed, interval=0.0
        )
        self._stop = self._poller.stopped
        self.bucket = TokenBucket(
            max_rps, burst=float(CALLS_PER_DEK), clock=clock, sleep=sleep or self._nap
        )
        self._queue: queue.Queue[DekRecord] = queue.Queue(maxsize=queue_size)
        self._lock = threading.Lock()
        self._pending: set[str] = set()
        self._target: str | None = None
        self._offered = self._dropped = 0
        self._rewrapped = self._skipped = self._conflicts = self._failed = 0

    def __repr__(self) -> str:
        return f"LazyRewrapper(product={self.product!r}, max_rps={self.max_rps})"

    # -- the read side -----------------------------------------------------------------

    def offer(self, record: DekRecord) -> bool:
        """Queue ``record`` for a rewrap if it may need one; whether it was queued.

        Never blocks and never raises: this is on a read's path.
        """
        version = record.mek_version
        if version == self._target or version.startswith(KEK_PREFIX):
            return False
        with self._lock:
            if record.dek_id in self._pending:
                return False
            self._pending.add(record.dek_id)
            self._offered += 1
        try:
            self._queue.put_nowait(record)
        except queue.Full:
            with self._lock:
                self._pending.discard(record.dek_id)
                self._dropped += 1
            metrics.lazy_rewrapped(self.product, "dropped")
            return False
        return True

    # -- the background side -----------------------------------------------------------

    def run_batch(self, timeout: float | None = None) -> int:
        """Take up to ``batch_size`` queued rows (waiting up to ``timeout`` for the first)
        and rewrap them; how many were taken. What the thread does in a loop."""
        try:
            first = self._queue.get(timeout=timeout)
        except queue.Empty:
            return 0
        batch = [first]
        while len(batch) < self.batch_size:
            try:
                batch.append(self._queue.get_nowait())
            except queue.Empty:
                break
        try:
            self._rewrap(batch)
        finally:
            with self._lock:
                self._pending.difference_update(r.dek_id for r in batch)
            for _ in batch:
                self._queue.task_done()
        return len(batch)

    def _rewrap(self, batch: list[DekRecord]) -> None:
        counts = {"rewrapped": 0, "skipped": 0, "conflict": 0, "failed": 0}
        done: list[str] = []
        try:
            target = self.provider.current_version()
        except FieldEncryptError as exc:
            counts["failed"] = len(batch)
            self._count(counts, done, None, exc)
            return
        self._target = target
        records = [r for r in batch if r.mek_version != target]
        counts["skipped"] += len(batch) - len(records)
        last_error: FieldEncryptError | None = None
        for round_ in range(MAX_ROUNDS + 1):
            updates: list[WrapUpdate] = []
            for record in records:
                if self._stop.is_set():
                    break
                try:
                    updates.append(self._checked_rewrap(record, target))
                except FieldEncryptError as exc:
                    counts["failed"] += 1
                    last_error = exc
            if not updates:
                break
            try:
                lost = set(self.store.replace_wraps(updates))
                again = self.store.get_many(sorted(lost)) if lost else {}
            except FieldEncryptError as exc:
                counts["failed"] += len(updates)
                last_error = exc
                break
            done += [u.record.dek_id for u in updates if u.record.dek_id not in lost]
            counts["rewrapped"] += len(updates) - len(lost)
            counts["conflict"] += len(lost)
            # A row that lost was changed meanwhile: on the target or gone, it is done;
            # still under an older version (an application rewrote it), it is redone.
            records = [
                r
                for i in sorted(lost)
                if (r := again.get(i)) is not None
                and r.mek_version != target
                and not r.mek_version.startswith(KEK_PREFIX)
            ]
            counts["skipped"] += len(lost) - len(records)
            if not records:
                break
            if round_ == MAX_ROUNDS:
                counts["failed"] += len(records)
                last_error = KeyProviderError("the row kept changing during the lazy rewrap")
        self._count(counts, done, target, last_error)

    def _checked_rewrap(self, record: DekRecord, target: str) -> WrapUpdate:
        """The engine's guarded rewrap of one row: the new wrap checked before it is used."""
        provider = self.provider
        context = dek_context(self.product, record.dek_id)
        self.bucket.take(CALLS_PER_DEK)
        if provider.remote:
            new = provider.rewrap(
                record.wrapped, from_version=record.mek_version, context=context, to_version=target
            )
            dek = provider.unwrap(record.wrapped, version=record.mek_version, context=context)
        else:
            dek = provider.unwrap(record.wrapped, version=record.mek_version, context=context)
            new = provider.wrap(dek, context=context, version=target)
        if new.mek_version != target or not hmac.compare_digest(
            provider.unwrap(new.ciphertext, version=target, context=context), dek
        ):
            raise KeyProviderError("the new wrap does not unwrap to the same DEK")
        return WrapUpdate(
            record=record, mek_version=target, wrapped=new.ciphertext, algorithm=new.algorithm
        )

    def _count(
        self,
        counts: dict[str, int],
        done: list[str],
        target: str | None,
        error: FieldEncryptError | None,
    ) -> None:
        with self._lock:
            self._rewrapped += counts["rewrapped"]
            self._skipped += counts["skipped"]
            self._conflicts += counts["conflict"]
            self._failed += counts["failed"]
        for outcome, n in counts.items():
            if n:
                metrics.lazy_rewrapped(self.product, outcome, n)
        if error is not None:
            log.warning(
                "lazy rewrap of %s: %d DEKs not rewrapped (%s); a later read offers them again",
                self.product,
                counts["failed"],
                type(error).__name__,
            )
        if self.audit is None or not (counts["rewrapped"] or counts["failed"]):
            return
        try:
            self.audit.emit(
                DEK_REWRAPPED_LAZILY,
                subject=f"dek-store/{self.product}",
                data={
                    "toVersion": target,
                    "rewrapped": counts["rewrapped"],
                    "skipped": counts["skipped"],
                    "conflicts": counts["conflict"],
                    "failed": counts["failed"],
                    "reason": type(error).__name__ if error is not None else None,
                    "dekIds": done[:EVENT_IDS],
                },
            )
        except FieldEncryptError as exc:  # the wraps are committed; the trail is behind
            log.warning("lazy rewrap of %s: audit event not written (%s)", self.product, exc)

    # -- the thread --------------------------------------------------------------------

    def start(self) -> LazyRewrapper:
        """Rewrap on a daemon thread until :meth:`close`; idempotent."""
        self._poller.start()
        return self

    def _step(self) -> None:
        self.run_batch(timeout=0.2)

    def _step_failed(self, exc: Exception) -> None:  # a dead rewrapper would silently stop
        log.exception("lazy rewrap of %s failed", self.product)

    def _nap(self, seconds: float) -> None:
        """The token bucket's sleep: cut short by :meth:`close`."""
        self._stop.wait(seconds)

    def drain(self, timeout: float = 30.0) -> bool:
        """Wait until every queued row is handled (for tests and shutdown); whether it was."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._queue.unfinished_tasks == 0:
                return True
            time.sleep(0.01)  # waiting for the rewrapper thread, not for time to pass
        return False

    def close(self) -> None:
        """Stop (a batch in flight stops before its next DEK; queued rows are dropped)."""
        self._poller.close(timeout=10.0)

    def stats(self) -> LazyRewrapStats:
        with self._lock:
            return LazyRewrapStats(
                offered=self._offered,
                dropped=self._dropped,
                rewrapped=self._rewrapped,
                skipped=self._skipped,
                conflicts=self._conflicts,
                failed=self._failed,
                pending=len(self._pending),
            )


def start_lazy_rewrap(runtime: ProductRuntime) -> LazyRewrapper | None:
    """With ``FIELD_ENCRYPT_LAZY_REWRAP`` on, a started :class:`LazyRewrapper` for ``runtime``,
    fed by its encryptor's reads and closed with the runtime; else ``None``."""
    settings = runtime.settings
    if not settings.lazy_rewrap:
        return None
    rewrapper = LazyRewrapper(
        product=runtime.encryptor.product,
        provider=runtime.provider,
        store=runtime.dek_store,
        audit=runtime.audit,
        max_rps=settings.lazy_rewrap_max_rps,
    )
    runtime.encryptor.rewrapper = rewrapper
    runtime.resources.append(rewrapper.start())
    return rewrapper
