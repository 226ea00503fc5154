"""``migrate``: pick the job for a mode, put the rate limit in front of the provider, run it."""

from __future__ import annotations

import random
import time
from collections.abc import Callable

from field_encrypt import metrics, tracing
from field_encrypt.backends.base import ALL_VERSIONS, KEK_PREFIX
from field_encrypt.key_epoch import announce_key_change
from field_encrypt.products import ProductRuntime
from field_encrypt.providers.base import KeyProvider
from field_encrypt.providers.kek_tier import KekTierProvider
from field_encrypt.rotation.backfill import DecryptJob, EncryptJob
from field_encrypt.rotation.layout import RotateKekJob, ToDirectJob, ToKekJob
from field_encrypt.rotation.ledger import RunLedger
from field_encrypt.rotation.ratelimit import ThrottledProvider, TokenBucket
from field_encrypt.rotation.reencrypt import ReencryptJob
from field_encrypt.rotation.retry import Retrier
from field_encrypt.rotation.rewrap import RewrapJob
from field_encrypt.rotation.run import Job, MigrationOptions, RunObserver, RunReport, run_job


def prepare_job(
    runtime: ProductRuntime,
    options: MigrationOptions,
    *,
    provider: KeyProvider | None = None,
    tier: KekTierProvider | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> Job:
    """The job for ``options.mode``, with its plan and estimates.

    It reads only, except that a real (not dry) ``to-kek`` or ``rotate-kek`` run creates
    the KEK it moves DEKs under. ``tier`` is the product's KEK tier as the job should call
    it (e.g. over a throttled MEK); ``runtime.kek_tier`` by default.
    """
    provider = provider if provider is not None else runtime.provider
    tier = tier if tier is not None else runtime.kek_tier
    match options.mode:
        case "rewrap-deks":
            return RewrapJob(runtime, options, provider=provider, tier=tier)
        case "to-kek":
            return ToKekJob(runtime, options, provider=provider, sleep=sleep)
        case "to-direct":
            return ToDirectJob(runtime, options, provider=provider, sleep=sleep)
        case "rotate-kek":
            return RotateKekJob(runtime, options, provider=provider, sleep=sleep)
        case "re-encrypt":
            return ReencryptJob(runtime, options, provider=provider)
        case "encrypt":
            return EncryptJob(runtime, options, provider=provider)
        case "decrypt":
            return DecryptJob(runtime, options, provider=provider)


def migrate(
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
    """Run (or resume, or dry-run) one migration as worker ``options.worker``.

    ``--max-rps`` throttles calls to the key provider; with the KEK tier, calls to the MEK
    provider only (what the key service bills and throttles), not the local KEK work.
    """
    provider = runtime.provider
    tier = runtime.kek_tier
    if options.max_rps is not None:
        # No burst: a vault's throttle is a sliding window, and calls saved up and spent at
        # once push the window over its limit for the rest of the run (429s, then retries).
        bucket = TokenBucket(options.max_rps, burst=1.0, clock=monotonic, sleep=sleep)
        metrics.rate_limited((tier.mek if tier is not None else provider).kind, options.max_rps)
        if tier is not None:
            tier = tier.with_mek(ThrottledProvider(tier.mek, bucket))
            provider = tier if runtime.provider is runtime.kek_tier else provider
        if provider is runtime.provider:
            provider = ThrottledProvider(provider, bucket)
    # Preparing reads the provider (current version) and the store (counts): a throttled
    # or dropped call there is retried under the same budget as the run's own calls.
    retrier = Retrier(options.retry, clock=monotonic, sleep=sleep, rng=rng)
    job = retrier.call(prepare_job, runtime, options, provider=provider, tier=tier, sleep=sleep)
    with tracing.span(
        "field_encrypt.rotation.run",
        product=runtime.encryptor.product,
        mode=options.mode,
        worker=f"{options.worker[0] + 1}/{options.worker[1]}",
    ):
        report = run_job(
            job,
            runtime,
            ledger,
            options,
            clock=clock,
            monotonic=monotonic,
            sleep=sleep,
            rng=rng,
            observer=observer,
            owner=owner,
        )
    if options.mode in REWRAPPING and report.status == "completed":
        # Every process re-reads the DEKs it cached under the old wraps (its cache then
        # names their new version, so a later disable drops exactly what it should).
        announce_key_change(runtime, _moved_from(job, report), via=f"migrate {options.mode}")
    return report


def _moved_from(job: Job, report: RunReport) -> list[str]:
    """The versions a completed run moved DEKs away from (all, when it cannot tell)."""
    if report.from_version:
        return [report.from_version]
    if report.mode == "rewrap-deks" and isinstance(job, RewrapJob):
        target = job.target
        moved = {v for v in job.raw_counts if v != target and not v.startswith(KEK_PREFIX)}
        moved |= {k.mek_version for k in job.keks if k.mek_version != target}  # KEKs moved
        return sorted(moved)
    return [ALL_VERSIONS]


REWRAPPING = frozenset({"rewrap-deks", "to-kek", "to-direct", "rotate-kek", "re-encrypt"})
"""The modes that move DEKs to other wraps (or replace them): their completion is announced."""
