"""The library's metrics: provider calls, retries, run progress, key state, publishing."""

from __future__ import annotations

import itertools
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from field_encrypt import metrics
from field_encrypt.errors import KeyProviderUnavailableError, StoreUnavailableError
from field_encrypt.products import ProductRuntime
from field_encrypt.providers.base import dek_context
from field_encrypt.providers.observed import ObservedProvider, observed
from field_encrypt.rotation import Retrier, RetryPolicy
from field_encrypt.testing import FakeClock, FaultInjectingProvider
from field_encrypt.usage import dek_counts
from tests.support.seed import seed


def value(name: str, **labels: str) -> float:
    """The library registry's current value of ``name`` with ``labels`` (0 when absent)."""
    registry = metrics.registry()
    assert registry is not None
    return registry.get_sample_value(name, labels) or 0.0


def test_every_provider_call_is_counted_by_operation_and_outcome(
    runtime: ProductRuntime,
) -> None:
    """A throttled call counts as ``throttled``, a good one as ``ok``, each timed once."""
    assert isinstance(runtime.provider, ObservedProvider)  # open_runtime measures its provider
    clock = FakeClock()
    faulty = FaultInjectingProvider(runtime.provider.inner, clock=clock.monotonic)
    provider = observed(faulty)
    kind = provider.kind
    before_ok = value(
        "field_encrypt_provider_calls_total", provider=kind, operation="wrap", outcome="ok"
    )
    before_throttled = value(
        "field_encrypt_provider_calls_total", provider=kind, operation="wrap", outcome="throttled"
    )
    before_timed = value(
        "field_encrypt_provider_call_duration_seconds_count", provider=kind, operation="wrap"
    )
    faulty.throttle(1, retry_after=2.0)
    with pytest.raises(KeyProviderUnavailableError):
        provider.wrap(b"k" * 32, context=dek_context("p", "d1"))
    provider.wrap(b"k" * 32, context=dek_context("p", "d1"))
    labels = {"provider": kind, "operation": "wrap"}
    assert value("field_encrypt_provider_calls_total", **labels, outcome="ok") == before_ok + 1
    assert (
        value("field_encrypt_provider_calls_total", **labels, outcome="throttled")
        == before_throttled + 1
    )
    assert value("field_encrypt_provider_call_duration_seconds_count", **labels) == before_timed + 2


def test_observed_provider_keeps_the_batch_path_of_a_local_provider(
    runtime: ProductRuntime,
) -> None:
    """Wrapping a BatchRewrapper keeps ``rewrap_many``, so local rotations stay batched."""
    from field_encrypt.providers.base import BatchRewrapper

    assert isinstance(runtime.provider, BatchRewrapper)
    assert observed(runtime.provider) is runtime.provider  # never wrapped twice


def test_retries_are_counted_by_error_class() -> None:
    """Each retry of a transient error adds one to ``field_encrypt_retries_total``."""
    clock = FakeClock()
    failures = [StoreUnavailableError("locked"), StoreUnavailableError("locked")]

    def flaky() -> str:
        if failures:
            raise failures.pop()
        return "done"

    before = value("field_encrypt_retries_total", error="StoreUnavailableError")
    retrier = Retrier(RetryPolicy(), clock=clock.monotonic, sleep=clock.sleep, rng=lambda: 0.5)
    assert retrier.call(flaky) == "done"
    assert value("field_encrypt_retries_total", error="StoreUnavailableError") == before + 2


