"""Rotation past one machine: several ``migrate --worker I/N`` processes share one database.

Each worker is a real ``field-encrypt`` process; the workers know nothing of each other
except what the run ledger in the shared database (PostgreSQL, Cosmos DB) tells them.
One of them is killed with SIGKILL in the middle of its shard; the others finish theirs,
and once the dead worker's lease has expired a re-run takes its shard over, resumes from
its cursor, and completes the run. ``verify`` then finds no DEK left on the old version.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from field_encrypt.config import load_settings
from field_encrypt.rotation import open_ledger
from tests.backends import Backend, backend_for
from tests.cli.helpers import ROOT
from tests.support.sample_product import product
from tests.support.seed import document, read_all, seed

PRODUCT = "tests.support.sample_product:product"
KILLABLE = "tests.support.sample_product:killable_product"
WORKERS = 3
DEKS = 240


@pytest.fixture(params=["postgres", "cosmos"])
def shared(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[Backend, dict[str, str]]:
    """One database every worker reaches, seeded with DEKS documents under MEK version 1."""
    backend = backend_for(request.param, request, tmp_path)
    env = {
        **backend.environ,
        "FIELD_ENCRYPT_KEY_PROVIDER": "local",
        "FIELD_ENCRYPT_KEYRING": str(tmp_path / "keyring.json"),
        "FIELD_ENCRYPT_ENABLED": "true",
    }
    runtime = product.open(load_settings(env))
    try:
        seed(runtime, DEKS)
        assert runtime.provider.create_version().version == "2"
    finally:
        runtime.close()
    return backend, env


def _start(env: dict[str, str], *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "field_encrypt.cli", *args],
        cwd=ROOT,
        env={**_base_env(), **env, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _base_env() -> dict[str, str]:
    import os

    return {k: v for k, v in os.environ.items() if not k.startswith("FIELD_ENCRYPT_")}


def _migrate(worker: int, *extra: str) -> list[str]:
    return [
        "migrate",
        "--mode",
        "rewrap-deks",
        "--worker",
        f"{worker}/{WORKERS}",
        "--batch-size",
        "10",
        "--max-rps",  # about 4 s of work per worker, so the three overlap
        "60",
        "--json",
        *extra,
    ]


def _finish(process: subprocess.Popen[str]) -> tuple[int, dict[str, Any] | None, str]:
    stdout, stderr = process.communicate(timeout=120)
    report = json.loads(stdout) if process.returncode == 0 else None
    return process.returncode, report, stderr


def test_workers_split_the_rewrap_through_the_database(
    shared: tuple[Backend, dict[str, str]],
) -> None:
    """Three worker processes each take one shard; together they rewrap every DEK once."""
    _, env = shared
    workers = [_start(env, *_migrate(i, "--product", PRODUCT)) for i in range(1, WORKERS + 1)]
    results = [_finish(w) for w in workers]
    # A worker that starts late (a loaded machine) may find every shard already held
    # (exit 6, refused) or the run already done (a new, empty run): both are correct.
    assert {code for code, _, _ in results} <= {0, 6}, [err[-500:] for _, _, err in results]
    reports = [r for _, r, _ in results if r is not None and r["processed"]]
    assert len(reports) >= 2  # the work was split between processes
    assert len({r["run_id"] for r in reports}) == 1  # one run
    assert sum(r["processed"] for r in reports) == DEKS  # nothing done twice

    runtime = product.open(load_settings(env))
    try:
        run = open_ledger(runtime).get_run(reports[0]["run_id"])
        assert run.status == "completed"
        assert [s.status for s in run.shards] == ["done"] * WORKERS
        assert run.counters.changed == DEKS
        assert runtime.dek_store.count_by_version() == {"2": DEKS}
    finally:
        runtime.close()


def test_a_killed_workers_shard_is_taken_over_and_verify_is_clean(
    shared: tuple[Backend, dict[str, str]],
) -> None:
    """Worker 2 dies mid-shard; 1 and 3 finish theirs; after its lease expires a re-run of
    worker 2 resumes its shard; verify then reports 0 DEKs left on version 1."""
    _, env = shared
    ttl = ("--lease-ttl", "4")
    killed = {**env, "SAMPLE_KILL_AT": "store:3"}  # SIGKILL right after its 3rd batch commits
    workers = [
        _start(killed, *_migrate(2, "--product", KILLABLE, *ttl)),
        _start(env, *_migrate(1, "--product", PRODUCT, *ttl)),
        _start(env, *_migrate(3, "--product", PRODUCT, *ttl)),
    ]
    dead, first, third = (_finish(w) for w in workers)
    assert dead[0] == -signal.SIGKILL
    for code, report, stderr in (first, third):
        # A survivor that finished after worker 2 died (a process of this host: its lease
        # is freed at once) or after its lease expired took its shard over and completed
        # the run; one that finished before leaves it. (One that started late may find
        # every shard held: refused, exit 6.)
        assert code in (0, 6), stderr[-500:]
        assert report is None or report["status"] in ("in_progress", "completed")

    runtime = product.open(load_settings(env))
    try:
        ledger = open_ledger(runtime)
        run = ledger.latest_runs("sample")[-1]  # the first run (a late worker may start another)
        if run.status != "completed":
            shard = run.shard(1)
            # Two batches were checkpointed; the third was written but not yet recorded.
            assert shard.status == "running" and shard.counters.changed == 20
            # Wait out the dead worker's lease (4 s) by re-running until it is free.
            for _ in range(40):
                rerun = subprocess.run(
                    [sys.executable, "-m", "field_encrypt.cli", *_migrate(2, "--product", PRODUCT)],
                    cwd=ROOT,
                    env={**_base_env(), **env, "PYTHONPATH": str(ROOT)},
                    capture_output=True,
                    text=True,
                    timeout=120,
                )
                if rerun.returncode == 0:
                    break
                assert rerun.returncode == 6, rerun.stderr  # refused: the lease is still live
                assert "held by" in rerun.stderr or "in flight" in rerun.stderr
            assert rerun.returncode == 0, rerun.stderr
            assert json.loads(rerun.stdout)["status"] == "completed"
        final = ledger.get_run(run.run_id)
        assert final.status == "completed"
        # The batch written but not recorded is found on the target and not redone.
        assert DEKS - 10 <= final.counters.changed <= DEKS
        assert runtime.dek_store.count_not_on("2") == 0
        assert read_all(runtime) == {f"doc-{i}": document(i) for i in range(DEKS)}
    finally:
        runtime.close()

    verify = subprocess.run(
        [
            sys.executable,
            "-m",
            "field_encrypt.cli",
            "verify",
            "--product",
            PRODUCT,
            "--mek-version",
            "2",
            "--json",
        ],
        cwd=ROOT,
        env={**_base_env(), **env, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert verify.returncode == 0, verify.stderr
    report = json.loads(verify.stdout)
    assert report["clean"] and report["deks_not_on_version"] == 0
    assert report["deks_by_version"] == {"2": DEKS}
