"""Rewrap throughput on PostgreSQL with 1, 2 and 4 worker processes, against a bare UPDATE.

    .venv/bin/python bench/rewrap_postgres.py [--deks 100000] [--batch 1000] [--workers 1,2,4]
                                              [--url postgresql://...]

Without ``--url`` it starts a throwaway cluster (``tests/servers/postgres.py``: loopback,
``fsync=off``, ``synchronous_commit=off``), so figures are about CPU and round trips, not
disks. With ``--url`` it creates its table in that (empty) database.

The table holds ``--deks`` DEKs wrapped by a local-keyring provider. For each worker count
``W`` the run moves every DEK to a new MEK version six times, vacuuming between moves:

1-3. **bare UPDATE**, three ways: ``executemany`` of one UPDATE per row (psycopg pipelines
     it), ``COPY`` into a temporary table plus one ``UPDATE ... FROM``, and one
     ``UPDATE ... FROM unnest(arrays)``. Each of the W processes has its shard's rows already
     read and rewrapped before the clock starts; only the UPDATEs are timed. No
     compare-and-swap, no read, no crypto: the ceiling.
4.   **engine**: W processes each run ``field_encrypt.rotation.migrate`` (what
     ``field-encrypt migrate --worker I/W`` runs) on the PostgreSQL runtime and ledger:
     keyset scan of its shard, unwrap -> wrap -> unwrap-and-compare check per DEK,
     compare-and-swap batch write, cache invalidation, one ledger checkpoint per batch.
5.   **loop**: the same work without the engine: ``scan(shard=(i, W),
     where=ScanFilter(exclude_version=target, shard=...))`` -> ``provider.rewrap`` -> ``replace_wraps``; no check, no
     ledger (what the store alone costs).
6.   **pipelined**: the loop with batch k's write in flight while batch k+1 is read and
     rewrapped (psycopg releases the GIL while it waits).

Every process uses the same ``PostgresDatabase`` settings and the same batch size. The figure
that matters is the engine's DEKs/s divided by the best bare UPDATE's rows/s at the same W.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import sys
import tempfile
import time
import uuid
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests.servers

from sqlalchemy import text

from field_encrypt.backends.base import DekRecord, ScanFilter, WrapUpdate
from field_encrypt.backends.postgres.db import PostgresDatabase
from field_encrypt.backends.postgres.dek_store import PostgresDekStore
from field_encrypt.backends.sharding import bucket_of
from field_encrypt.config import load_settings
from field_encrypt.providers.base import dek_context
from field_encrypt.providers.local import LocalKeyProvider
from field_encrypt.rotation import MigrationOptions, migrate, open_ledger
from field_encrypt.runtime import open_runtime

PRODUCT = "bench"
MEK = "bench-mek"
METHODS = ("executemany", "copy", "unnest")
LOOPS = ("engine", "loop", "pipelined")


@dataclass(frozen=True)
class Job:
    url: str
    keyring: str
    index: int
    count: int
    batch: int
    target: str
    method: str  # one of METHODS, or "rewrap"

    @property
    def rows(self) -> ScanFilter:
        """This worker's part of the rows not yet on the target."""
        return ScanFilter(exclude_version=self.target, shard=(self.index, self.count))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--deks", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--workers", default="1,2,4")
    parser.add_argument("--rounds", type=int, default=3, help="best of this many (noisy hosts)")
    parser.add_argument("--url", help="an empty PostgreSQL database (default: a throwaway one)")
    args = parser.parse_args()
    workers = [int(w) for w in args.workers.split(",")]

    with tempfile.TemporaryDirectory(prefix="rewrap-bench-") as scratch:
        keyring = str(Path(scratch) / "keyring.json")
        if args.url:
            run(args.url, keyring, args.deks, args.batch, workers, args.rounds)
            return
        from tests.servers.postgres import PostgresServer

        with PostgresServer() as server:
            url = server.create_database("rewrap_bench")
            run(url, keyring, args.deks, args.batch, workers, args.rounds)