def test_a_rewrap_run_reports_progress_rate_and_eta(runtime: ProductRuntime) -> None:
    """RunMetrics sees every batch: items by result, processed of expected, ETA 0 at the end."""
    seed(runtime, 30)
    runtime.provider.create_version()
    clock = FakeClock()
    product = runtime.encryptor.product
    labels = {"product": product, "mode": "rewrap-deks"}
    published: list[float] = []
    before = value("field_encrypt_rotation_items_total", **labels, result="changed")

    class Recorder:
        def run_started(self, *_a: object, **_k: object) -> None:
            pass

        def batch_done(self, *_a: object) -> None:
            clock.advance(1.0)  # each batch takes a second

        def event(self, *_a: object) -> None:
            pass

    observer = metrics.RunMetrics(
        Recorder(),
        product=product,
        mode="rewrap-deks",
        publish=lambda: published.append(clock.time()),
        interval=2.0,
        clock=clock.time,
        monotonic=clock.monotonic,
    )
    from field_encrypt.backends.sqlite.ledger import SqliteRunLedger
    from field_encrypt.rotation import MigrationOptions, migrate

    report = migrate(
        runtime,
        SqliteRunLedger(runtime.database),
        MigrationOptions(mode="rewrap-deks", batch_size=10),
        clock=clock.time,
        monotonic=clock.monotonic,
        sleep=clock.sleep,
        observer=observer,
    )
    assert report.status == "completed"
    assert value("field_encrypt_rotation_items_total", **labels, result="changed") == before + 30
    assert value("field_encrypt_rotation_items_expected", **labels) == 30
    assert value("field_encrypt_rotation_items_processed", **labels) == 30
    assert value("field_encrypt_rotation_eta_seconds", **labels) == 0
    assert value("field_encrypt_rotation_rate_per_second", **labels) == pytest.approx(10.0)
    assert value("field_encrypt_rotation_running", **labels) == 1  # until the CLI says it ended
    # a batch a second, a publish at most every 2 s: some batches published, never two close
    assert published and all(b - a >= 2.0 for a, b in itertools.pairwise(published))
    metrics.run_ended(product, "rewrap-deks", report.status)
    assert value("field_encrypt_rotation_running", **labels) == 0
    assert value("field_encrypt_rotation_runs_total", **labels, status="completed") >= 1


def test_key_state_is_read_once_per_ttl_and_served_stale_when_the_store_fails(
    runtime: ProductRuntime,
) -> None:
    """DEKs per version and the current version come from one read per TTL; a failed read
    keeps the last values and sets ``field_encrypt_key_state_up`` to 0."""
    seed(runtime, 5)
    runtime.provider.create_version()
    clock = FakeClock()
    reads: list[int] = []
    broken: list[bool] = []

    def counts() -> dict[str, int]:
        if broken:
            raise StoreUnavailableError("database is locked")
        reads.append(1)
        return dek_counts(runtime)

    collector = metrics.KeyStateCollector(
        product="sample", provider=runtime.provider, counts=counts, ttl=60, clock=clock.monotonic
    )
    registry = CollectorRegistry()
    registry.register(collector)
    current = runtime.provider.current_version()
    old = next(v.version for v in runtime.provider.versions() if not v.current)
    assert (
        registry.get_sample_value(
            "field_encrypt_mek_info",
            {"provider": "local", "product": "sample", "version": current},
        )
        == 1
    )
    assert (
        registry.get_sample_value(
            "field_encrypt_deks", {"product": "sample", "mek_version": old, "current": "false"}
        )
        == 5
    )
    assert (
        registry.get_sample_value(
            "field_encrypt_mek_version_enabled",
            {"product": "sample", "mek_version": old},
        )
        == 1
    )
    registry.get_sample_value("field_encrypt_deks", {})
    assert len(reads) == 1  # three scrapes within the TTL: one read
    clock.advance(61)
    broken.append(True)
    assert registry.get_sample_value("field_encrypt_key_state_up", {"product": "sample"}) == 0
    assert (
        registry.get_sample_value(
            "field_encrypt_deks", {"product": "sample", "mek_version": old, "current": "false"}
        )
        == 5
    )


