"""Prometheus metrics of the library: key-provider calls, retries, keys, DEKs and rotations.

Optional: with the ``metrics`` extra (prometheus-client) installed, every instrument here
records into :func:`registry`, the library's own registry; without it every function is
a no-op and :data:`ENABLED` is false, so the library never needs the package.

What records where (each is one small hook, not code in every provider):

* provider calls, their latency and outcome: :class:`~field_encrypt.providers.observed.ObservedProvider`
  (``runtime.py`` and NoteLett wrap the provider they build in it);
* retries: :class:`~field_encrypt.rotation.retry.Retrier`;
* the rotation's ``--max-rps``: :func:`~field_encrypt.rotation.migrate.migrate`;
* a migration run's progress: :class:`RunMetrics`, a ``RunObserver`` the CLI passes;
* the scheduled rotation's state: :func:`record_rotation_state` (``field-encrypt rotate``);
* the current MEK version and DEKs per MEK version: :class:`KeyStateCollector`, read at
  scrape (or publish) time and cached for ``ttl`` seconds.

Label values are names, versions and outcomes only; never key material or plaintext.
Names and units follow Prometheus conventions (``_total``, ``_seconds``); every metric is
listed in docs/operations.md.
"""

from __future__ import annotations

import importlib.util
import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from field_encrypt.errors import (
    DecryptionError,
    FieldEncryptError,
    KeyProviderUnavailableError,
    KeyVersionDisabledError,
    KeyVersionNotFoundError,
)

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry
    from prometheus_client.core import Metric

    from field_encrypt.providers.base import KeyProvider
    from field_encrypt.rotation.ledger import Counters, RunRecord

ENABLED = importlib.util.find_spec("prometheus_client") is not None
"""Whether prometheus-client is installed (the ``metrics`` extra). It is imported on the
first use of an instrument, so a command that records nothing never pays for it."""

log = logging.getLogger("field_encrypt.metrics")

CALL_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
OUTCOMES = ("ok", "throttled", "unavailable", "disabled", "not_found", "invalid", "error")


def outcome_of(exc: FieldEncryptError | None) -> str:
    """The ``outcome`` label of a provider call that raised ``exc`` (``None``: ``ok``).

    ``throttled`` is an unavailable answer that carried ``Retry-After`` (a 429, or a 503
    asking to come back later); ``invalid`` a wrap that failed to open.
    """
    if exc is None:
        return "ok"
    if isinstance(exc, KeyProviderUnavailableError):
        return "throttled" if exc.retry_after is not None else "unavailable"
    if isinstance(exc, KeyVersionDisabledError):
        return "disabled"
    if isinstance(exc, KeyVersionNotFoundError):
        return "not_found"
    if isinstance(exc, DecryptionError):
        return "invalid"
    return "error"


