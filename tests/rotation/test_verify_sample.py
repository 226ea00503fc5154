"""Remote rewraps: one call per DEK, a sample checked, and a bad sample commits nothing."""

from __future__ import annotations

import os

import pytest

from field_encrypt.backends.sqlite.ledger import SqliteRunLedger
from field_encrypt.errors import RewrapCheckError
from field_encrypt.products import ProductRuntime
from field_encrypt.providers.base import KeyProvider, WrappedDek
from field_encrypt.rotation import MigrationOptions, prepare_job
from field_encrypt.testing import CountingProvider, FakeClock
from tests.rotation.helpers import run, versions_of
from tests.support.seed import document, read_all, seed


class RemoteCounting(CountingProvider):
    """The local provider, counted, and flagged remote (as Key Vault or KMS would be)."""

    def __init__(self, inner: KeyProvider, *, corrupt_rewrap: int | None = None) -> None:
        super().__init__(inner)
        self.remote = True
        self.corrupt_rewrap = corrupt_rewrap

    def rewrap(
        self, ciphertext: bytes, *, from_version: str, context: bytes, to_version: str | None = None
    ) -> WrappedDek:
        wrapped = super().rewrap(
            ciphertext, from_version=from_version, context=context, to_version=to_version
        )
        if self.calls["rewrap"] == self.corrupt_rewrap:  # a well-formed wrap of another key
            return self.inner.wrap(os.urandom(32), context=context, version=to_version)
        return wrapped


def _remote(runtime: ProductRuntime, **kwargs: int) -> RemoteCounting:
    provider = RemoteCounting(runtime.provider, **kwargs)
    runtime.provider = provider
    runtime.encryptor.provider = provider
    return provider


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def test_remote_rewrap_costs_one_call_per_dek_plus_the_batch_checks(
    runtime: ProductRuntime, clock: FakeClock
) -> None:
    """With --verify-sample 0, 100 DEKs in 4 batches cost 100 rewraps and 4 checks (8 unwraps)."""
    seed(runtime, 100)
    runtime.provider.create_version()
    provider = _remote(runtime)
    report = run(runtime, clock, batch_size=25, verify_sample=0.0, concurrency=4)
    assert report.status == "completed" and report.remaining == 0
    assert (provider.calls["rewrap"], provider.calls["unwrap"], provider.calls["wrap"]) == (
        100,
        8,
        0,
    )
    runtime.encryptor.cache.clear()
    assert read_all(runtime) == {f"doc-{i}": document(i) for i in range(100)}


def test_verify_sample_one_checks_every_dek(runtime: ProductRuntime, clock: FakeClock) -> None:
    """--verify-sample 1.0 is the old full check: two unwraps per DEK besides its rewrap."""
    seed(runtime, 30)
    runtime.provider.create_version()
    provider = _remote(runtime)
    run(runtime, clock, batch_size=10, verify_sample=1.0)
    assert (provider.calls["rewrap"], provider.calls["unwrap"]) == (30, 60)


def test_a_bad_sampled_wrap_fails_its_whole_batch_uncommitted(
    runtime: ProductRuntime, clock: FakeClock
) -> None:
    """The first DEK of batch 2 comes back wrapping another key: batch 1 stays committed,
    nothing of batch 2 is, the run stops with RewrapCheckError, and every document reads."""
    seed(runtime, 30)
    runtime.provider.create_version()
    _remote(runtime, corrupt_rewrap=11)
    with pytest.raises(RewrapCheckError, match="Nothing of the batch"):
        run(runtime, clock, batch_size=10, verify_sample=0.0, concurrency=1)
    assert versions_of(runtime) == {"2": 10, "1": 20}
    runtime.encryptor.cache.clear()
    assert read_all(runtime) == {f"doc-{i}": document(i) for i in range(30)}
    ledger = SqliteRunLedger(runtime.database)
    (last,) = ledger.latest_runs("sample", limit=1)
    assert not last.finished and last.counters.changed == 10  # resumable from batch 2


def test_in_process_providers_still_check_every_dek(
    runtime: ProductRuntime, clock: FakeClock
) -> None:
    """The local provider is driven as unwrap, wrap, unwrap-and-compare for each DEK."""
    seed(runtime, 12)
    runtime.provider.create_version()
    provider = CountingProvider(runtime.provider)
    runtime.provider = provider
    run(runtime, clock, verify_sample=0.0)
    assert (provider.calls["unwrap"], provider.calls["wrap"]) == (24, 12)


def test_dry_run_estimates_about_one_call_per_remote_dek(runtime: ProductRuntime) -> None:
    """The dry run's call estimate follows the sampling: DEKs + 2 per batch + 2 per sampled."""
    seed(runtime, 50)
    runtime.provider.create_version()
    _remote(runtime)
    options = MigrationOptions(mode="rewrap-deks", batch_size=10, verify_sample=0.0, dry_run=True)
    assert prepare_job(runtime, options).dry_run(None).provider_calls == 50 + 2 * 5


def test_verify_sample_must_be_a_share() -> None:
    """A rate outside [0, 1] is refused before anything runs."""
    from field_encrypt.errors import ConfigurationError

    with pytest.raises(ConfigurationError, match="--verify-sample"):
        MigrationOptions(mode="rewrap-deks", verify_sample=1.5)
