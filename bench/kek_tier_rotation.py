"""MEK rotation behind the KEK tier vs. the direct layout, against one throttled Key Vault.

    .venv/bin/python bench/kek_tier_rotation.py [--dek-count 20000] [--direct-deks 250]
        [--limit 25] [--window 1] [--latency 0.02] [--key-size 4096] [--max-rps 24.5]

    .venv/bin/python bench/kek_tier_rotation.py --dek-count 1000000 --direct-deks 10000

In one run, against the local Key Vault server (``tests/servers/keyvault.py``) throttled at
``--limit`` requests per ``--window`` seconds (default 25 per second) with ``--latency``
added to each crypto call:

* **tier**: ``--dek-count`` DEKs wrapped under one KEK (seeded in bulk with SQLite
  ``executemany``, wrapped locally), the KEK wrapped under MEK version 1; then
  ``migrate --mode rewrap-deks`` to version 2 through the engine
  (``field_encrypt.rotation.migrate``), which rewraps the KEK only;
* **direct**: ``--direct-deks`` DEKs wrapped directly under MEK version 1 (another key in the
  same vault), rewrapped to version 2 by the same engine at the same ``--max-rps``.

For each it reports the vault requests the rotation made (counted by the server) and its
seconds, checks that no DEK is left off version 2 (``field_encrypt.usage.count_not_on``) and
that DEKs still decrypt, and extrapolates the direct layout to ``--dek-count`` DEKs.
Goal: the tier rotates 1 million DEKs in fewer than 100 vault requests, in under a minute.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from field_encrypt.backends.sqlite.db import SqliteDatabase
from field_encrypt.backends.sqlite.dek_store import SqliteDekStore, bucket_of
from field_encrypt.backends.sqlite.kek_store import SqliteKekStore
from field_encrypt.backends.sqlite.ledger import SqliteRunLedger
from field_encrypt.config import load_settings
from field_encrypt.envelope import FieldEncryptor
from field_encrypt.products import ProductRuntime
from field_encrypt.providers.base import KeyProvider, dek_context
from field_encrypt.providers.kek_tier import KekTierProvider
from field_encrypt.rotation import MigrationOptions, RunReport, migrate
from field_encrypt.usage import count_not_on

ROOT = Path(__file__).resolve().parents[1]
PRODUCT = "bench"


@dataclass(frozen=True, slots=True)
class Leg:
    """One layout's rotation."""

    layout: str
    deks: int
    seed_seconds: float
    seconds: float
    requests: int
    throttled: int
    off_target: int
    report: RunReport


def seed(db: SqliteDatabase, provider: KeyProvider, count: int, version: str) -> None:
    """``count`` DEK rows wrapped under ``version`` by ``provider``, inserted in bulk."""
    now = time.time()
    for start in range(0, count, 50_000):
        rows = []
        for _ in range(min(50_000, count - start)):
            dek_id = uuid.uuid4().hex
            wrapped = provider.wrap(
                os.urandom(32), context=dek_context(PRODUCT, dek_id), version=version
            )
            rows.append(
                (dek_id, bucket_of(dek_id), PRODUCT, provider.mek_name, wrapped.mek_version,
                 wrapped.ciphertext, wrapped.algorithm, now, now)
            )  # fmt: skip
        with db.transaction() as tx:
            tx.executemany(
                "INSERT INTO dek_store (dek_id, bucket, product, mek_name, mek_version, wrapped, "
                "algorithm, created_at, updated_at, revision) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 1)",
                rows,
            )


def _runtime(
    provider: KeyProvider, db: SqliteDatabase, tier: KekTierProvider | None
) -> ProductRuntime:
    store = SqliteDekStore(db, product=PRODUCT)
    layout = "kek" if tier is not None else "direct"
    return ProductRuntime(
        settings=load_settings({"FIELD_ENCRYPT_KEY_LAYOUT": layout}),
        provider=provider,
        dek_store=store,
        encryptor=FieldEncryptor(product=PRODUCT, provider=provider, store=store, collections={}),
        documents={},
        database=db,
        resources=[db],
        kek_tier=tier,
    )


def _leg(
    server: Any,
    runtime: ProductRuntime,
    *,
    layout: str,
    deks: int,
    seed_seconds: float,
    new: str,
    options: MigrationOptions,
) -> Leg:
    server.reset_stats()
    started = time.monotonic()
    report = migrate(runtime, SqliteRunLedger(runtime.database), options)
    seconds = time.monotonic() - started
    stats = server.stats
    requests = stats.get("requests", 0) - stats.get("challenges", 0)
    return Leg(
        layout=layout,
        deks=deks,
        seed_seconds=seed_seconds,
        seconds=seconds,
        requests=requests,
        throttled=stats.get("throttled", 0),
        off_target=count_not_on(runtime, new),
        report=report,
    )


def _check_reads(runtime: ProductRuntime, provider: KeyProvider, sample: int = 20) -> None:
    """A few DEKs, unwrapped through a fresh provider (fresh KEK cache), are 32 bytes each."""
    page = runtime.dek_store.scan(cursor=None, limit=sample)
    for record in page.records:
        dek = provider.unwrap(
            record.wrapped,
            version=record.mek_version,
            context=dek_context(PRODUCT, record.dek_id),
        )
        assert len(dek) == 32