class _Instruments:
    """The library's instruments, in their own registry."""

    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = CollectorRegistry()
        r = self.registry
        self.calls = Counter(
            "field_encrypt_provider_calls",
            "Key-provider calls, by provider, operation and outcome.",
            ["provider", "operation", "outcome"],
            registry=r,
        )
        self.latency = Histogram(
            "field_encrypt_provider_call_duration_seconds",
            "Time a key-provider call took (failed calls included), by provider and operation.",
            ["provider", "operation"],
            buckets=CALL_BUCKETS,
            registry=r,
        )
        self.retries = Counter(
            "field_encrypt_retries",
            "Transient failures retried after a back-off, by error class.",
            ["error"],
            registry=r,
        )
        self.rate_limit = Gauge(
            "field_encrypt_provider_rate_limit_per_second",
            "The calls per second a rotation allows itself against the provider (--max-rps).",
            ["provider"],
            registry=r,
        )
        self.epoch_polls = Counter(
            "field_encrypt_key_epoch_polls",
            "Reads of the product's key-state epoch by a running process, by outcome "
            "(unchanged, changed, failed).",
            ["product", "outcome"],
            registry=r,
        )
        self.epoch_dropped = Counter(
            "field_encrypt_key_epoch_dropped_keys",
            "Cached DEKs and KEKs dropped because the key-state epoch moved.",
            ["product"],
            registry=r,
        )
        self.cache_suspended = Gauge(
            "field_encrypt_dek_cache_suspended",
            "1 while the DEK cache keeps nothing because the key-state epoch could not be "
            "read for FIELD_ENCRYPT_KEY_STATE_STALE_SECONDS (fail closed), else 0.",
            ["product"],
            registry=r,
        )
        self.lazy = Counter(
            "field_encrypt_lazy_rewraps",
            "DEKs the lazy rewrapper handled, by outcome (rewrapped, skipped, conflict, "
            "failed, dropped).",
            ["product", "outcome"],
            registry=r,
        )
        run = ["product", "mode"]
        self.items = Counter(
            "field_encrypt_rotation_items",
            "Items a migration run handled in this process, by result (changed, skipped, failed).",
            [*run, "result"],
            registry=r,
        )
        self.conflicts = Counter(
            "field_encrypt_rotation_conflicts",
            "Compare-and-swap writes a run lost to a concurrent writer (and retried).",
            run,
            registry=r,
        )
        self.expected = Gauge(
            "field_encrypt_rotation_items_expected",
            "Items the run expected to handle when it was created.",
            run,
            registry=r,
        )
        self.processed = Gauge(
            "field_encrypt_rotation_items_processed",
            "Items the whole run (every worker, earlier invocations too) has handled.",
            run,
            registry=r,
        )
        self.rate = Gauge(
            "field_encrypt_rotation_rate_per_second",
            "Items per second this process has handled since the run started here.",
            run,
            registry=r,
        )
        self.eta = Gauge(
            "field_encrypt_rotation_eta_seconds",
            "Seconds until the run is expected to finish at its current rate.",
            run,
            registry=r,
        )
        self.running = Gauge(
            "field_encrypt_rotation_running",
            "1 while a migration run is going on in this process, else 0.",
            run,
            registry=r,
        )
        self.progress_at = Gauge(
            "field_encrypt_rotation_last_progress_timestamp_seconds",
            "When the run last finished a batch (or started).",
            run,
            registry=r,
        )
        self.runs = Counter(
            "field_encrypt_rotation_runs",
            "Migration invocations that ended, by status (completed, "
            "completed_with_failures, stopped, in_progress, failed).",
            [*run, "status"],
            registry=r,
        )
        self.stage = Gauge(
            "field_encrypt_rotation_stage",
            "The scheduled rotation's stage: 1 for the stage it is in, 0 for the others.",
            ["product", "stage"],
            registry=r,
        )
        self.blocked = Gauge(
            "field_encrypt_rotation_blocked",
            "1 while the scheduled rotation is blocked (a check failed), else 0.",
            ["product"],
            registry=r,
        )
        self.halted = Gauge(
            "field_encrypt_rotation_halted",
            "1 while the scheduled rotation's stop switch is set, else 0.",
            ["product"],
            registry=r,
        )
        self.last_success = Gauge(
            "field_encrypt_rotation_last_success_timestamp_seconds",
            "When the last scheduled rotation completed (0: never).",
            ["product"],
            registry=r,
        )
        self.next_due = Gauge(
            "field_encrypt_rotation_next_due_timestamp_seconds",
            "When the next scheduled rotation is due (the current version's age limit).",
            ["product"],
            registry=r,
        )
        self.soak_until = Gauge(
            "field_encrypt_rotation_soak_until_timestamp_seconds",
            "When the running rotation's soak ends (0 outside a soak).",
            ["product"],
            registry=r,
        )
        self.advanced_at = Gauge(
            "field_encrypt_rotation_last_run_timestamp_seconds",
            "When `field-encrypt rotate` last ran, whatever its outcome.",
            ["product"],
            registry=r,
        )


_made: list[_Instruments] = []
_making = threading.Lock()


def _get() -> _Instruments | None:
    """The instruments, made on first use; ``None`` without prometheus-client."""
    if _made:
        return _made[0]
    if not ENABLED:
        return None
    with _making:
        if not _made:
            _made.append(_Instruments())
    _flush_pending()
    return _made[0]


def registry() -> CollectorRegistry | None:
    """The library's registry (``None`` without prometheus-client)."""
    made = _get()
    return made.registry if made is not None else None


# -- hooks (each a no-op without prometheus-client) ---------------------------------------


_children: dict[tuple[str, str, str], tuple[Any, Any]] = {}


_pending: list[tuple[Callable[..., None], tuple[Any, ...], dict[str, Any]]] = []
"""Hook calls made before the instruments were (see :func:`_deferred`)."""
_MAX_PENDING = 1000


