"""Rewrap throughput against a throttled Key Vault: what fraction of the vault's limit a rewrap
sustains, with zero failed DEKs.

    .venv/bin/python bench/akv_rewrap.py [--deks 1500] [--limit 500] [--window 10]
        [--latency 0.02] [--key-size 4096] [--workers 8] [--headroom 0.98]

It starts the local Key Vault server (``tests/servers/keyvault.py``) with ``--latency``
seconds added to every crypto call and a sliding-window throttle of ``--limit`` requests per
``--window`` seconds. The default, 500 per 10 s, is Azure's published limit for "all other
transactions" on RSA 4,096-bit *software* keys (the runbook's ``az keyvault key create --kty
RSA --size 4096``); HSM-protected RSA 4,096-bit keys get 250. It wraps ``--deks`` DEKs under
version 1 (locally: no vault call), creates version 2, warms the public-key cache, then
rewraps every DEK to version 2 through ``AzureKeyVaultProvider.rewrap``: one ``unwrapKey``
per DEK, the wrap being local.

The rewrap loop is deliberately small: a bounded thread pool, one token bucket shared by the
workers at ``--headroom`` times the limit, and retries on ``KeyProviderUnavailableError`` that
sleep for its ``retry_after``. ROTATION ENGINE: switch this loop to
``field_encrypt.rotation.rewrap`` once the CLI branch is merged, so the figure measures the
engine that runs in production.

The figure: ``calls per second achieved / (limit / window)``, counted from the first call to
the last answer, plus the number of DEKs that failed (must be 0) and vault calls per DEK.
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from field_encrypt.errors import KeyProviderUnavailableError
from field_encrypt.providers.base import dek_context

ROOT = Path(__file__).resolve().parents[1]


class TokenBucket:
    """At most ``rate`` acquisitions per second, ``burst`` at once; callers sleep their turn."""

    def __init__(
        self,
        rate: float,
        burst: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.rate, self.burst = rate, burst
        self._clock, self._sleep = clock, sleep
        self._tokens = burst
        self._last = clock()
        self._lock = threading.Lock()

    def acquire(self) -> None:
        with self._lock:
            now = self._clock()
            self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate)
            self._last = now
            self._tokens -= 1  # reserve a token, possibly one not yet earned
            wait = -self._tokens / self.rate if self._tokens < 0 else 0.0
        if wait:
            self._sleep(wait)


@dataclass(frozen=True, slots=True)
class Result:
    deks: int
    seconds: float
    calls_per_second: float
    limit_per_second: float
    fraction: float
    failed: int
    throttled: int
    unwrap_calls: int


def run(
    *,
    deks: int,
    limit: int,
    window: float,
    latency: float,
    key_size: int,
    workers: int,
    headroom: float,
    attempts: int = 8,
) -> Result:
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))  # the local Key Vault server lives with the tests
    from azure.identity import ClientSecretCredential
    from tests.servers.keyvault import KeyVaultServer

    from field_encrypt.providers.azure_key_vault import AzureKeyVaultProvider

    with (
        KeyVaultServer(latency=latency) as server,
        ClientSecretCredential(
            server.tenant_id,
            server.client_id,
            server.client_secret,
            authority=server.authority,
            disable_instance_discovery=True,
            connection_verify=str(server.ca_cert),
        ) as credential,
        AzureKeyVaultProvider(
            vault_url=server.url,
            mek_name="bench-mek",
            credential=credential,
            key_size=key_size,
            client_options={
                "connection_verify": str(server.ca_cert),
                "verify_challenge_resource": False,
            },
        ) as provider,
    ):
        old = provider.create_version().version
        contexts = [dek_context("bench", os.urandom(16).hex()) for _ in range(deks)]
        wrapped = [provider.wrap(os.urandom(32), context=c).ciphertext for c in contexts]
        new = provider.create_version().version
        provider.rewrap(wrapped[0], from_version=old, context=contexts[0], to_version=new)
        server.reset_stats()
        server.set_throttle(limit, window)

        bucket = TokenBucket(rate=headroom * limit / window)
        failed = 0
        failed_lock = threading.Lock()

        def rewrap(index: int) -> None:
            nonlocal failed
            for _ in range(attempts):
                bucket.acquire()
                try:
                    provider.rewrap(
                        wrapped[index], from_version=old, context=contexts[index], to_version=new
                    )
                    return
                except KeyProviderUnavailableError as exc:
                    time.sleep(exc.retry_after if exc.retry_after is not None else 1.0)
            with failed_lock:
                failed += 1

        started = time.monotonic()
        with ThreadPoolExecutor(max_workers=workers) as pool:
            list(pool.map(rewrap, range(deks)))
        seconds = time.monotonic() - started
        stats = server.stats
    calls = stats.get("unwrapkey", 0) + stats.get("throttled", 0)
    per_second = calls / seconds
    return Result(
        deks=deks,
        seconds=seconds,
        calls_per_second=per_second,
        limit_per_second=limit / window,
        fraction=per_second / (limit / window),
        failed=failed,
        throttled=stats.get("throttled", 0),
        unwrap_calls=stats.get("unwrapkey", 0),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--deks", type=int, default=1500)
    parser.add_argument("--limit", type=int, default=500, help="requests per window")
    parser.add_argument("--window", type=float, default=10.0, help="seconds")
    parser.add_argument("--latency", type=float, default=0.02, help="seconds per crypto call")
    parser.add_argument("--key-size", type=int, default=4096)
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--headroom", type=float, default=0.98, help="limiter rate / limit")
    args = parser.parse_args()
    result = run(
        deks=args.deks,
        limit=args.limit,
        window=args.window,
        latency=args.latency,
        key_size=args.key_size,
        workers=args.workers,
        headroom=args.headroom,
    )
    print(
        f"rewrapped {result.deks} DEKs in {result.seconds:.1f} s against a vault limit of "
        f"{args.limit}/{args.window:g} s, {args.latency * 1000:g} ms latency, RSA {args.key_size}"
    )
    print(f"vault calls per second   {result.calls_per_second:8.2f}")
    print(f"limit per second         {result.limit_per_second:8.2f}")
    print(f"fraction of the limit    {result.fraction:8.3f}")
    print(f"vault calls per DEK      {result.unwrap_calls / result.deks:8.3f}")
    print(f"throttled (429) answers  {result.throttled:8d}")
    print(f"failed DEKs              {result.failed:8d}")
    if result.failed:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
