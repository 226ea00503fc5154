"""Running a migration: open (or resume) the run, hold a shard's lease, report.

Each mode is a :class:`Job` whose :meth:`Job.run_shard` is one straight loop over its
shard (see ``rewrap.py``, ``reencrypt.py``, ``backfill.py``); this module is what they
share: the run and its lease, checkpoints, retries, rate limits, the final report, and
the run's audit events (``run_events.py``, into ``ProductRuntime.audit``).
"""

from __future__ import annotations

import contextlib
import random
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from field_encrypt.audit import RUN_COMPLETED, RUN_STARTED, Recording, recorded
from field_encrypt.errors import (
    ConfigurationError,
    LeaseHeldError,
    StoreError,
    StoreUnavailableError,
)
from field_encrypt.products import ProductRuntime
from field_encrypt.rotation.lease import DEFAULT_TTL, Lease, reclaim_dead_leases, worker_id
from field_encrypt.rotation.ledger import (
    Counters,
    Failure,
    Mode,
    NewRun,
    Progress,
    RunLedger,
    RunPlan,
    RunRecord,
    ShardState,
)
from field_encrypt.rotation.retry import Retrier, RetryBudgetExhausted, RetryPolicy
from field_encrypt.rotation.run_events import RunTrail


@dataclass(frozen=True, slots=True, kw_only=True)
class MigrationOptions:
    """What ``field-encrypt migrate`` was asked to do."""

    mode: Mode
    old_version: str | None = None
    new_version: str | None = None
    batch_size: int = 1000
    concurrency: int = 8
    max_rps: float | None = None
    worker: tuple[int, int] = (0, 1)
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    lease_ttl: float = DEFAULT_TTL
    dry_run: bool = False
    verify_sample: float = 0.01
    """Remote providers: the share of rewrapped DEKs checked besides each batch's first
    (``--verify-sample``; 1.0 checks every DEK, at two more calls each)."""
    partition: str = ""
    """``rotate-kek``: the partition whose KEK is replaced (``--partition``)."""

    def __post_init__(self) -> None:
        index, count = self.worker
        if count < 1 or not 0 <= index < count:
            raise ConfigurationError(f"--worker must be I/N with 0 <= I < N, not {index}/{count}")
        if self.batch_size < 1 or self.concurrency < 1:
            raise ConfigurationError("--batch-size and --concurrency must be at least 1")
        if self.max_rps is not None and self.max_rps <= 0:
            raise ConfigurationError("--max-rps must be positive")
        if not 0.0 <= self.verify_sample <= 1.0:
            raise ConfigurationError("--verify-sample must be between 0 and 1")
        if self.old_version is not None and self.old_version == self.new_version:
            raise ConfigurationError("--old-mek-version and --new-mek-version are the same")


@dataclass(frozen=True, slots=True, kw_only=True)
class DryRun:
    """What a run would do, computed without writing anything."""

    by_version: dict[str, int]
    matched: int
    skipped: int
    provider_calls: int
    estimated_seconds: float | None
    """At ``--max-rps``; ``None`` when unthrottled."""


