"""``migrate``: pick the job for a mode, put the rate limit in front of the provider, run it."""

from __future__ import annotations

import random
import time
from collections.abc import Callable

from field_encrypt.products import ProductRuntime
from field_encrypt.providers.base import KeyProvider
from field_encrypt.rotation.backfill import DecryptJob, EncryptJob
from field_encrypt.rotation.ledger import RunLedger
from field_encrypt.rotation.ratelimit import ThrottledProvider, TokenBucket
from field_encrypt.rotation.reencrypt import ReencryptJob
from field_encrypt.rotation.rewrap import RewrapJob
from field_encrypt.rotation.run import Job, MigrationOptions, RunObserver, RunReport, run_job


def prepare_job(
    runtime: ProductRuntime, options: MigrationOptions, *, provider: KeyProvider | None = None
) -> Job:
    """The job for ``options.mode``, with its plan and estimates (reads only)."""
    provider = provider if provider is not None else runtime.provider
    match options.mode:
        case "rewrap-deks":
            return RewrapJob(runtime, options, provider=provider)
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
    """Run (or resume, or dry-run) one migration as worker ``options.worker``."""
    provider = runtime.provider
    if options.max_rps is not None:
        bucket = TokenBucket(options.max_rps, clock=monotonic, sleep=sleep)
        provider = ThrottledProvider(provider, bucket)
    job = prepare_job(runtime, options, provider=provider)
    return run_job(
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