def _deferred(hook: Callable[..., None], *args: Any, **kwargs: Any) -> bool:
    """Keep a hook's call for later if the instruments are not made yet; whether it was kept.

    Until something reads the registry or a hook that is not deferred makes the
    instruments, up to :data:`_MAX_PENDING` calls of :func:`provider_call` and
    :func:`key_epoch_polled` are kept in a plain list and replayed, in order, when the
    instruments are made: a short command that publishes no metrics (``field-encrypt
    status``) then never imports ``prometheus_client``. Past that, they are made at once.
    """
    if _made or not ENABLED:
        return False
    _pending.append((hook, args, kwargs))
    if len(_pending) >= _MAX_PENDING:
        _get()  # enough kept: make the instruments, which counts them
    if _made:  # made meanwhile by another thread, perhaps after its replay: count them now
        _flush_pending()
    return True


_flushing = threading.local()


def _flush_pending() -> None:
    """Replay the hook calls kept in :data:`_pending` (the instruments exist now).

    Not again from inside a replayed hook on the same thread: the loop here takes the rest.
    """
    if getattr(_flushing, "active", False):
        return
    _flushing.active = True
    try:
        while _pending:
            try:
                hook, args, kwargs = _pending.pop(0)
            except IndexError:  # another thread took the last one
                return
            hook(*args, **kwargs)
    finally:
        _flushing.active = False


def provider_call(provider: str, operation: str, outcome: str, seconds: float) -> None:
    """Count one key-provider call and observe its duration (see :func:`_deferred`)."""
    key = (provider, operation, outcome)
    pair = _children.get(key)
    if pair is None:  # label lookups take a lock: done once per label set
        if _deferred(provider_call, provider, operation, outcome, seconds):
            return
        if (i := _get()) is None:
            return
        pair = _children.setdefault(
            key, (i.calls.labels(*key), i.latency.labels(provider, operation))
        )
    pair[0].inc()
    pair[1].observe(seconds)


def retried(error: FieldEncryptError) -> None:
    """Count one retry of a transient ``error``."""
    if (i := _get()) is not None:
        i.retries.labels(type(error).__name__).inc()


def rate_limited(provider: str, per_second: float) -> None:
    """Record the ``--max-rps`` a run holds itself to against ``provider``."""
    if (i := _get()) is not None:
        i.rate_limit.labels(provider).set(per_second)


def key_epoch_polled(product: str, outcome: str, *, dropped: int = 0) -> None:
    """Count one read of the key-state epoch (``unchanged``, ``changed`` or ``failed``)."""
    if _deferred(key_epoch_polled, product, outcome, dropped=dropped):
        return
    if (i := _get()) is not None:
        i.epoch_polls.labels(product, outcome).inc()
        if dropped:
            i.epoch_dropped.labels(product).inc(dropped)


def dek_cache_suspended(product: str, suspended: bool) -> None:
    """Whether the product's DEK cache is suspended (fail closed) in this process."""
    if (i := _get()) is not None:
        i.cache_suspended.labels(product).set(1 if suspended else 0)


def lazy_rewrapped(product: str, outcome: str, count: int = 1) -> None:
    """Count DEKs the lazy rewrapper handled with ``outcome``."""
    if (i := _get()) is not None:
        i.lazy.labels(product, outcome).inc(count)


def run_ended(product: str, mode: str, status: str) -> None:
    """Count one migration invocation that ended with ``status``; it no longer runs."""
    if (i := _get()) is not None:
        i.runs.labels(product, mode, status).inc()
        i.running.labels(product, mode).set(0)
        i.eta.labels(product, mode).set(0)


def record_rotation_state(
    product: str,
    *,
    stage: str,
    stages: Sequence[str],
    blocked: bool,
    halted: bool,
    last_success: float | None,
    next_due: float | None,
    soak_until: float | None,
    now: float,
) -> None:
    """Where the scheduled rotation stands, as ``field-encrypt rotate`` left it."""
    if (i := _get()) is None:
        return
    for name in stages:
        i.stage.labels(product, name).set(1 if name == stage else 0)
    i.blocked.labels(product).set(1 if blocked else 0)
    i.halted.labels(product).set(1 if halted else 0)
    i.last_success.labels(product).set(last_success or 0)
    i.next_due.labels(product).set(next_due or 0)
    i.soak_until.labels(product).set(soak_until or 0)
    i.advanced_at.labels(product).set(now)