@dataclass(frozen=True, slots=True, kw_only=True)
class RunReport:
    """The outcome of one ``migrate`` invocation (one worker)."""

    product: str
    mode: Mode
    from_version: str | None
    to_version: str | None
    status: str
    """``completed``, ``completed_with_failures``, ``stopped`` (retries exhausted; re-run),
    ``in_progress`` (this worker is done, others still run) or ``dry_run``."""
    run_id: str | None = None
    worker: tuple[int, int] = (0, 1)
    resumed: bool = False
    counters: Counters = field(default_factory=Counters)
    processed: int = 0
    """Items this process handled (for its rate)."""
    duration_seconds: float = 0.0
    failures: tuple[Failure, ...] = ()
    failure_count: int = 0
    remaining: int | None = None
    """Items still not in the desired state when the run ended (rewrap: DEKs off target)."""
    stop_reason: str | None = None
    dry_run: DryRun | None = None

    @property
    def rate(self) -> float:
        return self.processed / self.duration_seconds if self.duration_seconds > 0 else 0.0

    def as_dict(self) -> dict[str, Any]:
        counters = self.counters.as_dict()
        if self.dry_run is not None:  # what the run would match and skip, as a real run counts
            counters.update(matched=self.dry_run.matched, skipped=self.dry_run.skipped)
        if self.mode not in ("re-encrypt", "encrypt", "decrypt", "reindex"):  # the rewrap modes
            counters["rewrapped"] = counters["changed"]
        return {
            "product": self.product,
            "mode": self.mode,
            "run_id": self.run_id,
            "worker": f"{self.worker[0] + 1}/{self.worker[1]}",  # 1-based, as --worker and the log
            "from_version": self.from_version,
            "to_version": self.to_version,
            "status": self.status,
            "resumed": self.resumed,
            **counters,
            "processed": self.processed,
            "duration_seconds": round(self.duration_seconds, 3),
            "rate_per_second": round(self.rate, 1),
            "failure_count": self.failure_count,
            "failures": [{"item": f.item, "reason": f.reason} for f in self.failures],
            "remaining": self.remaining,
            "stop_reason": self.stop_reason,
            "dry_run": None
            if self.dry_run is None
            else {
                "by_version": self.dry_run.by_version,
                "matched": self.dry_run.matched,
                "skipped": self.dry_run.skipped,
                "provider_calls": self.dry_run.provider_calls,
                "estimated_seconds": self.dry_run.estimated_seconds,
            },
        }


class RunObserver(Protocol):
    """What the CLI (or a test) hears while a run goes on. Never given key material."""

    def run_started(self, run: RunRecord, *, shard: int, resumed: bool) -> None: ...

    def batch_done(self, delta: Counters) -> None: ...

    def event(self, name: str, fields: Mapping[str, object]) -> None: ...


class NullObserver:
    """Hears nothing."""

    def run_started(self, run: RunRecord, *, shard: int, resumed: bool) -> None:
        pass

    def batch_done(self, delta: Counters) -> None:
        pass

    def event(self, name: str, fields: Mapping[str, object]) -> None:
        pass


@dataclass(slots=True, kw_only=True)
class ShardWork:
    """One shard, as a job's loop sees it: where to start, how to retry, how to save."""

    run_id: str
    shard: tuple[int, int]
    cursor: str | None
    pending: tuple[str, ...]
    batch_size: int
    retry: Retrier
    lease: Lease
    ledger: RunLedger
    clock: Callable[[], float]
    observer: RunObserver
    trail: RunTrail
    processed: int = 0

    @property
    def sharding(self) -> tuple[int, int] | None:
        """The ``shard=`` argument for store scans (``None`` when there is one shard)."""
        return self.shard if self.shard[1] > 1 else None

    def checkpoint(
        self,
        *,
        cursor: str | None,
        delta: Counters,
        failures: Sequence[Failure] = (),
        pending: Sequence[str] = (),
    ) -> None:
        """Save the cursor, counters, failures and pending items; renew the lease."""
        now = self.clock()
        self.retry.call(  # a locked or dropped database is retried like any store call
            self.ledger.checkpoint,
            self.run_id,
            self.shard[0],
            owner=self.lease.owner,
            now=now,
            ttl=self.lease.ttl,
            progress=Progress(cursor=cursor, delta=delta, failures=failures, pending=pending),
        )
        self.lease.renewed(now)
        self.cursor = cursor
        self.pending = tuple(pending)
        self.processed += delta.changed + delta.failed + delta.skipped
        self.observer.batch_done(delta)
        self.trail.checkpoint(delta, failures)

    def note(self, name: str, **fields: object) -> None:
        self.observer.event(name, fields)

    def documents_done(
        self, collection: str, items: Sequence[Mapping[str, Any]], *, settled: bool = False
    ) -> None:
        """Record a page of migrated documents in the audit trail (after its checkpoint)."""
        self.trail.documents(collection, items, settled=settled)

    def documents_recorded(
        self, collection: str, announced: Sequence[Mapping[str, Any]]
    ) -> AbstractContextManager[Recording]:
        """The unit of a page's writes, its checkpoint and its event (see
        :meth:`RunTrail.documents_recorded`)."""
        return self.trail.documents_recorded(collection, announced, shard=self.shard[0])