def test_textfile_is_written_whole_and_a_dead_pushgateway_does_not_stop_the_run(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The textfile parses as the exposition format; an unreachable gateway is a warning."""
    path = tmp_path / "field_encrypt.prom"
    metrics.record_rotation_state(
        "sample",
        stage="idle",
        stages=("idle", "rewrap"),
        blocked=False,
        halted=False,
        last_success=100.0,
        next_due=200.0,
        soak_until=None,
        now=150.0,
    )
    publisher = metrics.Publisher(
        textfile=str(path),
        pushgateway="http://127.0.0.1:9",  # discard port: nothing listens
        job="field-encrypt",
        grouping={"product": "sample"},
    )
    publisher.publish()
    names = {f.name for f in text_string_to_metric_families(path.read_text())}
    assert "field_encrypt_rotation_next_due_timestamp_seconds" in names
    assert list(tmp_path.iterdir()) == [path]  # no temporary file left behind
    assert "metrics not pushed" in caplog.text


def test_without_prometheus_client_the_library_records_nothing_and_says_which_extra() -> None:
    """With prometheus-client (and OpenTelemetry) absent, providers are not wrapped, hooks
    are no-ops, and asking to publish names the ``metrics`` extra."""
    script = textwrap.dedent(
        """
        import sys
        sys.modules["prometheus_client"] = None  # as if the extras were not installed
        sys.modules["opentelemetry"] = None
        from field_encrypt import metrics
        from field_encrypt.errors import ConfigurationError
        from field_encrypt.providers.observed import observed
        from field_encrypt.testing import FakeClock
        assert not metrics.ENABLED and metrics.registry() is None
        sentinel = object()
        assert observed(sentinel) is sentinel
        metrics.provider_call("local", "wrap", "ok", 0.1)
        metrics.run_ended("p", "rewrap-deks", "completed")
        metrics.Publisher(textfile=None, pushgateway=None, job="j", grouping={}).publish()
        try:
            metrics.Publisher(textfile="x.prom", pushgateway=None, job="j", grouping={})
        except ConfigurationError as exc:
            print(exc)
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=60
    )
    assert "field-encrypt[metrics]" in out.stdout
    assert "prometheus_client" not in out.stderr


def test_calls_before_the_registry_is_read_are_counted_without_importing_it_first() -> None:
    """Provider calls and epoch polls made before anything reads the registry import no
    ``prometheus_client``; reading the registry counts each of them, in order, once."""
    script = textwrap.dedent(
        """
        import sys
        from field_encrypt import metrics
        metrics.provider_call("local", "wrap", "ok", 0.25)
        metrics.provider_call("local", "wrap", "ok", 0.5)
        metrics.key_epoch_polled("p", "changed", dropped=3)
        assert "prometheus_client" not in sys.modules
        registry = metrics.registry()
        calls = {"provider": "local", "operation": "wrap", "outcome": "ok"}
        assert registry.get_sample_value("field_encrypt_provider_calls_total", calls) == 2
        timed = {"provider": "local", "operation": "wrap"}
        seconds = "field_encrypt_provider_call_duration_seconds_sum"
        assert registry.get_sample_value(seconds, timed) == 0.75
        polls = {"product": "p", "outcome": "changed"}
        assert registry.get_sample_value("field_encrypt_key_epoch_polls_total", polls) == 1
        metrics.provider_call("local", "wrap", "ok", 0.25)  # counted at once from now on
        assert registry.get_sample_value("field_encrypt_provider_calls_total", calls) == 3
        print("ok")
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=False, timeout=60
    )
    assert out.stdout.strip() == "ok", out.stderr


def test_a_process_that_never_reads_the_registry_keeps_a_bounded_number_of_calls() -> None:
    """Past ``_MAX_PENDING`` kept calls the instruments are made and every call counted
    (the list does not grow for ever in a server nobody scrapes)."""
    script = textwrap.dedent(
        """
        import sys
        from field_encrypt import metrics
        n = metrics._MAX_PENDING + 5
        for _ in range(n):
            metrics.key_epoch_polled("p", "unchanged")
        assert "prometheus_client" in sys.modules and len(metrics._pending) == 0
        polls = {"product": "p", "outcome": "unchanged"}
        total = metrics.registry().get_sample_value("field_encrypt_key_epoch_polls_total", polls)
        assert total == n, total
        print("ok")
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=False, timeout=60
    )
    assert out.stdout.strip() == "ok", out.stderr
