"""The rotation engine against a misbehaving key service: the local Key Vault and KMS servers.

Faults are injected *in the servers*, in front of the real SDKs (azure-keyvault-keys,
boto3), at chosen data-plane calls of a rewrap: 429 with ``Retry-After``, 503, a dropped
connection, a 200 with a truncated body, a 200 with ``{}``, and a stalled call. Whatever
the fault, the run completes with every DEK on the target, never writes an empty or
garbage wrap (each row is unwrapped afterwards), honours ``Retry-After`` (measured on
the server: no retry arrives earlier than asked), bounds its retries, and times a stalled
call out instead of hanging. Throttling that never ends stops the run within
``--retry-budget`` with exit 7 and nothing half-written; the same command then completes.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from field_encrypt import KeyProvider
from field_encrypt.backends.sqlite.ledger import SqliteRunLedger
from field_encrypt.products import ProductRuntime
from field_encrypt.rotation import MigrationOptions, RetryBudgetExhausted, RetryPolicy, migrate
from field_encrypt.testing import FaultInjectingProvider
from tests import figures
from tests.cli.helpers import cli
from tests.harnesses import HARNESS_FIXTURES
from tests.reliability import remote
from tests.reliability.invariants import check
from tests.support.seed import document, seed

READ_TIMEOUT = 1.0
DOCUMENTS = 8
FAULTS = {
    "akv": ["429", "503", "drop", "malformed", "empty_json", "stall"],
    "aws-kms": ["throttle", "503", "drop", "malformed", "empty_json", "stall"],
}


class Remote:
    """A provider on a local server, and the server's fault switch and journal."""

    def __init__(self, kind: str, harness: Any) -> None:
        self.kind = kind
        self.harness = harness
        self.server = harness.server if kind == "akv" else harness.kms

    def make(self) -> KeyProvider:
        provider: KeyProvider = self.harness.make(1, read_timeout=READ_TIMEOUT)
        return provider

    def inject(self, fault: str, count: int = 1) -> None:
        self.server.inject(fault, count)

    def clear(self) -> None:
        if self.kind == "akv":
            self.server.clear_faults()
        else:
            self.server.clear_faults()

    def journal(self) -> list[tuple[float, str]]:
        return list(self.server.journal)


@pytest.fixture(params=["akv", "aws-kms"])
def service(request: pytest.FixtureRequest) -> Iterator[Remote]:
    harness = request.getfixturevalue(HARNESS_FIXTURES[request.param])
    service = Remote(request.param, harness)
    yield service
    service.clear()


def _prepared(tmp_path: Path, provider: KeyProvider) -> tuple[ProductRuntime, str]:
    runtime = remote.open_runtime(tmp_path / "fe.db", provider)
    seed(runtime, DOCUMENTS)
    target = provider.create_version().version
    return runtime, target


def _expected() -> dict[str, dict[str, Any]]:
    return {f"doc-{i}": document(i) for i in range(DOCUMENTS)}


def _migrate(runtime: ProductRuntime, *, concurrency: int = 2, budget: float = 30.0) -> Any:
    return migrate(
        runtime,
        SqliteRunLedger(runtime.database),
        MigrationOptions(
            mode="rewrap-deks",
            batch_size=4,
            concurrency=concurrency,
            retry=RetryPolicy(base_delay=0.05, max_delay=2.0, budget=budget),
        ),
    )


def _inject_at(
    runtime: ProductRuntime, service: Remote, fault: str, calls: set[int], count: int = 1
) -> None:
    """Make the server answer with ``fault`` (``count`` times) at the data-plane calls
    numbered ``calls``."""
    hooked = FaultInjectingProvider(runtime.provider)
    seen = [0]

    def before(_name: str) -> None:
        seen[0] += 1
        if seen[0] in calls:
            service.inject(fault, count)

    hooked.before_call(before)
    runtime.provider = hooked


@pytest.mark.parametrize("fault_index", range(6), ids=lambda i: FAULTS["akv"][i])
def test_the_run_completes_through_each_fault(
    tmp_path: Path, service: Remote, fault_index: int
) -> None:
    """Two faults of one kind mid-run: completed, every DEK on the target and unwrapping."""
    fault = FAULTS[service.kind][fault_index]
    provider = service.make()
    runtime, target = _prepared(tmp_path, provider)
    try:
        _inject_at(runtime, service, fault, {2, 5})
        before = len(service.journal())
        started = time.monotonic()
        report = _migrate(runtime)
        elapsed = time.monotonic() - started
        served = [o for _, o in service.journal()[before:] if o == f"fault_{fault}"]
        assert len(served) == 2, (fault, service.journal()[before:])
        assert report.status == "completed", (report.status, report.failures, report.stop_reason)
        assert report.failure_count == 0, report.as_dict()
        check(runtime, _expected(), provider=provider, completed_on=target).assert_ok(fault)
        if fault == "stall":  # timed out after READ_TIMEOUT, twice, then retried
            assert elapsed < 2 * READ_TIMEOUT + 10, elapsed
        figures.record("provider faults", faults_injected=len(served), runs_completed=1)
    finally:
        runtime.close()