class Job(Protocol):
    """One migration mode, prepared for one product."""

    @property
    def mode(self) -> Mode: ...

    @property
    def plan(self) -> RunPlan: ...

    @property
    def estimated_total(self) -> int: ...

    @property
    def skipped_at_start(self) -> int: ...

    def dry_run(self, max_rps: float | None) -> DryRun: ...

    def check_ready(self) -> None:
        """Fail before any write if the run cannot succeed (e.g. target version disabled)."""
        ...

    def run_shard(self, work: ShardWork) -> None: ...

    def remaining(self) -> int | None: ...


def run_job(
    job: Job,
    runtime: ProductRuntime,
    ledger: RunLedger,
    options: MigrationOptions,
    *,
    clock: Callable[[], float] = time.time,
    monotonic: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
    rng: Callable[[], float] = random.random,
    observer: RunObserver | None = None,
    owner: str | None = None,
) -> RunReport:
    """Run (or resume) ``job`` as worker ``options.worker``; the report of what it did."""
    observer = observer or NullObserver()
    product = runtime.encryptor.product
    plan = job.plan
    base = RunReport(
        product=product,
        mode=job.mode,
        from_version=plan.from_version,
        to_version=plan.to_version,
        worker=options.worker,
        status="dry_run",
    )
    if options.dry_run:
        return replace(base, dry_run=job.dry_run(options.max_rps))
    if job.estimated_total:  # reads the provider's versions: retried like any call
        Retrier(options.retry, clock=monotonic, sleep=sleep, rng=rng).call(job.check_ready)
    owner = owner or worker_id()
    started = monotonic()
    # Ledger writes are retried on transient store errors (a locked SQLite file, a dropped
    # PostgreSQL connection) like every other store call of the run.
    books = Retrier(options.retry, clock=monotonic, sleep=sleep, rng=rng)
    _reclaim(books, ledger, product, runtime, clock, observer)
    run, resumed = books.call(
        ledger.open_run,
        new=NewRun(
            product=product,
            plan=plan,
            estimated_total=job.estimated_total,
            skipped_at_start=job.skipped_at_start,
        ),
        now=clock(),
    )
    trail = RunTrail(runtime.audit, run, worker=options.worker, clock=clock)

    def on_retry(exc: Exception, attempt: int, delay: float) -> None:
        observer.event(
            "retry", {"error": type(exc).__name__, "attempt": attempt, "delay": round(delay, 3)}
        )

    processed = 0
    stop_reason: str | None = None
    status: str | None = None
    worked = False
    index: int | None = options.worker[0]
    tried: set[int] = set()
    completed_emitted = False
    counted_at_end: tuple[int | None] | None = None  # what is left, when this worker ended it
    while index is not None:
        tried.add(index)
        current = books.call(ledger.get_run, run.run_id)
        if run.plan.shards > 1 and current.shard(index).leased(clock()):
            index = _next_free(current, tried, clock())  # another worker of this run has it
            continue
        state = books.call(
            _acquire, runtime, ledger, trail, run.run_id, index, owner, clock(), options, resumed
        )
        worked = True
        lease = Lease(ledger, run.run_id, index, owner, options.lease_ttl, clock, clock())
        if state.status != "done":
            retrier = Retrier(
                options.retry,
                clock=monotonic,
                sleep=_renewing(sleep, lease),
                rng=rng,
                on_retry=on_retry,
            )
            observer.run_started(current, shard=index, resumed=resumed)
            work = _work(run, state, options, retrier, lease, ledger, clock, observer, trail)
            try:
                job.run_shard(work)
            except RetryBudgetExhausted as exc:
                processed += work.processed
                stop_reason = str(exc)
                if not _release(
                    ledger, run.run_id, index, owner, clock, monotonic, options, sleep, rng
                ):
                    stop_reason += f"; the lease stays until it expires ({options.lease_ttl:g}s)"
                status = "stopped"
                observer.event("stopped", {"reason": stop_reason, "cursor": work.cursor})
                trail.failed(exc, cursor=work.cursor)
                break
            except LeaseHeldError as exc:
                trail.failed(exc, cursor=work.cursor)
                raise
            except BaseException as exc:
                # Interrupted (Ctrl-C), a store that stayed down, or a bug: keep the cursor,
                # free the shard if the ledger answers, and let the error through.
                _release(ledger, run.run_id, index, owner, clock, monotonic, options, sleep, rng)
                trail.failed(exc, cursor=work.cursor)
                raise
            processed += work.processed
        finished, counted = books.call(
            _release_done,
            runtime,
            ledger,
            trail,
            job,
            run.run_id,
            index,
            owner,
            clock(),
            lambda: monotonic() - started,
        )
        completed_emitted = completed_emitted or finished
        counted_at_end = (counted,) if finished else None
        # A worker of this host that died while this one worked holds its shard until
        # its TTL: free it now, so that this worker takes it over instead of stopping.
        for dead, shard in _reclaim(books, ledger, product, runtime, clock, observer):
            if dead.run_id == run.run_id:
                tried.discard(shard.index)
        index = _next_free(books.call(ledger.get_run, run.run_id), tried, clock())
    if not worked:
        raise LeaseHeldError(
            f"every unfinished shard of run {run.run_id} is held by another worker"
        )
    final = books.call(ledger.get_run, run.run_id)
    if status is None:
        status = final.status if final.finished else "in_progress"
    failures, failure_count = books.call(ledger.failures, run.run_id)
    # The run's end was just counted for its run.completed event (one count of every DEK
    # or document of the product): report that figure rather than counting them again.
    (remaining,) = counted_at_end or (job.remaining(),)
    duration = monotonic() - started
    if trail.started_emitted and status == "in_progress":
        trail.progress(worker_done=True)
    elif trail.started_emitted and status != "stopped" and not completed_emitted:
        trail.completed(
            final, failure_count=failure_count, remaining=remaining, duration_seconds=duration
        )
    return replace(
        base,
        status=status,
        run_id=run.run_id,
        resumed=resumed,
        counters=final.counters,
        processed=processed,
        duration_seconds=duration,
        failures=tuple(failures),
        failure_count=failure_count,
        remaining=remaining,
        stop_reason=stop_reason,
    )