def run(
    *,
    dek_count: int,
    direct_deks: int,
    limit: int,
    window: float,
    latency: float,
    key_size: int,
    max_rps: float,
    concurrency: int = 8,
) -> tuple[Leg, Leg]:
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))  # the local Key Vault server lives with the tests
    from azure.identity import ClientSecretCredential
    from tests.servers.keyvault import KeyVaultServer

    from field_encrypt.providers.azure_key_vault import AzureKeyVaultProvider

    def akv(server: Any, credential: Any, name: str) -> AzureKeyVaultProvider:
        return AzureKeyVaultProvider(
            vault_url=server.url,
            mek_name=name,
            credential=credential,
            key_size=key_size,
            client_options={
                "connection_verify": str(server.ca_cert),
                "verify_challenge_resource": False,
            },
        )

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
        akv(server, credential, "bench-tier-mek") as tier_mek,
        akv(server, credential, "bench-direct-mek") as direct_mek,
    ):
        # -- the tier: one KEK under MEK version 1, every DEK under the KEK ---------------
        tier_db = SqliteDatabase(Path(tmp) / "tier.db")
        tier_mek.create_version()
        tier = KekTierProvider(
            tier_mek, SqliteKekStore(tier_db, product=PRODUCT), product=PRODUCT, layout="kek"
        )
        tier_rt = _runtime(tier, tier_db, tier)
        started = time.monotonic()
        seed(tier_db, tier, dek_count, tier.dek_version())
        tier_seed = time.monotonic() - started
        # -- direct: DEKs wrapped under MEK version 1 (Key Vault wraps locally) -----------
        direct_db = SqliteDatabase(Path(tmp) / "direct.db")
        old = direct_mek.create_version().version
        direct_rt = _runtime(direct_mek, direct_db, None)
        started = time.monotonic()
        seed(direct_db, direct_mek, direct_deks, old)
        direct_seed = time.monotonic() - started
        # -- rotate both, throttled --------------------------------------------------------
        tier_new = tier_mek.create_version().version
        direct_new = direct_mek.create_version().version
        for provider, version in ((tier_mek, tier_new), (direct_mek, direct_new)):
            provider.wrap(os.urandom(32), context=b"warm", version=version)  # public key cached
        server.set_throttle(limit, window)
        options = MigrationOptions(mode="rewrap-deks", max_rps=max_rps, concurrency=concurrency)
        try:
            tier_leg = _leg(
                server, tier_rt, layout="kek tier", deks=dek_count, seed_seconds=tier_seed,
                new=tier_new, options=options,
            )  # fmt: skip
            direct_leg = _leg(
                server, direct_rt, layout="direct", deks=direct_deks, seed_seconds=direct_seed,
                new=direct_new, options=options,
            )  # fmt: skip
            server.set_throttle(None)
            fresh = KekTierProvider(tier_mek, tier.keks, product=PRODUCT)
            _check_reads(tier_rt, fresh)
            _check_reads(direct_rt, direct_mek)
        finally:
            tier_rt.close()
            direct_rt.close()
    return tier_leg, direct_leg


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dek-count", type=int, default=20_000, help="DEKs behind the tier")
    parser.add_argument("--direct-deks", type=int, default=250, help="DEKs in the direct layout")
    parser.add_argument("--limit", type=int, default=25, help="vault requests per window")
    parser.add_argument("--window", type=float, default=1.0, help="seconds")
    parser.add_argument("--latency", type=float, default=0.02, help="seconds per crypto call")
    parser.add_argument("--key-size", type=int, default=4096)
    parser.add_argument(
        "--max-rps", type=float, default=None, help="engine's rate (default 0.98 x the limit)"
    )
    args = parser.parse_args()
    max_rps = args.max_rps if args.max_rps is not None else 0.98 * args.limit / args.window
    tier, direct = run(
        dek_count=args.dek_count,
        direct_deks=args.direct_deks,
        limit=args.limit,
        window=args.window,
        latency=args.latency,
        key_size=args.key_size,
        max_rps=max_rps,
    )
    print(
        f"vault throttled at {args.limit}/{args.window:g} s, {args.latency * 1000:g} ms latency, "
        f"RSA {args.key_size}, engine --max-rps {max_rps:g}"
    )
    print(f"{'layout':10} {'DEKs':>10} {'seed s':>8} {'rotate s':>9} {'vault req':>10} "
          f"{'429s':>5} {'off v2':>7} status")  # fmt: skip
    for leg in (tier, direct):
        print(
            f"{leg.layout:10} {leg.deks:>10,} {leg.seed_seconds:>8.1f} {leg.seconds:>9.2f} "
            f"{leg.requests:>10,} {leg.throttled:>5} {leg.off_target:>7} {leg.report.status}"
        )
    scale = tier.deks / direct.deks
    print(
        f"direct layout extrapolated to {tier.deks:,} DEKs: {direct.requests * scale:,.0f} vault "
        f"requests, {direct.seconds * scale:,.0f} s ({direct.seconds * scale / 3600:.1f} h)"
    )
    print(
        f"tier: {tier.requests} vault requests and {tier.seconds:.2f} s for {tier.deks:,} DEKs "
        f"(goal: < 100 requests, < 60 s)"
    )
    if tier.off_target or direct.off_target or tier.report.failure_count:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