def test_retry_after_is_honoured(tmp_path: Path, akv_harness: Any) -> None:
    """After a 429 with Retry-After: 1, the next request reaches the vault a second later."""
    service = Remote("akv", akv_harness)
    provider = service.make()
    runtime, target = _prepared(tmp_path, provider)
    try:
        _inject_at(runtime, service, "429", {1, 4, 7})
        before = len(service.journal())
        report = _migrate(runtime, concurrency=1)
        assert report.status == "completed", (report.status, report.failures, report.stop_reason)
        journal = service.journal()[before:]
        gaps = [
            journal[i + 1][0] - when
            for i, (when, outcome) in enumerate(journal)
            if outcome == "fault_429" and i + 1 < len(journal)
        ]
        assert len(gaps) == 3, journal
        assert min(gaps) >= 1.0, gaps  # Retry-After: 1
        check(runtime, _expected(), provider=provider, completed_on=target).assert_ok()
        figures.record("provider faults", faults_injected=3, retry_after_gaps_measured=len(gaps))
        print(f"gaps after 429 + Retry-After: 1: {[round(g, 3) for g in gaps]}")
    finally:
        runtime.close()


def _attempt_bound(policy: RetryPolicy) -> int:
    """The most attempts one operation can make within the budget (shortest jitter each time)."""
    spent, attempts = 0.0, 1
    while True:
        delay = 0.5 * min(policy.max_delay, policy.base_delay * 2.0 ** (attempts - 1))
        if spent + delay > policy.budget:
            return attempts
        spent += delay
        attempts += 1


def test_persistent_503_stops_within_the_budget_and_resumes(
    tmp_path: Path, service: Remote
) -> None:
    """An outage from the third call on, longer than the budget: the run stops, its retries
    bounded, nothing half-written; once the service is back the same run completes."""
    provider = service.make()
    runtime, target = _prepared(tmp_path, provider)
    try:
        policy = RetryPolicy(base_delay=0.05, max_delay=2.0, budget=2.0)
        _inject_at(runtime, service, "503", {3}, count=10_000)
        before = len(service.journal())
        started = time.monotonic()
        report = migrate(
            runtime,
            SqliteRunLedger(runtime.database),
            MigrationOptions(mode="rewrap-deks", batch_size=4, concurrency=1, retry=policy),
        )
        elapsed = time.monotonic() - started
        faulted = [o for _, o in service.journal()[before:] if o == "fault_503"]
        service.clear()
        assert report.status == "stopped", report.as_dict()
        assert elapsed < policy.budget + 2, elapsed
        attempts = len(faulted)
        assert 1 < attempts <= _attempt_bound(policy), (attempts, _attempt_bound(policy))
        check(runtime, _expected(), provider=provider).assert_ok("after the stop")
        again = _migrate(runtime)
        assert again.status == "completed", again.as_dict()
        check(runtime, _expected(), provider=provider, completed_on=target).assert_ok()
        figures.record("provider faults", faults_injected=attempts, budget_stops=1)
    finally:
        runtime.close()


def test_an_outage_at_start_up_is_retried_within_the_budget(
    tmp_path: Path, service: Remote
) -> None:
    """Reading the versions at start-up is retried too, and given up within the budget."""
    provider = service.make()
    runtime, _ = _prepared(tmp_path, provider)
    try:
        service.inject("503", 10_000)
        started = time.monotonic()
        with pytest.raises(RetryBudgetExhausted):
            _migrate(runtime, budget=1.0)
        assert time.monotonic() - started < 1.0 + 2
        service.clear()
        check(runtime, _expected(), provider=provider).assert_ok("nothing was written")
        assert runtime.dek_store.count_by_version() != {}
        figures.record("provider faults", budget_stops=1)
    finally:
        runtime.close()


def test_persistent_throttling_exits_7_within_retry_budget_then_completes(
    tmp_path: Path, service: Remote, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The CLI under endless throttling: exit 7 within --retry-budget; then the same command
    completes."""
    provider = service.make()
    runtime, target = _prepared(tmp_path, provider)
    monkeypatch.setattr(runtime, "close", lambda: None)  # the CLI closes what it opened
    remote.OPENERS.append(lambda _settings: runtime)
    try:
        throttle = "429" if service.kind == "akv" else "throttle"
        args = ["migrate", "--product", "tests.reliability.remote:product"]
        args += ["--mode", "rewrap-deks", "--batch-size", "4", "--new-mek-version", target]
        service.inject(throttle, 10_000)
        started = time.monotonic()
        stopped = cli(*args, "--retry-budget", "3")
        elapsed = time.monotonic() - started
        service.clear()
        assert stopped.exit_code == 7, stopped.output
        assert elapsed < 3 + 3, elapsed
        check(runtime, _expected(), provider=provider).assert_ok("after exit 7")
        done = cli(*args, "--retry-budget", "3")
        assert done.exit_code == 0, done.output
        check(runtime, _expected(), provider=provider, completed_on=target).assert_ok()
        figures.record("provider faults", budget_stops=1, cli_exit_7=1)
    finally:
        remote.OPENERS.pop()
        runtime.database.close()