def _acquire(
    runtime: ProductRuntime,
    ledger: RunLedger,
    trail: RunTrail,
    run_id: str,
    index: int,
    owner: str,
    now: float,
    options: MigrationOptions,
    resumed: bool,
) -> ShardState:
    """Take shard ``index`` and, if it has work left and this worker has not said so yet,
    record ``run.started`` with it (:func:`~field_encrypt.audit.recorded`): the lease and
    the event are stored together or not at all."""
    if trail.started_emitted:
        return ledger.acquire_shard(run_id, index, owner=owner, now=now, ttl=options.lease_ttl)
    with recorded(
        runtime.audit,
        RUN_STARTED,
        subject=trail.subject,
        data=trail.started_data(resumed=resumed),
        check={"runId": run_id, "shard": index},
    ) as event:
        state = ledger.acquire_shard(run_id, index, owner=owner, now=now, ttl=options.lease_ttl)
        if state.status == "done":
            event.cancel()
    if state.status != "done":
        trail.started(resumed=resumed, emitted=True)
    return state


def _release_done(
    runtime: ProductRuntime,
    ledger: RunLedger,
    trail: RunTrail,
    job: Any,
    run_id: str,
    index: int,
    owner: str,
    now: float,
    duration: Callable[[], float],
) -> tuple[bool, int | None]:
    """Give shard ``index`` back as done; when that finishes the run, record
    ``run.completed`` with it (the run's end and its event are stored together or not at
    all). Whether it was recorded, and the ``remaining`` count the event holds."""
    if not trail.started_emitted:
        ledger.release_shard(run_id, index, owner=owner, now=now, done=True)
        return False, None
    with recorded(
        runtime.audit,
        RUN_COMPLETED,
        subject=trail.subject,
        data=trail.base(),
        check={"runId": run_id},
    ) as event:
        ledger.release_shard(run_id, index, owner=owner, now=now, done=True)
        final = ledger.get_run(run_id)
        if not final.finished:
            event.cancel()
            return False, None
        _, failure_count = ledger.failures(run_id)
        remaining = job.remaining()
        event.data.update(
            trail.completed_data(
                final,
                failure_count=failure_count,
                remaining=remaining,
                duration_seconds=duration(),
            )
        )
    return True, remaining


