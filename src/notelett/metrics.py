"""Prometheus metrics: requests by route template and status, decrypt failures, DEK cache.

Each app has its own registry (two apps in one process never collide). The DEK cache is
read at scrape time from :meth:`DekCache.stats`, so the hot path pays nothing for it.
The registry also holds the library's metrics (key-provider calls, retries:
``field_encrypt.metrics``), the key state (current MEK version, DEKs per version, read
at most once a minute) and the process and Python collectors.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

from prometheus_client import (
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Receive, Scope, Send

from field_encrypt import DekCache
from field_encrypt import metrics as library
from notelett.middleware import HttpMiddleware, StatusSeen, route_template

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class _DekCacheCollector(Collector):
    def __init__(self, cache: DekCache) -> None:
        self.cache = cache

    def collect(self) -> Iterator[Metric]:
        stats = self.cache.stats()
        hits = CounterMetricFamily("notelett_dek_cache_hits", "DEK cache lookups that hit.")
        hits.add_metric([], stats.hits)
        misses = CounterMetricFamily(
            "notelett_dek_cache_misses", "DEK cache lookups that missed (a DEK was unwrapped)."
        )
        misses.add_metric([], stats.misses)
        evictions = CounterMetricFamily(
            "notelett_dek_cache_evictions", "DEKs dropped from the cache (size, age, version)."
        )
        evictions.add_metric([], stats.evictions)
        size = GaugeMetricFamily("notelett_dek_cache_entries", "DEKs held in the cache now.")
        size.add_metric([], stats.size)
        yield from (hits, misses, evictions, size)


class Metrics:
    """The app's registry and its instruments."""

    def __init__(
        self, cache: DekCache, *, key_state: library.KeyStateCollector | None = None
    ) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "notelett_http_requests",
            "HTTP requests answered, by method, route template and status.",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "notelett_http_request_duration_seconds",
            "Time to answer an HTTP request, by method, route template and status.",
            ["method", "route", "status"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.decrypt_failures = Counter(
            "notelett_decrypt_failures",
            "Notes that failed to decrypt (a read answered 500, or a list page's errors item).",
            registry=self.registry,
        )
        self.registry.register(_DekCacheCollector(cache))
        self.registry.register(library.LibraryCollector())
        if key_state is not None:
            self.registry.register(key_state)
        for collector in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):
            self.registry.register(collector)

    def render(self) -> bytes:
        """The text exposition of every metric."""
        return generate_latest(self.registry)


class MetricsMiddleware(HttpMiddleware):
    """Count and time every request under its route template (``/api/notes/{note_id}``)."""

    def __init__(self, app: ASGIApp, *, metrics: Metrics) -> None:
        super().__init__(app)
        self.metrics = metrics

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        seen = StatusSeen(send)
        try:
            await self.app(scope, receive, seen)
        finally:
            labels = (scope["method"], route_template(scope), str(seen.status))
            self.metrics.requests.labels(*labels).inc()
            self.metrics.latency.labels(*labels).observe(time.perf_counter() - started)
