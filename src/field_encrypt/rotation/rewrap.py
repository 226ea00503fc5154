"""``rewrap-deks``: the same DEKs, wrapped under a new MEK version. Documents are not touched.

One straight path per batch: the store yields DEKs not yet on the target version, the
provider rewraps each one (and new wraps are checked to unwrap to the same DEK), the
store swaps the new wraps in with compare-and-swap, the cache forgets those DEKs, and
the ledger records the cursor. Rows a concurrent writer changed meanwhile are read again
and, if still off target, rewrapped again (a few rounds at most); nothing a concurrent
writer wrote is ever overwritten.

How each DEK is rewrapped and checked before its new wrap is committed:

* Remote providers (``provider.remote``: Key Vault, KMS, PKCS#11 over the network) get
  ``provider.rewrap``, server-side where the service can (KMS ``ReEncrypt``: the DEK
  never reaches this process for the rewrap itself): **one remote call per DEK**. A
  sample of the batch is then checked: the first DEK of every batch, plus each other DEK
  with probability ``MigrationOptions.verify_sample`` (``--verify-sample``, default
  0.01; 1.0 checks every DEK). A check unwraps the new wrap and the old one and compares
  them in constant time (two more calls). A sampled mismatch fails the whole batch:
  nothing of it is committed, and the run stops with :class:`RewrapCheckError`.
* In-process providers (``local``, ``env``: their ``rewrap`` *is* unwrap then wrap, in
  this process) are driven as unwrap, wrap, then unwrap of the new wrap compared with
  the DEK in hand: every DEK is checked, a mismatch fails that DEK alone. Those that
  offer ``rewrap_many`` (``BatchRewrapper``) do this for a whole batch in one call, with
  each MEK version's cipher looked up once.

The same job moves DEKs between layouts and KEKs (``rotation/layout.py``): only the
target and the choice of source rows differ. With the KEK tier, ``rewrap-deks`` first
rewraps the KEKs (:meth:`KekTierProvider.rewrap_keks`, a handful of remote calls), then
the DEKs still wrapped directly under an old MEK version.
"""

from __future__ import annotations

import hmac
import math
import random
from collections.abc import Callable
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from contextlib import suppress
from contextvars import copy_context
from typing import Any, Final, NamedTuple, TypeVar

from field_encrypt import tracing
from field_encrypt.backends.base import (
    KEK_PREFIX,
    DekRecord,
    NewWrap,
    ScanFilter,
    WrapPage,
    WrapRow,
    WrapUpdate,
)
from field_encrypt.errors import (
    TRANSIENT_ERRORS,
    ConfigurationError,
    DecryptionError,
    FieldEncryptError,
    KeyProviderError,
    RewrapCheckError,
    RotationError,
    UnsupportedFormatError,
)
from field_encrypt.products import ProductRuntime
from field_encrypt.providers.base import (
    BatchRewrapper,
    KeyProvider,
    WrappedDek,
    dek_context,
    dek_context_prefix,
)
from field_encrypt.providers.kek_tier import KEK_CALLS, KekTierProvider
from field_encrypt.rotation.ledger import Counters, Failure, Mode, RunPlan
from field_encrypt.rotation.run import DryRun, MigrationOptions, ShardWork
from field_encrypt.usage import dek_counts

_T = TypeVar("_T")

MAX_CONFLICT_ROUNDS: Final = 3
CALLS_PER_CHECKED_DEK: Final = 3
"""Remote: rewrap, then unwrap of the new and of the old wrap. In-process: unwrap, wrap, unwrap."""

_ITEM_ERRORS = (DecryptionError, UnsupportedFormatError, KeyProviderError)
"""Errors that fail one DEK and let the run go on (transient ones are retried first)."""


class _Rewrapped(NamedTuple):
    """A batch rewrapped: its new wraps by algorithm (one group, unless a provider mixes
    algorithms), and the DEKs that could not be rewrapped."""

    wraps: dict[str, list[NewWrap]]
    failures: list[Failure]


