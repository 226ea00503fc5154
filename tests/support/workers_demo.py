"""Rotation by several worker processes that share only a database: a demonstration.

    .venv/bin/python -m tests.support.workers_demo postgres [--deks 3000] [--workers 3]
    .venv/bin/python -m tests.support.workers_demo cosmos

Starts a throwaway PostgreSQL cluster or the Cosmos DB test server, seeds the sample
product with ``--deks`` encrypted documents under MEK version 1, creates version 2, and
starts ``--workers`` ``field-encrypt migrate --worker I/N`` processes at once; worker 2 is
killed with SIGKILL after its second batch. A survivor that finishes after the kill takes
its shard over; if none did, it re-runs worker 2 until the shard is free. Then it prints ``status`` and ``verify`` as an operator would see them.
``scripts/demo-workers`` runs it for both stores.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from field_encrypt.config import load_settings
from tests.support.sample_product import product
from tests.support.seed import seed

ROOT = Path(__file__).resolve().parents[2]
PRODUCT = "tests.support.sample_product:product"
KILLABLE = "tests.support.sample_product:killable_product"


@contextmanager
def database(kind: str) -> Iterator[dict[str, str]]:
    """FIELD_ENCRYPT_DATABASE (and the Cosmos key) of a fresh database of ``kind``."""
    if kind == "postgres":
        from tests.servers.postgres import PostgresServer

        with PostgresServer() as server:
            yield {"FIELD_ENCRYPT_DATABASE": server.create_database("demo")}
        return
    from tests.servers.cosmos import CosmosServer

    with CosmosServer() as server:
        host = urllib.parse.urlsplit(server.url).netloc
        query = urllib.parse.urlencode({"database": "demo", "ca_cert": str(server.ca_cert)})
        yield {
            "FIELD_ENCRYPT_DATABASE": f"cosmos://{host}/?{query}",
            "FIELD_ENCRYPT_COSMOS_KEY": server.key,
        }


def cli(env: dict[str, str], *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "field_encrypt.cli", *args],
        cwd=ROOT,
        env={**os.environ, **env, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _completed(env: dict[str, str]) -> bool:
    out, _ = cli(env, "status", "--product", PRODUCT, "--json").communicate()
    runs = json.loads(out)["runs"]
    return bool(runs) and runs[0]["state"] == "completed"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("kind", choices=["postgres", "cosmos"])
    parser.add_argument("--deks", type=int, default=3000)
    parser.add_argument("--workers", type=int, default=3)
    args = parser.parse_args()
    n = args.workers
    with tempfile.TemporaryDirectory() as tmp, database(args.kind) as db:
        env = {
            **db,
            "FIELD_ENCRYPT_KEY_PROVIDER": "local",
            "FIELD_ENCRYPT_KEYRING": f"{tmp}/keyring.json",
        }
        print(f"== {args.kind}: {env['FIELD_ENCRYPT_DATABASE'].split('?')[0]}")
        runtime = product.open(load_settings(env))
        seed(runtime, args.deks)
        runtime.provider.create_version()
        runtime.close()
        print(f"seeded {args.deks} documents, one DEK each, under MEK version 1; v2 created")

        common = ("--mode", "rewrap-deks", "--batch-size", "100", "--lease-ttl", "5")
        common += ("--max-rps", "900", "--json")  # about 1 s of work per worker
        started = time.monotonic()
        procs = []
        for i in range(1, n + 1):
            killed = i == 2
            extra = {"SAMPLE_KILL_AT": "store:2"} if killed else {}
            name = KILLABLE if killed else PRODUCT
            procs.append(
                cli({**env, **extra}, "migrate", "--product", name, "--worker", f"{i}/{n}", *common)
            )
        for i, proc in enumerate(procs, 1):
            out, _ = proc.communicate()
            if proc.returncode != 0:
                print(
                    f"worker {i}/{n}: exit {proc.returncode} (SIGKILL)"
                    if proc.returncode == -9
                    else f"worker {i}/{n}: exit {proc.returncode}"
                )
                continue
            report = json.loads(out)
            print(
                f"worker {i}/{n}: {report['status']}, processed {report['processed']} DEKs "
                f"of run {report['run_id']}"
            )
        print(f"(all workers ended after {time.monotonic() - started:.1f} s)")

        while not _completed(env):
            rerun = cli(env, "migrate", "--product", PRODUCT, "--worker", f"2/{n}", *common)
            out, err = rerun.communicate()
            if rerun.returncode == 0:
                report = json.loads(out)
                print(
                    f"re-run of worker 2/{n}: {report['status']}, processed "
                    f"{report['processed']} DEKs (resumed: {report['resumed']})"
                )
                break
            print(
                f"re-run of worker 2/{n}: refused (exit {rerun.returncode}): "
                + err.strip().splitlines()[-1][:150]
            )
            time.sleep(1)  # the dead worker's lease lasts 5 s
        else:
            print("no re-run needed: a surviving worker took the dead worker's shard over")

        status, _ = cli(env, "status", "--product", PRODUCT, "--json").communicate()
        run = json.loads(status)["runs"][0]
        print(
            f"status: run {run['run_id']} {run['state']}, changed {run['changed']}; shards: "
            + ", ".join(f"{s['shard']} {s['status']} ({s['changed']})" for s in run["shards"])
        )
        verify, _ = cli(
            env, "verify", "--product", PRODUCT, "--mek-version", "2", "--json"
        ).communicate()
        report = json.loads(verify)
        print(
            f"verify: clean={report['clean']}, DEKs not on version 2: "
            f"{report['deks_not_on_version']}, by version: {report['deks_by_version']}"
        )


if __name__ == "__main__":
    main()