def run(url: str, keyring: str, deks: int, batch: int, workers: list[int], rounds: int) -> None:
    provider = LocalKeyProvider(keyring, mek_name=MEK, refresh_seconds=0)
    database = PostgresDatabase(url)
    store = PostgresDekStore(database, product=PRODUCT)
    version = database.execute(text("SHOW server_version"))[0][0]
    print(
        f"PostgreSQL {version}, {os.cpu_count()} CPUs, {deks} DEKs, batch {batch}, "
        f"best of {rounds} rounds"
    )
    started = time.perf_counter()
    populate(database, provider, deks)
    print(f"populated in {time.perf_counter() - started:.1f} s")
    print(f"load average: {' '.join(f'{x:.2f}' for x in os.getloadavg())}\n")

    print(f"{'W':>2}  {'method':<12} {'rows/s':>9}  {'vs best bare':>12}")
    results: dict[int, dict[str, float]] = {}
    for count in workers:
        rates: dict[str, float] = {}
        for _ in range(rounds):  # interleaved, so a busy moment hits every method alike
            for method in (*METHODS, *LOOPS):
                target = provider.create_version().version
                vacuum(database)
                rate = trial(url, keyring, count, batch, target, method, deks)
                assert store.count_not_on(target) == 0, f"{method} left DEKs behind"
                rates[method] = max(rate, rates.get(method, 0.0))
        best = max(rates[m] for m in METHODS)
        for method, rate in rates.items():
            print(f"{count:>2}  {method:<12} {rate:>9,.0f}  {rate / best:>11.0%}")
        results[count] = rates
    database.close()
    print(f"\nload average at the end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")

    print("\nrewrap vs best bare UPDATE:")
    for count, rates in results.items():
        best_method = max(METHODS, key=lambda m: rates[m])
        best = rates[best_method]
        print(
            f"  W={count}: bare {best_method} {best:,.0f} rows/s; "
            + ", ".join(f"{m} {rates[m]:,.0f} DEKs/s ({rates[m] / best:.0%})" for m in LOOPS)
        )


def populate(database: PostgresDatabase, provider: LocalKeyProvider, deks: int) -> None:
    """``deks`` DEKs wrapped under version 1, loaded with COPY."""
    with database.engine.connect() as conn:
        raw: Any = conn.connection.driver_connection
        with raw.cursor() as cur:
            copy_sql = (
                "COPY dek_store (dek_id, product, bucket, mek_name, mek_version, wrapped, "
                "algorithm) FROM STDIN"
            )
            with cur.copy(copy_sql) as copy:
                for _ in range(deks):
                    dek_id = uuid.uuid4().hex
                    wrapped = provider.wrap(os.urandom(32), context=dek_context(PRODUCT, dek_id))
                    copy.write_row(
                        (
                            dek_id,
                            PRODUCT,
                            bucket_of(dek_id),
                            MEK,
                            wrapped.mek_version,
                            wrapped.ciphertext,
                            wrapped.algorithm,
                        )
                    )
        raw.commit()


def vacuum(database: PostgresDatabase) -> None:
    with database.engine.connect() as conn:
        conn.connection.driver_connection.autocommit = True  # type: ignore[union-attr]
        conn.exec_driver_sql("VACUUM (ANALYZE) dek_store")


def trial(
    url: str, keyring: str, count: int, batch: int, target: str, method: str, deks: int
) -> float:
    """Rows (or DEKs) per second of one move of every DEK to ``target`` by ``count`` processes."""
    context = mp.get_context("spawn")
    ready = context.Queue()
    go = context.Event()
    done = context.Queue()
    processes = [
        context.Process(
            target=worker,
            args=(Job(url, keyring, i, count, batch, target, method), ready, go, done),
        )
        for i in range(count)
    ]
    for process in processes:
        process.start()
    for _ in processes:
        ready.get()
    started = time.perf_counter()
    go.set()
    moved = sum(done.get() for _ in processes)
    elapsed = time.perf_counter() - started
    for process in processes:
        process.join()
    assert moved == deks, f"{method}: moved {moved} of {deks}"
    return moved / elapsed


def worker(job: Job, ready: Any, go: Any, done: Any) -> None:
    provider = LocalKeyProvider(job.keyring, mek_name=MEK, refresh_seconds=0)
    database = PostgresDatabase(job.url, pool_size=2, max_overflow=0)
    store = PostgresDekStore(database, product=PRODUCT)
    if job.method == "engine":
        runtime = open_runtime(
            load_settings(
                {
                    "FIELD_ENCRYPT_KEY_PROVIDER": "local",
                    "FIELD_ENCRYPT_KEYRING": job.keyring,
                    "FIELD_ENCRYPT_MEK_NAME": MEK,
                    "FIELD_ENCRYPT_DATABASE": job.url,
                }
            ),
            product=PRODUCT,
            collections={},
        )
        ledger = open_ledger(runtime)  # creates the ledger tables before the clock starts
        options = MigrationOptions(
            mode="rewrap-deks",
            new_version=job.target,
            batch_size=job.batch,
            worker=(job.index, job.count),
        )
        ready.put(True)
        go.wait()
        done.put(migrate(runtime, ledger, options).processed)
        runtime.close()
    elif job.method in LOOPS:
        store.count_not_on(job.target)  # connect before the clock starts
        ready.put(True)
        go.wait()
        loop = rewrap_shard if job.method == "loop" else rewrap_shard_pipelined
        done.put(loop(store, provider, job))
    else:
        rows = prepared_rows(store, provider, job)
        with database.engine.connect() as conn:
            raw: Any = conn.connection.driver_connection
            ready.put(True)
            go.wait()
            for start in range(0, len(rows), job.batch):
                BARE[job.method](raw, rows[start : start + job.batch])
        done.put(len(rows))
    database.close()