class _Writing(NamedTuple):
    """A batch whose new wraps are being written: what its checkpoint will record."""

    written: Future[tuple[Counters, list[Failure]]]
    cursor: str | None
    matched: int
    failures: list[Failure]


class _Inline(Executor):
    """An executor that runs each task at once, on the calling thread (an error is kept in
    the future, as a worker thread's would be; an interrupt goes straight up)."""

    def submit(self, fn: Callable[..., _T], /, *args: Any, **kwargs: Any) -> Future[_T]:
        future: Future[_T] = Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except Exception as exc:  # noqa: BLE001 - kept in the future, as a worker thread does
            future.set_exception(exc)
        return future


def is_kek_version(version: str) -> bool:
    """Whether a DEK row's version names a KEK of the tier rather than a MEK version."""
    return version.startswith(KEK_PREFIX)


class RewrapJob:
    """Rewrap a product's DEKs onto ``target`` (``--new-mek-version``, else the current one).

    ``sources`` picks the rows to move by their recorded version (default: any version
    but the target, or only ``--old-mek-version``). ``tier``: the product's KEK tier,
    whose KEKs ``rewrap-deks`` moves first.
    """

    def __init__(
        self,
        runtime: ProductRuntime,
        options: MigrationOptions,
        *,
        provider: KeyProvider,
        mode: Mode = "rewrap-deks",
        target: str | None = None,
        sources: Callable[[str], bool] | None = None,
        tier: KekTierProvider | None = None,
        verify_sample: float | None = None,
        rng: Callable[[], float] = random.random,
    ) -> None:
        self.mode: Mode = mode
        self.runtime = runtime
        self.store = runtime.dek_store
        self.cache = runtime.encryptor.cache
        self.product = runtime.encryptor.product
        self.provider = provider
        self.tier = tier
        self.only = options.old_version
        self.target = target or options.new_version or provider.current_version()
        if self.only == self.target:
            raise ConfigurationError("--old-mek-version is already the target version")
        self.sources = sources if sources is not None else self._default_sources
        self._scan_selects = sources is None and tier is None
        """Whether the scan's version filters keep exactly the rows ``sources`` would."""
        self.concurrency = options.concurrency if provider.remote else 1
        self.sample = options.verify_sample if verify_sample is None else verify_sample
        self.batch_size = options.batch_size
        self._rng = rng
        self._rewrap_one = self._rewrap_remote if provider.remote else self._rewrap_in_process
        self._batch = (
            provider.rewrap_many
            if not provider.remote and isinstance(provider, BatchRewrapper)
            else None
        )
        self.raw_counts = self.store.count_by_version()
        self.keks = tier.keks.all() if tier is not None else []
        self.counts = dek_counts(runtime, raw=self.raw_counts)  # what the dry run shows
        self.direct_total = sum(n for v, n in self.raw_counts.items() if self.sources(v))
        self.keks_to_move = [k for k in self.keks if self._kek_selected(k.mek_version)]
        self.deks_under_moved_keks = sum(
            self.raw_counts.get(KEK_PREFIX + k.kek_id, 0) for k in self.keks_to_move
        )
        self.estimated_total = self.direct_total + self.deks_under_moved_keks
        self.skipped_at_start = sum(self.raw_counts.values()) - self.estimated_total
        self.plan = RunPlan(
            mode=self.mode,
            from_version=self.only,
            to_version=self.target,
            shards=options.worker[1],
        )

    def _default_sources(self, version: str) -> bool:
        if version == self.target or (self.tier is not None and is_kek_version(version)):
            return False  # a DEK under a KEK moves with its KEK
        return self.only is None or version == self.only

    def _mek_of(self, version: str) -> str:
        """The MEK version behind a DEK row's version (a KEK's, with the tier)."""
        if self.tier is None or not is_kek_version(version):
            return version
        by_id = {k.kek_id: k.mek_version for k in self.keks}
        return by_id.get(version[len(KEK_PREFIX) :], version)

    def _kek_selected(self, mek_version: str) -> bool:
        """Whether ``rewrap-deks`` moves a KEK on ``mek_version`` (only with the tier)."""
        if self.mode != "rewrap-deks" or mek_version == self.target:
            return False
        return self.only is None or mek_version == self.only

    def dry_run(self, max_rps: float | None) -> DryRun:
        n = self.direct_total
        calls = 0
        if n:
            batches = math.ceil(n / self.batch_size)
            if self.provider.remote:  # the first DEK of each batch is always checked
                calls = n + 2 * batches + math.ceil(2 * self.sample * max(0, n - batches))
            else:
                calls = n * CALLS_PER_CHECKED_DEK
        calls += KEK_CALLS * len(self.keks_to_move)
        return DryRun(
            by_version=dict(self.counts if self.mode == "rewrap-deks" else self.raw_counts),
            matched=self.estimated_total,
            skipped=self.skipped_at_start,
            provider_calls=calls,
            estimated_seconds=calls / max_rps if max_rps else None,
        )

    def check_ready(self) -> None:
        states = {v.version: v.enabled for v in self.provider.versions()}
        target_mek = self._mek_of(self.target)
        if not states.get(target_mek, False):
            raise ConfigurationError(
                f"target MEK version {target_mek!r} is "
                f"{'disabled' if target_mek in states else 'unknown'}"
            )
        needed: dict[str, int] = {}
        for version, n in self.raw_counts.items():
            if self.sources(version):
                mek = self._mek_of(version)
                needed[mek] = needed.get(mek, 0) + n
        for k in self.keks_to_move:
            needed[k.mek_version] = needed.get(k.mek_version, 0) + 1
        disabled = [v for v, n in needed.items() if n and states.get(v) is False]
        if disabled:
            raise RotationError(
                f"MEK version(s) {', '.join(disabled)} still wrap "
                f"{sum(needed[v] for v in disabled)} DEKs or KEKs but are disabled: "
                "enable them (field-encrypt keys enable VERSION) until the rewrap is done"
            )

    def remaining(self) -> int | None:
        raw = self.store.count_by_version()
        if self.tier is None or self.mode != "rewrap-deks":
            return sum(n for v, n in raw.items() if self.sources(v))
        counts = dek_counts(self.runtime, raw=raw)
        if self.only is not None:
            return counts.get(self.only, 0)
        return sum(n for v, n in counts.items() if v != self.target)

    # -- the straight path ---------------------------------------------------------------

    def run_shard(self, work: ShardWork) -> None:
        self.before_shard(work)
        if self.keks_to_move and work.shard[0] == 0:
            self._rewrap_keks(work)
        if not (self.direct_total == 0 and work.cursor is None and self.tier is not None):
            self._rewrap_deks(work)  # with the tier and no DEK outside it, no row is walked
        self.after_shard(work)

    def before_shard(self, work: ShardWork) -> None:
        """What a mode does before its shard's DEKs (``to-direct`` retires the KEKs)."""

    def after_shard(self, work: ShardWork) -> None:
        """What a mode does once its shard is done (the layout modes delete unused KEKs)."""

    def _rewrap_deks(self, work: ShardWork) -> None:
        """Rewrap batch k+1 while batch k's new wraps are written and batch k+2 is read.

        A writer thread takes each batch's compare-and-swap write (and the cache
        invalidation, and the redo of rows a concurrent writer changed), one batch at a
        time; a reader thread scans the next page as soon as the previous one is in.
        This thread checkpoints batch k once its write is back, after rewrapping batch
        k+1: the ledger's cursor still moves only past committed batches, in order, and
        memory holds three batches at most. (The network drivers release the GIL while
        they wait, so reads and writes overlap the crypto.) Each task runs in a copy of
        this thread's context, so its spans join the run's trace.

        An embedded store (``store.remote`` false: SQLite) does its reads and writes on
        this thread instead, in the same order: its driver gives up the GIL around each
        row's step and must take it back from the rewrapping thread (up to the 5 ms switch
        interval each time), so on threads its work mostly waited, and under load the run
        took 1.3-3x as long as inline (``docs/performance.md``).
        """
        pool = ThreadPoolExecutor(self.concurrency) if self.concurrency > 1 else None
        writer: Executor
        reader: Executor
        if self.store.remote:
            writer = ThreadPoolExecutor(1, thread_name_prefix="rewrap-write")
            reader = ThreadPoolExecutor(1, thread_name_prefix="rewrap-scan")
        else:
            writer = reader = _Inline()
        pending: _Writing | None = None

        def scan(after: str | None) -> WrapPage:
            with tracing.span("field_encrypt.store.scan", store="dek_store") as traced:
                page = work.retry.call(
                    self.store.scan_wraps,
                    cursor=after,
                    limit=work.batch_size,
                    where=ScanFilter(
                        exclude_version=self.target, only_version=self.only, shard=work.sharding
                    ),
                )
                tracing.annotate(traced, items=len(page.rows))
                return page

        sources, scan_selects = self.sources, self._scan_selects
        try:
            cursor = work.cursor
            next_page = reader.submit(copy_context().run, scan, cursor)
            while True:
                page = next_page.result()
                if page.cursor is not None:  # read ahead: the rows after this page
                    next_page = reader.submit(copy_context().run, scan, page.cursor)
                rows = page.rows
                if not scan_selects:  # r[3]: the row's version
                    rows = [r for r in rows if sources(r[3])]
                rewrapped = self._rewrap(work, rows, pool)
                if pending is not None:
                    batch, pending = pending, None  # checkpointed once, whatever happens
                    self._checkpoint_written(work, batch)
                pending = _Writing(
                    writer.submit(copy_context().run, self._swap_in, work, rewrapped.wraps, pool),
                    page.cursor or cursor,
                    len(rows),
                    rewrapped.failures,
                )
                if page.cursor is None:
                    break
                cursor = page.cursor
            batch, pending = pending, None
            self._checkpoint_written(work, batch)
        except BaseException:
            # Batch k+1 failed (a check, a provider, the process told to stop) while batch
            # k was being written: record batch k if its write went through, so the cursor
            # is where it would have been without the overlap, then stop as before.
            if pending is not None and pending.written.exception() is None:
                with suppress(FieldEncryptError):  # the original error says what stopped it
                    self._checkpoint_written(work, pending)
            raise
        finally:
            reader.shutdown(wait=True, cancel_futures=True)
            writer.shutdown(wait=True)  # never leave a write behind, even on an error
            if pool is not None:
                pool.shutdown()

    @staticmethod
    def _checkpoint_written(work: ShardWork, batch: _Writing) -> None:
        """Wait for a batch's write, then record its cursor, counters and failures."""
        written, cursor, matched, failures = batch
        delta, more_failures = written.result()
        failures = failures + more_failures
        work.checkpoint(
            cursor=cursor,
            delta=delta + Counters(matched=matched, failed=len(failures)),
            failures=failures,
        )

    def _rewrap_keks(self, work: ShardWork) -> None:
        """With the tier, MEK rotation moves the KEKs: their DEKs follow at no cost."""
        assert self.tier is not None
        result = work.retry.call(self.tier.rewrap_keks, self.target, only_version=self.only)
        moved = sum(self.raw_counts.get(KEK_PREFIX + k, 0) for k in result.moved_kek_ids)
        work.note(
            "keks_rewrapped",
            keks=result.rewrapped,
            deks=moved,
            remote_calls=result.remote_calls,
        )
        work.checkpoint(cursor=work.cursor, delta=Counters(matched=moved, changed=moved))

    def _rewrap(
        self, work: ShardWork, rows: list[WrapRow], pool: ThreadPoolExecutor | None
    ) -> _Rewrapped:
        """Each row rewrapped (and checked, or sampled), or the reason it could not be."""
        if self._batch is not None:
            return self._rewrap_batch(work, rows)
        shard = work.shard[0]
        rewrap_one = self._rewrap_one

        def attempt(row: WrapRow) -> WrappedDek | Failure:
            try:
                try:
                    return rewrap_one(row)
                except TRANSIENT_ERRORS as exc:  # back off (and honour retry_after) first
                    return work.retry.call_after(exc, rewrap_one, row)
            except _ITEM_ERRORS as exc:
                return Failure(item=row[2], reason=_reason(exc), shard=shard)

        results = list(pool.map(attempt, rows)) if pool else [attempt(r) for r in rows]
        done: list[tuple[WrapRow, WrappedDek]] = []
        failures: list[Failure] = []
        for row, result in zip(rows, results, strict=True):
            if isinstance(result, Failure):
                failures.append(result)
            else:
                done.append((row, result))
        if self.provider.remote and done:
            self._check_sample(work, done, pool)
        wraps: dict[str, list[NewWrap]] = {}
        for (locator, revision, dek_id, _, _), new in done:
            wraps.setdefault(new.algorithm, []).append((locator, revision, dek_id, new.ciphertext))
        return _Rewrapped(wraps, failures)

    def _check_sample(
        self,
        work: ShardWork,
        done: list[tuple[WrapRow, WrappedDek]],
        pool: ThreadPoolExecutor | None,
    ) -> None:
        """Check the first new wrap of the batch and a ``verify_sample`` share of the rest.

        Raises :class:`RewrapCheckError` (nothing of the batch is committed) on a mismatch.
        """
        rng = self._rng
        sample = self.sample
        chosen = [d for i, d in enumerate(done) if i == 0 or sample >= 1.0 or rng() < sample]

        def check(pair: tuple[WrapRow, WrappedDek]) -> str | None:
            try:
                return None if work.retry.call(self._holds_same_dek, *pair) else "differs"
            except (DecryptionError, UnsupportedFormatError, KeyProviderError) as exc:
                return _reason(exc)

        verdicts = list(pool.map(check, chosen)) if pool else [check(d) for d in chosen]
        bad = [(d, why) for d, why in zip(chosen, verdicts, strict=True) if why is not None]
        if bad:
            ((row, _), why) = bad[0]
            raise RewrapCheckError(
                f"the new wrap of DEK {row[2]} does not unwrap to the same DEK "
                f"({why}); {len(bad)} of {len(chosen)} checked in this batch failed. Nothing "
                f"of the batch ({len(done)} DEKs) was committed; the run stopped"
            )
        if chosen:
            work.note("checked", count=len(chosen), of=len(done))

    def _rewrap_batch(self, work: ShardWork, rows: list[WrapRow]) -> _Rewrapped:
        """An in-process provider's ``rewrap_many``: keys looked up once per batch.

        The hot path of a rewrap on the embedded default: rows stay the store's tuples and
        new wraps go out as tuples, no object per DEK but the provider's ``WrappedDek``.
        """
        assert self._batch is not None
        target, shard = self.target, work.shard[0]
        context = dek_context_prefix(self.product)  # + the dekId: dek_context(product, dek_id)
        items = [
            (wrapped, version, context + dek_id.encode()) for _, _, dek_id, version, wrapped in rows
        ]
        results = work.retry.call(self._batch, items, to_version=target)
        wraps: dict[str, list[NewWrap]] = {}
        failures: list[Failure] = []
        algorithm: str | None = None
        group: list[NewWrap] = []
        for (locator, revision, dek_id, _, _), result in zip(rows, results, strict=True):
            if result.__class__ is WrappedDek and result.mek_version == target:
                if result.algorithm != algorithm:
                    algorithm = result.algorithm
                    group = wraps.setdefault(algorithm, [])
                group.append((locator, revision, dek_id, result.ciphertext))
            elif isinstance(result, Exception):
                failures.append(Failure(item=dek_id, reason=_reason(result), shard=shard))
            else:
                failures.append(
                    Failure(item=dek_id, reason="wrapped under the wrong version", shard=shard)
                )
        return _Rewrapped(wraps, failures)

    def _holds_same_dek(self, row: WrapRow, new: WrappedDek) -> bool:
        provider = self.provider
        _, _, dek_id, version, wrapped = row
        context = dek_context(self.product, dek_id)
        return hmac.compare_digest(
            provider.unwrap(new.ciphertext, version=new.mek_version, context=context),
            provider.unwrap(wrapped, version=version, context=context),
        )

    def _rewrap_remote(self, row: WrapRow) -> WrappedDek:
        """``provider.rewrap``: one remote call (server-side where the service can)."""
        _, _, dek_id, version, wrapped = row
        new = self.provider.rewrap(
            wrapped,
            from_version=version,
            context=dek_context(self.product, dek_id),
            to_version=self.target,
        )
        if new.mek_version != self.target:
            raise KeyProviderError(
                f"the provider wrapped under {new.mek_version!r}, not {self.target!r}"
            )
        return new

    def _rewrap_in_process(self, row: WrapRow) -> WrappedDek:
        """What ``rewrap`` is for an in-process provider (unwrap, wrap), then the check."""
        provider = self.provider
        _, _, dek_id, version, wrapped = row
        context = dek_context(self.product, dek_id)
        dek = provider.unwrap(wrapped, version=version, context=context)
        new = provider.wrap(dek, context=context, version=self.target)
        if new.mek_version != self.target or not hmac.compare_digest(
            provider.unwrap(new.ciphertext, version=self.target, context=context), dek
        ):
            raise KeyProviderError("the new wrap does not unwrap to the same DEK")
        return new

    def _swap_in(
        self, work: ShardWork, wraps: dict[str, list[NewWrap]], pool: ThreadPoolExecutor | None
    ) -> tuple[Counters, list[Failure]]:
        """Write the new wraps with compare-and-swap; rows that lost are read and redone.

        The scanned rows go back through ``swap_wraps``; the rows read again after a lost
        compare-and-swap are records (``get_many``), whose new wraps go back through
        ``replace_wraps``: each such row's locator is its record.
        """
        changed = skipped = conflicts = 0
        failures: list[Failure] = []
        redo = False
        for round_ in range(MAX_CONFLICT_ROUNDS + 1):
            written = [w for group in wraps.values() for w in group]
            lost: set[str] = set()
            for algorithm, group in wraps.items():
                with tracing.span(
                    "field_encrypt.store.replace_wraps", store="dek_store", items=len(group)
                ):
                    lost.update(work.retry.call(self._write, group, algorithm, redo))
            if self.cache.stats().size:  # an empty cache (the CLI's own) has nothing to forget
                for _, _, dek_id, _ in written:
                    if dek_id not in lost:
                        self.cache.invalidate(bytes.fromhex(dek_id))
            changed += len(written) - len(lost)
            if not lost:
                break
            conflicts += len(lost)
            work.note("conflict", count=len(lost))
            ids = sorted(lost)
            with tracing.span("field_encrypt.store.get_many", store="dek_store", items=len(ids)):
                current = work.retry.call(self.store.get_many, ids)
            again = [r for i in ids if (r := current.get(i)) is not None and self._selects(r)]
            skipped += len(lost) - len(again)  # deleted, or moved to the target by someone else
            if round_ == MAX_CONFLICT_ROUNDS:
                failures += [
                    Failure(
                        item=r.dek_id,
                        reason="ConcurrentUpdateError: the row kept changing during the rewrap",
                        shard=work.shard[0],
                    )
                    for r in again
                ]
                break
            rows: list[WrapRow] = [
                (r, r.revision, r.dek_id, r.mek_version, r.wrapped) for r in again
            ]
            wraps, more = self._rewrap(work, rows, pool)
            failures += more
            redo = True
        return Counters(changed=changed, skipped=skipped, conflicts=conflicts), failures

    def _write(self, wraps: list[NewWrap], algorithm: str, redo: bool) -> list[str]:
        """One group's compare-and-swap write; the dekIds that lost."""
        if not redo:
            return self.store.swap_wraps(wraps, mek_version=self.target, algorithm=algorithm)
        updates = []
        for record, _, _, wrapped in wraps:
            assert isinstance(record, DekRecord)  # a redo row's locator is its record
            updates.append(
                WrapUpdate(
                    record=record, mek_version=self.target, wrapped=wrapped, algorithm=algorithm
                )
            )
        return self.store.replace_wraps(updates)

    def _selects(self, record: DekRecord) -> bool:
        return record.mek_version != self.target and self.sources(record.mek_version)


def _reason(exc: Exception) -> str:
    return f"{type(exc).__name__}: {exc}"
