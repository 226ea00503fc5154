"""Rewrap throughput on SQLite with the local provider, against the raw floor of the same run.

    .venv/bin/python bench/rewrap_sqlite.py [--sizes 20000] [--batch-size 1000]
    .venv/bin/python bench/rewrap_sqlite.py --sizes 100000 1000000
    .venv/bin/python bench/rewrap_sqlite.py --cli --sizes 100000 --repeat 3

For each size, in a fresh subprocess (so its peak RSS is its own): seed that many DEKs
wrapped under MEK version 1; then, ``--repeat`` times (best kept, as the machine may be
shared), create a new version and measure

* the floor: AES-GCM unwrap under v1 and wrap under v2 of every DEK with ready ciphers
  (no provider, no checks; a batch's nonces drawn in one ``os.urandom`` call), plus a bare batched ``UPDATE ... WHERE seq = ?`` of the same
  rows in scan order (``executemany``, one transaction per batch);
* the engine: ``field_encrypt.rotation.migrate(mode="rewrap-deks")``, the path the CLI
  runs (scan, provider.rewrap, check that the new wrap unwraps to the same DEK,
  compare-and-swap write, cache invalidation, ledger checkpoint per batch).

Prints DEKs/s for both, the engine's share of the floor's rate, and the peak RSS; then
the CPU seconds (``time.process_time``, every thread of the process) of the floor and of
the engine and their ratio, which a loaded machine disturbs less than wall time.

With ``--cli``, the figure an operator sees: NoteLett's embedded default made by
``field-encrypt init`` (local keyring + SQLite file), the DEKs seeded, then per round a
new version, the same floor, and the real ``field-encrypt migrate --product notelett
--mode rewrap-deks`` run as a subprocess (start-up, pre-run counts, ledger, audit events,
report: everything), timed by wall clock and by its CPU (``RUSAGE_CHILDREN``). A second
run right after, with nothing left to move, gives the fixed cost of a run (start-up,
counts, ledger, audit, report); ``CPU ratio`` is the floor's CPU over the command's.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from cli_startup import run_once  # bench/ is this script's directory: the same timing
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from field_encrypt.backends.sqlite.db import SqliteDatabase
from field_encrypt.backends.sqlite.dek_store import SqliteDekStore, bucket_of
from field_encrypt.backends.sqlite.ledger import SqliteRunLedger
from field_encrypt.cache import DekCache
from field_encrypt.config import load_settings
from field_encrypt.envelope import FieldEncryptor
from field_encrypt.products import ProductRuntime
from field_encrypt.providers.base import dek_context
from field_encrypt.providers.local import LocalKeyProvider
from field_encrypt.rotation import MigrationOptions, migrate

PRODUCT = "bench"
CLI_PRODUCT = "notelett"  # the installed product, on its embedded default


def seed(db: SqliteDatabase, provider: LocalKeyProvider, size: int, product: str = PRODUCT) -> None:
    """``size`` DEKs of ``product`` wrapped under version 1, inserted in bulk."""
    now = time.time()
    for start in range(0, size, 50_000):
        rows = []
        for _ in range(min(50_000, size - start)):
            dek_id = uuid.uuid4().hex
            wrapped = provider.wrap(os.urandom(32), context=dek_context(product, dek_id))
            rows.append(
                (
                    dek_id,
                    bucket_of(dek_id),
                    product,
                    provider.mek_name,
                    "1",
                    wrapped.ciphertext,
                    wrapped.algorithm,
                    now,
                    now,
                )
            )
        with db.transaction() as tx:
            tx.executemany(
                "INSERT INTO dek_store (dek_id, bucket, product, mek_name, mek_version, wrapped, "
                "algorithm, created_at, updated_at, revision) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 1)",
                rows,
            )


def floor(
    db: SqliteDatabase,
    keyring: Path,
    batch: int,
    source: str,
    target: str,
    product: str = PRODUCT,
) -> tuple[float, float, float]:
    """Seconds for the raw crypto and for the bare batched UPDATE of every row, and the
    CPU seconds of both together (the page reads between them not counted in any)."""
    versions = json.loads(keyring.read_text())["versions"]
    keys = {v["version"]: base64.b64decode(v["key"]) for v in versions}
    old, new = AESGCM(keys[source]), AESGCM(keys[target])
    crypto = update = cpu = 0.0
    last = 0
    while True:  # a page at a time, so the floor's memory does not mask the engine's RSS
        rows = db.query(
            "SELECT seq, dek_id, wrapped FROM dek_store WHERE seq > ? ORDER BY seq LIMIT ?",
            (last, batch),
        )
        if not rows:
            return crypto, update, cpu
        last = rows[-1][0]
        started, cpu_started = time.perf_counter(), time.process_time()
        out = []
        nonces = os.urandom(12 * len(rows))  # one system call per batch, as the engine does
        for i, (seq, dek_id, wrapped) in enumerate(rows):
            context = dek_context(product, dek_id)
            dek = old.decrypt(wrapped[:12], wrapped[12:], context)
            nonce = nonces[12 * i : 12 * i + 12]
            out.append((target, nonce + new.encrypt(nonce, dek, context), seq))
        crypto += time.perf_counter() - started
        cpu += time.process_time() - cpu_started
        # Write the original wraps back (same rows, same sizes): the engine still has work.
        originals = [(source, bytes(w), seq) for seq, _, w in rows]
        started, cpu_started = time.perf_counter(), time.process_time()
        with db.transaction() as tx:
            tx.executemany(
                "UPDATE dek_store SET mek_version = ?, wrapped = ? WHERE seq = ?", originals
            )
        update += time.perf_counter() - started
        cpu += time.process_time() - cpu_started


def one(size: int, batch: int, repeat: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        settings = load_settings(
            {
                "FIELD_ENCRYPT_KEY_PROVIDER": "local",
                "FIELD_ENCRYPT_KEYRING": f"{tmp}/keyring.json",
                "FIELD_ENCRYPT_DATABASE": f"{tmp}/bench.db",
            }
        )
        db = SqliteDatabase(settings.database)
        provider = LocalKeyProvider(settings.keyring, mek_name=settings.mek_name)
        store = SqliteDekStore(db, product=PRODUCT)
        t = time.perf_counter()
        seed(db, provider, size)
        seeded = time.perf_counter() - t
        runtime = ProductRuntime(
            settings=settings,
            provider=provider,
            dek_store=store,
            encryptor=FieldEncryptor(
                product=PRODUCT, provider=provider, store=store, collections={}, cache=DekCache()
            ),
            documents={},
            database=db,
        )
        crypto = update = engine = floor_cpu = engine_cpu = float("inf")
        for _ in range(repeat):  # each round rewraps everything onto a fresh version
            source = provider.current_version()
            target = provider.create_version().version
            c, u, fc = floor(db, settings.keyring, batch, source, target)
            crypto, update, floor_cpu = min(crypto, c), min(update, u), min(floor_cpu, fc)
            t, tc = time.perf_counter(), time.process_time()
            report = migrate(
                runtime,
                SqliteRunLedger(db),
                MigrationOptions(mode="rewrap-deks", batch_size=batch),
            )
            engine = min(engine, time.perf_counter() - t)
            engine_cpu = min(engine_cpu, time.process_time() - tc)
            assert report.status == "completed" and report.counters.changed == size, report
            assert store.count_not_on(target) == 0
        db.close()
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {
        "size": size,
        "seed_s": seeded,
        "floor_crypto_s": crypto,
        "floor_update_s": update,
        "engine_s": engine,
        "floor_cpu_s": floor_cpu,
        "engine_cpu_s": engine_cpu,
        "peak_rss_mb": rss_mb,
    }


def cli_run(env: dict[str, str], batch: int) -> tuple[float, float]:
    """Wall and CPU seconds (user + system, ``RUSAGE_CHILDREN``) of one real
    ``field-encrypt migrate --mode rewrap-deks`` run, as an operator starts it."""
    command = [
        str(Path(sys.executable).with_name("field-encrypt")),
        *("migrate", "--product", CLI_PRODUCT, "--mode", "rewrap-deks"),
        *("--batch-size", str(batch)),
    ]
    return run_once(command, env)


def one_cli(size: int, batch: int, repeat: int) -> dict[str, float]:
    """The CLI figure: NoteLett's embedded default (``field-encrypt init``), ``size`` DEKs,
    then per round a new version, the floor, and the real command in a subprocess."""
    with tempfile.TemporaryDirectory() as tmp:
        env = {
            **os.environ,
            "FIELD_ENCRYPT_KEY_PROVIDER": "local",
            "FIELD_ENCRYPT_KEYRING": f"{tmp}/keyring.json",
            "FIELD_ENCRYPT_DATABASE": f"{tmp}/bench.db",
        }
        init = str(Path(sys.executable).with_name("field-encrypt"))
        subprocess.run(
            [init, "init", "--product", CLI_PRODUCT], env=env, check=True, capture_output=True
        )
        settings = load_settings({k: v for k, v in env.items() if k.startswith("FIELD_ENC")})
        db = SqliteDatabase(settings.database)
        provider = LocalKeyProvider(settings.keyring, mek_name=settings.mek_name)
        store = SqliteDekStore(db, product=CLI_PRODUCT)
        seed(db, provider, size, CLI_PRODUCT)
        crypto = update = floor_cpu = cli = cli_cpu = idle = idle_cpu = float("inf")
        for _ in range(repeat):  # each round rewraps everything onto a fresh version
            source = provider.current_version()
            target = provider.create_version().version
            c, u, fc = floor(db, settings.keyring, batch, source, target, CLI_PRODUCT)
            crypto, update, floor_cpu = min(crypto, c), min(update, u), min(floor_cpu, fc)
            wall, cpu = cli_run(env, batch)
            cli, cli_cpu = min(cli, wall), min(cli_cpu, cpu)
            assert store.count_not_on(target) == 0, "the CLI left DEKs behind"
            wall, cpu = cli_run(env, batch)  # nothing left to do: the fixed cost of a run
            idle, idle_cpu = min(idle, wall), min(idle_cpu, cpu)
        db.close()
    return {
        "size": size,
        "floor_crypto_s": crypto,
        "floor_update_s": update,
        "floor_cpu_s": floor_cpu,
        "cli_s": cli,
        "cli_cpu_s": cli_cpu,
        "idle_s": idle,
        "idle_cpu_s": idle_cpu,
    }


def main_cli(args: argparse.Namespace) -> None:
    print(
        f"{'DEKs':>9} {'floor DEKs/s':>13} {'CLI DEKs/s':>11} {'ratio':>6} {'floor s':>8} "
        f"{'CLI s':>7} {'no-op run s':>11} {'floor CPU':>9} {'CLI CPU':>8} {'CPU ratio':>9} "
        f"{'no-op CPU':>9}"
    )
    for size in args.sizes:
        r = one_cli(size, args.batch_size, args.repeat)
        floor_s = r["floor_crypto_s"] + r["floor_update_s"]
        print(
            f"{size:>9,} {size / floor_s:>13,.0f} {size / r['cli_s']:>11,.0f} "
            f"{floor_s / r['cli_s']:>6.0%} {floor_s:>8.2f} {r['cli_s']:>7.2f} "
            f"{r['idle_s']:>11.2f} {r['floor_cpu_s']:>8.2f}s {r['cli_cpu_s']:>7.2f}s "
            f"{r['floor_cpu_s'] / r['cli_cpu_s']:>9.0%} {r['idle_cpu_s']:>8.2f}s"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[20_000])
    parser.add_argument("--batch-size", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=2, help="rounds per size (best kept)")
    parser.add_argument(
        "--cli",
        action="store_true",
        help="time the real `field-encrypt migrate` in a subprocess instead of the engine",
    )
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(one(args.one, args.batch_size, args.repeat)))
        return
    print(f"load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    if args.cli:
        main_cli(args)
        print(f"load average at end:   {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
        return
    print(
        f"{'DEKs':>9} {'floor DEKs/s':>13} {'engine DEKs/s':>14} {'ratio':>6} "
        f"{'crypto s':>9} {'update s':>9} {'engine s':>9} {'peak RSS':>9} "
        f"{'floor CPU':>9} {'engine CPU':>10} {'CPU ratio':>9}"
    )
    for size in args.sizes:
        out = subprocess.run(
            [
                sys.executable,
                __file__,
                "--one",
                str(size),
                "--batch-size",
                str(args.batch_size),
                "--repeat",
                str(args.repeat),
            ],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        r = json.loads(out)
        floor_s = r["floor_crypto_s"] + r["floor_update_s"]
        print(
            f"{size:>9,} {size / floor_s:>13,.0f} {size / r['engine_s']:>14,.0f} "
            f"{floor_s / r['engine_s']:>6.0%} {r['floor_crypto_s']:>9.2f} "
            f"{r['floor_update_s']:>9.2f} {r['engine_s']:>9.2f} {r['peak_rss_mb']:>7.0f}MB "
            f"{r['floor_cpu_s']:>8.2f}s {r['engine_cpu_s']:>9.2f}s "
            f"{r['floor_cpu_s'] / r['engine_cpu_s']:>9.0%}"
        )
    print(f"load average at end:   {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
