"""Rewrap throughput of the rotation engine against a throttled Key Vault: what fraction of
the vault's limit ``field-encrypt migrate --mode rewrap-deks`` sustains, with zero failed DEKs.

    .venv/bin/python bench/akv_rewrap.py [--deks 1500] [--limit 500] [--window 10]
        [--latency 0.02] [--key-size 4096] [--concurrency 8] [--max-rps LIMIT/WINDOW]
        [--verify-sample 0.01] [--batch-size 1000]

It starts the local Key Vault server (``tests/servers/keyvault.py``) with ``--latency``
seconds added to every crypto call and a sliding-window throttle of ``--limit`` requests per
``--window`` seconds. The default, 500 per 10 s, is Azure's published limit for "all other
transactions" on RSA 4,096-bit *software* keys (the runbook's ``az keyvault key create --kty
RSA --size 4096``); HSM-protected RSA 4,096-bit keys get 250. It stores ``--deks`` DEKs wrapped
under version 1 in a SQLite dek_store (the wrap is local: no vault call), creates version 2,
warms the public-key cache, then runs the engine the CLI runs, ``field_encrypt.rotation.
migrate`` with ``--concurrency`` workers and ``--max-rps`` (default: the throttle limit), and
its sampled check (``--verify-sample``; each batch's first DEK is always checked).

The figure: ``vault requests per second / (limit / window)`` over the engine's run (every
authenticated request, the throttled ones included, as the vault counts them), the same
without the 429s (requests the vault served), the DEKs that failed (must be 0) and vault
requests per DEK.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from field_encrypt.backends.sqlite.db import SqliteDatabase
from field_encrypt.backends.sqlite.dek_store import SqliteDekStore
from field_encrypt.backends.sqlite.ledger import SqliteRunLedger
from field_encrypt.config import load_settings
from field_encrypt.envelope import FieldEncryptor
from field_encrypt.products import ProductRuntime
from field_encrypt.providers.base import KeyProvider, dek_context
from field_encrypt.rotation import MigrationOptions, RunReport, migrate

ROOT = Path(__file__).resolve().parents[1]
PRODUCT = "bench"


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
    requests: int
    report: RunReport

    @property
    def calls_per_dek(self) -> float:
        return self.requests / self.deks

    @property
    def useful_fraction(self) -> float:
        """Like ``fraction``, counting only the requests the vault served (not the 429s)."""
        return (self.requests - self.throttled) / self.seconds / self.limit_per_second


def seed(runtime: ProductRuntime, provider: KeyProvider, deks: int) -> None:
    """``deks`` DEK rows wrapped under the current version (Key Vault wraps locally)."""
    store = runtime.dek_store
    for _ in range(deks):
        dek_id = os.urandom(16).hex()
        wrapped = provider.wrap(os.urandom(32), context=dek_context(PRODUCT, dek_id))
        store.create(
            dek_id=dek_id,
            mek_name=provider.mek_name,
            mek_version=wrapped.mek_version,
            wrapped=wrapped.ciphertext,
            algorithm=wrapped.algorithm,
        )


def open_runtime(provider: KeyProvider, directory: Path) -> ProductRuntime:
    """A product with no documents: a dek_store and a run ledger in one SQLite file."""
    database = SqliteDatabase(directory / "bench.db")
    store = SqliteDekStore(database, product=PRODUCT)
    return ProductRuntime(
        settings=load_settings({}),
        provider=provider,
        dek_store=store,
        encryptor=FieldEncryptor(product=PRODUCT, provider=provider, store=store, collections={}),
        documents={},
        database=database,
        resources=[database],
    )


def run(
    *,
    deks: int,
    limit: int,
    window: float,
    latency: float,
    key_size: int,
    concurrency: int,
    max_rps: float | None = None,
    verify_sample: float = 0.01,
    batch_size: int = 1000,
) -> Result:
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))  # the local Key Vault server lives with the tests
    from azure.identity import ClientSecretCredential
    from tests.servers.keyvault import KeyVaultServer

    from field_encrypt.providers.azure_key_vault import AzureKeyVaultProvider

    with (
        tempfile.TemporaryDirectory() as tmp,
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
        runtime = open_runtime(provider, Path(tmp))
        try:
            old = provider.create_version().version
            seed(runtime, provider, deks)
            new = provider.create_version().version
            provider.wrap(os.urandom(32), context=b"warm", version=new)  # public key cached
            provider.versions()
            options = MigrationOptions(
                mode="rewrap-deks",
                old_version=old,
                new_version=new,
                batch_size=batch_size,
                concurrency=concurrency,
                max_rps=max_rps if max_rps is not None else limit / window,
                verify_sample=verify_sample,
            )
            server.reset_stats()
            server.set_throttle(limit, window)
            started = time.monotonic()
            report = migrate(runtime, SqliteRunLedger(runtime.database), options)
            seconds = time.monotonic() - started
            stats = server.stats
        finally:
            runtime.close()
    requests = stats.get("requests", 0) - stats.get("challenges", 0)
    per_second = requests / seconds
    return Result(
        deks=deks,
        seconds=seconds,
        calls_per_second=per_second,
        limit_per_second=limit / window,
        fraction=per_second / (limit / window),
        failed=report.failure_count,
        throttled=stats.get("throttled", 0),
        unwrap_calls=stats.get("unwrapkey", 0),
        requests=requests,
        report=report,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--deks", type=int, default=1500)
    parser.add_argument("--limit", type=int, default=500, help="requests per window")
    parser.add_argument("--window", type=float, default=10.0, help="seconds")
    parser.add_argument("--latency", type=float, default=0.02, help="seconds per crypto call")
    parser.add_argument("--key-size", type=int, default=4096)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--max-rps", type=float, default=None, help="default: limit / window")
    parser.add_argument("--verify-sample", type=float, default=0.01)
    parser.add_argument("--batch-size", type=int, default=1000)
    args = parser.parse_args()
    result = run(
        deks=args.deks,
        limit=args.limit,
        window=args.window,
        latency=args.latency,
        key_size=args.key_size,
        concurrency=args.concurrency,
        max_rps=args.max_rps,
        verify_sample=args.verify_sample,
        batch_size=args.batch_size,
    )
    print(
        f"engine rewrapped {result.report.counters.changed} of {result.deks} DEKs in "
        f"{result.seconds:.1f} s against a vault limit of {args.limit}/{args.window:g} s, "
        f"{args.latency * 1000:g} ms latency, RSA {args.key_size}, "
        f"--verify-sample {args.verify_sample:g}"
    )
    print(f"vault requests per second {result.calls_per_second:8.2f}")
    print(f"limit per second          {result.limit_per_second:8.2f}")
    print(f"fraction of the limit     {result.fraction:8.3f}  (every request the vault counted)")
    print(f"  served, without 429s    {result.useful_fraction:8.3f}")
    print(f"vault requests per DEK    {result.calls_per_dek:8.3f}")
    print(f"unwrapKey calls           {result.unwrap_calls:8d}")
    print(f"throttled (429) answers   {result.throttled:8d}")
    print(f"failed DEKs               {result.failed:8d}")
    print(f"run status                {result.report.status}")
    if result.failed or result.report.status != "completed":
        raise SystemExit(1)


if __name__ == "__main__":
    main()