class RunMetrics:
    """A ``RunObserver`` that records a migration run's progress, then passes events on.

    ``publish`` (if given) is called after a batch at most every ``interval`` seconds, so
    a Pushgateway or textfile shows a long run's progress while it goes on.
    """

    def __init__(
        self,
        inner: object,
        *,
        product: str,
        mode: str,
        publish: Callable[[], None] | None = None,
        interval: float = 15.0,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.inner = inner
        self.labels = (product, mode)
        self.publish = publish
        self.interval = interval
        self.clock = clock
        self.monotonic = monotonic
        self.started = monotonic()
        self.published = self.started
        self.here = 0
        self.done = 0
        self.total = 0
        self.started_run = False
        """Whether a run started (the caller then reports how it ended: :func:`run_ended`)."""

    def __enter__(self) -> RunMetrics:
        enter = getattr(self.inner, "__enter__", None)
        if enter is not None:
            enter()
        return self

    def __exit__(self, *exc: object) -> None:
        leave = getattr(self.inner, "__exit__", None)
        if leave is not None:
            leave(*exc)

    def run_started(self, run: RunRecord, *, shard: int, resumed: bool) -> None:
        counters = run.counters
        self.started_run = True
        self.total = max(run.estimated_total, 0)
        self.done = counters.changed + counters.failed + counters.skipped - run.skipped_at_start
        if (i := _get()) is not None:
            i.expected.labels(*self.labels).set(self.total)
            i.processed.labels(*self.labels).set(self.done)
            i.running.labels(*self.labels).set(1)
            i.progress_at.labels(*self.labels).set(self.clock())
            for result in ("changed", "skipped", "failed"):  # series exist from the start, at 0
                i.items.labels(*self.labels, result)
            i.conflicts.labels(*self.labels)
        _forward(self.inner, "run_started", run, shard=shard, resumed=resumed)

    def batch_done(self, delta: Counters) -> None:
        handled = delta.changed + delta.failed + delta.skipped
        self.here += handled
        self.done += handled
        if (i := _get()) is not None:
            for result, n in (
                ("changed", delta.changed),
                ("skipped", delta.skipped),
                ("failed", delta.failed),
            ):
                if n:
                    i.items.labels(*self.labels, result).inc(n)
            if delta.conflicts:
                i.conflicts.labels(*self.labels).inc(delta.conflicts)
            elapsed = self.monotonic() - self.started
            rate = self.here / elapsed if elapsed > 0 else 0.0
            i.processed.labels(*self.labels).set(self.done)
            i.rate.labels(*self.labels).set(rate)
            left = max(self.total - self.done, 0)
            i.eta.labels(*self.labels).set(left / rate if rate > 0 else 0.0)
            i.progress_at.labels(*self.labels).set(self.clock())
        _forward(self.inner, "batch_done", delta)
        now = self.monotonic()
        if self.publish is not None and now - self.published >= self.interval:
            self.published = now
            self.publish()

    def event(self, name: str, fields: Mapping[str, object]) -> None:
        _forward(self.inner, "event", name, fields)


def _forward(inner: object, method: str, *args: object, **kwargs: object) -> None:
    getattr(inner, method)(*args, **kwargs)


# -- scrape-time state -----------------------------------------------------------------


class KeyStateCollector:
    """The current MEK version and DEKs per MEK version, read at most every ``ttl`` s.

    ``counts`` is ``usage.dek_counts`` bound to a runtime (one ``count_by_version`` query);
    the provider's ``versions()`` is one call. While the store or provider fails, the last
    values are served and ``field_encrypt_key_state_up`` is 0.
    """

    def __init__(
        self,
        *,
        product: str,
        provider: KeyProvider,
        counts: Callable[[], dict[str, int]],
        ttl: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.product = product
        self.provider = provider
        self.counts = counts
        self.ttl = ttl
        self.clock = clock
        self._lock = threading.Lock()
        self._read_at: float | None = None
        self._versions: list[tuple[str, bool, bool]] = []
        self._deks: dict[str, int] = {}
        self._up = False

    def _refresh(self) -> None:
        now = self.clock()
        if self._read_at is not None and now - self._read_at < self.ttl:
            return
        try:
            versions = [(v.version, v.enabled, v.current) for v in self.provider.versions()]
            deks = self.counts()
        except FieldEncryptError as exc:  # a scrape never fails: it says the state is stale
            log.warning("key state not refreshed: %s: %s", type(exc).__name__, exc)
            self._up = False
        else:
            self._versions, self._deks, self._up = versions, deks, True
        self._read_at = now

    def collect(self) -> Iterator[Metric]:
        from prometheus_client.core import GaugeMetricFamily, InfoMetricFamily

        with self._lock:
            self._refresh()
            versions, deks, up = list(self._versions), dict(self._deks), self._up
        kind, product = self.provider.kind, self.product
        current = next((v for v, _e, c in versions if c), None)
        info = InfoMetricFamily(
            "field_encrypt_mek",
            "The product's MEK: its provider and current version (its name is not shown).",
            labels=["product", "provider"],
        )
        if current is not None:
            info.add_metric([product, kind], {"version": current})
        enabled = GaugeMetricFamily(
            "field_encrypt_mek_version_enabled",
            "1 if the MEK version is enabled, 0 if disabled.",
            labels=["product", "mek_version"],
        )
        for version, on, _c in versions:
            enabled.add_metric([product, version], 1 if on else 0)
        count = GaugeMetricFamily(
            "field_encrypt_deks",
            "DEKs per effective MEK version (a DEK under a KEK counts under its KEK's version).",
            labels=["product", "mek_version", "current"],
        )
        for version, n in sorted(deks.items()):
            count.add_metric([self.product, version, "true" if version == current else "false"], n)
        state = GaugeMetricFamily(
            "field_encrypt_key_state_up",
            "1 if the last read of the key state (versions, DEK counts) succeeded.",
            labels=["product"],
        )
        state.add_metric([self.product], 1 if up else 0)
        yield from (info, enabled, count, state)


class LibraryCollector:
    """The library's instruments, to register in an application's own registry."""

    def collect(self) -> Iterator[Metric]:
        library = registry()
        if library is not None:
            yield from library.collect()


# -- publishing (long CLI runs) ------------------------------------------------------------


class Publisher:
    """Writes the metrics to a node-exporter textfile and/or pushes them to a Pushgateway.

    A publish that fails is logged and the run goes on: metrics never stop a rotation.
    """

    def __init__(
        self,
        *,
        textfile: str | None,
        pushgateway: str | None,
        job: str,
        grouping: Mapping[str, str],
        extra: Sequence[object] = (),
    ) -> None:
        if not ENABLED and (textfile or pushgateway):
            from field_encrypt.errors import ConfigurationError

            raise ConfigurationError(
                "--metrics-textfile and --metrics-pushgateway need prometheus-client: "
                "pip install 'field-encrypt[metrics]'"
            )
        self.textfile = textfile
        self.pushgateway = pushgateway
        self.job = job
        self.grouping = dict(grouping)
        self.registry: CollectorRegistry | None = None
        if ENABLED and (textfile or pushgateway):
            from prometheus_client import CollectorRegistry

            self.registry = CollectorRegistry()
            self.registry.register(LibraryCollector())
            for collector in extra:
                self.registry.register(collector)  # type: ignore[arg-type]

    @property
    def active(self) -> bool:
        return self.registry is not None

    def publish(self) -> None:
        """Write and push now (each is skipped when not configured)."""
        if self.registry is None:
            return
        from prometheus_client import push_to_gateway, write_to_textfile

        if self.textfile:
            try:
                write_to_textfile(self.textfile, self.registry)  # a temp file, then rename
            except OSError as exc:
                log.warning("metrics textfile %s not written: %s", self.textfile, exc)
        if self.pushgateway:
            try:
                push_to_gateway(
                    self.pushgateway,
                    job=self.job,
                    registry=self.registry,
                    grouping_key=self.grouping,
                    timeout=10,
                )
            except OSError as exc:
                log.warning("metrics not pushed to %s: %s", self.pushgateway, exc)


__all__ = [
    "ENABLED",
    "OUTCOMES",
    "KeyStateCollector",
    "LibraryCollector",
    "Publisher",
    "RunMetrics",
    "outcome_of",
    "provider_call",
    "rate_limited",
    "record_rotation_state",
    "registry",
    "retried",
    "run_ended",
]