def _release(
    ledger: RunLedger,
    run_id: str,
    index: int,
    owner: str,
    clock: Callable[[], float],
    monotonic: Callable[[], float],
    options: MigrationOptions,
    sleep: Callable[[float], None],
    rng: Callable[[], float],
) -> bool:
    """Give a shard back after a stop, with a budget of its own; whether the ledger took it.

    Handing the lease back is what lets the same command run again at once, so it may wait
    up to a quarter of the lease TTL (or the retry budget, if longer). A shard the ledger
    still could not take back stays leased until its TTL runs out (the run's cursor is
    saved either way); a failure here never hides the error that stopped the run.
    """
    policy = replace(options.retry, budget=max(options.retry.budget, options.lease_ttl / 4))
    retrier = Retrier(policy, clock=monotonic, sleep=sleep, rng=rng)
    try:
        retrier.call(ledger.release_shard, run_id, index, owner=owner, now=clock(), done=False)
    except (RetryBudgetExhausted, StoreError):
        return False
    return True


def _reclaim(
    books: Retrier,
    ledger: RunLedger,
    product: str,
    runtime: ProductRuntime,
    clock: Callable[[], float],
    observer: RunObserver,
) -> list[tuple[RunRecord, ShardState]]:
    """Free the shards of ``product`` held by dead workers of this host (each release and
    its ``run.lease.reclaimed`` one unit), telling ``observer``; the shards freed."""
    reclaimed = books.call(reclaim_dead_leases, ledger, product, now=clock(), audit=runtime.audit)
    for dead, shard in reclaimed:
        fields = {
            "run_id": dead.run_id,
            "shard": f"{shard.index + 1}/{dead.plan.shards}",
            "holder": shard.owner,
        }
        observer.event("lease_reclaimed", fields)
    return reclaimed


def _next_free(run: RunRecord, tried: set[int], now: float) -> int | None:
    """An unfinished shard of ``run`` that nobody holds (a dead worker's, say), if any."""
    for shard in run.shards:
        if shard.index not in tried and shard.status != "done" and not shard.leased(now):
            return shard.index
    return None


def _renewing(sleep: Callable[[float], None], lease: Lease) -> Callable[[float], None]:
    """A sleep that keeps the lease alive while a retry waits."""

    def wait(seconds: float) -> None:
        _renew(lease)
        sleep(seconds)
        _renew(lease)

    return wait


def _renew(lease: Lease) -> None:
    """Renew while waiting, if the ledger answers: a lapse shows at the next checkpoint."""
    with contextlib.suppress(StoreUnavailableError):
        lease.renew_if_due()


def _work(
    run: RunRecord,
    state: ShardState,
    options: MigrationOptions,
    retrier: Retrier,
    lease: Lease,
    ledger: RunLedger,
    clock: Callable[[], float],
    observer: RunObserver,
    trail: RunTrail,
) -> ShardWork:
    return ShardWork(
        run_id=run.run_id,
        shard=(state.index, run.plan.shards),
        cursor=state.cursor,
        pending=state.pending,
        batch_size=options.batch_size,
        retry=retrier,
        lease=lease,
        ledger=ledger,
        clock=clock,
        observer=observer,
        trail=trail,
    )