def rewrap_shard(store: PostgresDekStore, provider: LocalKeyProvider, job: Job) -> int:
    """The rotation loop on one shard: scan, rewrap, compare-and-swap; DEKs moved."""
    moved = 0
    cursor = None
    while True:
        page = store.scan(cursor=cursor, limit=job.batch, where=job.rows)
        updates = rewrapped(provider, page.records, job.target)
        lost = store.replace_wraps(updates)
        moved += len(updates) - len(lost)
        if page.cursor is None:
            return moved
        cursor = page.cursor


def rewrap_shard_pipelined(store: PostgresDekStore, provider: LocalKeyProvider, job: Job) -> int:
    """The same loop, with batch k's write in flight while batch k+1 is read and rewrapped.

    psycopg releases the GIL while it waits for the server, so the client's crypto and the
    server's UPDATE run at the same time. The next page starts after the previous cursor,
    so it never holds a row of the batch being written.
    """
    moved = 0
    cursor = None
    writing: Future[list[str]] | None = None
    sizes: list[int] = []
    with ThreadPoolExecutor(1, thread_name_prefix="writer") as writer:
        while True:
            page = store.scan(cursor=cursor, limit=job.batch, where=job.rows)
            updates = rewrapped(provider, page.records, job.target)
            if writing is not None:
                moved += sizes.pop() - len(writing.result())
            writing = writer.submit(store.replace_wraps, updates)
            sizes.append(len(updates))
            if page.cursor is None:
                return moved + sizes.pop() - len(writing.result())
            cursor = page.cursor


def rewrapped(
    provider: LocalKeyProvider, records: list[DekRecord], target: str
) -> list[WrapUpdate]:
    updates = []
    for record in records:
        wrapped = provider.rewrap(
            record.wrapped,
            from_version=record.mek_version,
            context=dek_context(PRODUCT, record.dek_id),
            to_version=target,
        )
        updates.append(
            WrapUpdate(
                record=record,
                mek_version=wrapped.mek_version,
                wrapped=wrapped.ciphertext,
                algorithm=wrapped.algorithm,
            )
        )
    return updates


def prepared_rows(
    store: PostgresDekStore, provider: LocalKeyProvider, job: Job
) -> list[tuple[int, str, bytes, str]]:
    """The shard's rows, read and rewrapped before the clock starts: (seq, version, wrap, alg)."""
    rows = []
    cursor = None
    while True:
        page = store.scan(cursor=cursor, limit=job.batch, shard=(job.index, job.count))
        for record in page.records:
            wrapped = provider.rewrap(
                record.wrapped,
                from_version=record.mek_version,
                context=dek_context(PRODUCT, record.dek_id),
                to_version=job.target,
            )
            assert isinstance(record.row, int)
            rows.append((record.row, wrapped.mek_version, wrapped.ciphertext, wrapped.algorithm))
        if page.cursor is None:
            return rows
        cursor = page.cursor


def bare_executemany(raw: Any, rows: list[tuple[int, str, bytes, str]]) -> None:
    with raw.transaction(), raw.cursor() as cur:
        cur.executemany(
            "UPDATE dek_store SET mek_version = %s, wrapped = %s, algorithm = %s, "
            "updated_at = clock_timestamp(), revision = revision + 1 WHERE seq = %s",
            [(v, w, a, s) for s, v, w, a in rows],
        )


def bare_copy(raw: Any, rows: list[tuple[int, str, bytes, str]]) -> None:
    with raw.transaction(), raw.cursor() as cur:
        cur.execute(
            "CREATE TEMP TABLE wraps (seq bigint, mek_version text, wrapped bytea, "
            "algorithm text) ON COMMIT DROP"
        )
        with cur.copy("COPY wraps (seq, mek_version, wrapped, algorithm) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)
        cur.execute(
            "UPDATE dek_store AS d SET mek_version = u.mek_version, wrapped = u.wrapped, "
            "algorithm = u.algorithm, updated_at = clock_timestamp(), revision = d.revision + 1 "
            "FROM wraps AS u WHERE d.seq = u.seq"
        )


def bare_unnest(raw: Any, rows: list[tuple[int, str, bytes, str]]) -> None:
    with raw.transaction(), raw.cursor() as cur:
        cur.execute(
            "UPDATE dek_store AS d SET mek_version = u.mek_version, wrapped = u.wrapped, "
            "algorithm = u.algorithm, updated_at = clock_timestamp(), revision = d.revision + 1 "
            "FROM unnest(%b::bigint[], %b::text[], %b::bytea[], %b::text[]) "
            "AS u(seq, mek_version, wrapped, algorithm) WHERE d.seq = u.seq",
            [
                [r[0] for r in rows],
                [r[1] for r in rows],
                [r[2] for r in rows],
                [r[3] for r in rows],
            ],
        )


BARE = {"executemany": bare_executemany, "copy": bare_copy, "unnest": bare_unnest}


if __name__ == "__main__":
    main()
