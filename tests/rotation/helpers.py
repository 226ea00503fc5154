"""Helpers for the rotation tests: run a migration on a fake clock, inspect the store."""

from __future__ import annotations

from typing import Any

from field_encrypt.backends.registry import open_run_ledger
from field_encrypt.products import ProductRuntime
from field_encrypt.rotation import MigrationOptions, RunReport, migrate
from field_encrypt.testing import FakeClock, FaultInjectingProvider


def faulty(runtime: ProductRuntime, clock: FakeClock) -> FaultInjectingProvider:
    """Put a fault-injecting wrapper (real crypto underneath) in front of the provider."""
    provider = FaultInjectingProvider(runtime.provider, clock=clock.monotonic)
    runtime.provider = provider
    runtime.encryptor.provider = provider
    return provider


def run(
    runtime: ProductRuntime, clock: FakeClock, *, owner: str = "test-worker", **options: Any
) -> RunReport:
    """``migrate`` with ``options`` on the fake clock (rewrap-deks unless told)."""
    options.setdefault("mode", "rewrap-deks")
    return migrate(
        runtime,
        open_run_ledger(runtime.database),
        MigrationOptions(**options),
        clock=clock.time,
        monotonic=clock.monotonic,
        sleep=clock.sleep,
        owner=owner,
    )


def versions_of(runtime: ProductRuntime) -> dict[str, int]:
    return runtime.dek_store.count_by_version()
