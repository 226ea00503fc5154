"""kill -9 at random points, then the same command again: nothing lost, nothing doubled.

Each run is a real ``field-encrypt`` process on the killable sample product, which sends
itself SIGKILL before a chosen provider call, right after a chosen dek_store batch
commits, or right after a chosen document write commits. The next run takes the dead
run's lease over at once (its holder was a process of this host that no longer exists);
a holder on another host is waited out until its lease expires.
"""

from __future__ import annotations

import random
import signal
import sqlite3

import pytest

from field_encrypt.config import load_settings
from field_encrypt.rotation import verify
from tests.cli.helpers import cli_process
from tests.support.sample_product import product
from tests.support.seed import document, read_all, seed

KILLABLE = "tests.support.sample_product:killable_product"


def _kill_and_resume(env: dict[str, str], args: list[str], points: list[str]) -> list[int]:
    codes = []
    for point in points:
        result = cli_process(*args, env={**env, "SAMPLE_KILL_AT": point})
        codes.append(result.returncode)
        if result.returncode != -signal.SIGKILL:  # the dead run's lease is taken over at once
            assert result.returncode == 0, result.stderr
    final = cli_process(*args, "--json", env=env)
    assert final.returncode == 0, final.stderr
    return codes


def test_rewrap_survives_kill_9_at_random_points(env: dict[str, str]) -> None:
    """Every DEK ends on the target and every document reads, after six kills mid-rewrap."""
    runtime = product.open(load_settings(env))
    seed(runtime, 300)
    runtime.provider.create_version()
    runtime.close()
    rng = random.Random(20240601)
    points = [
        f"provider:{rng.randint(1, 150)}" if i % 2 == 0 else f"store:{rng.randint(1, 3)}"
        for i in range(6)
    ]
    args = ["migrate", "--product", KILLABLE, "--mode", "rewrap-deks", "--batch-size", "20"]
    codes = _kill_and_resume(env, args, points)
    assert codes.count(-signal.SIGKILL) >= 5
    runtime = product.open(load_settings(env))
    try:
        assert runtime.dek_store.count_by_version() == {"2": 300}
        assert read_all(runtime) == {f"doc-{i}": document(i) for i in range(300)}
        assert verify(runtime, mek_version="2", sample=300).clean
        runs = [r for r in _ledger_runs(env["FIELD_ENCRYPT_DATABASE"])]
        assert runs == [("rewrap-deks", "completed")]  # one run, resumed each time
    finally:
        runtime.close()


@pytest.mark.parametrize("mode", ["re-encrypt", "encrypt"])
def test_document_modes_survive_kill_9(env: dict[str, str], mode: str) -> None:
    """No document points at a missing DEK and no orphan DEK survives, after kills mid-step."""
    runtime = product.open(load_settings(env))
    seed(runtime, 80, encrypt=mode == "re-encrypt")
    if mode == "re-encrypt":
        runtime.provider.create_version()
    target = runtime.provider.current_version()
    runtime.close()
    rng = random.Random(7 if mode == "encrypt" else 11)
    points = [
        f"document:{rng.randint(1, 15)}" if i % 2 == 0 else f"provider:{rng.randint(1, 25)}"
        for i in range(5)
    ]
    args = ["migrate", "--product", KILLABLE, "--mode", mode, "--batch-size", "8"]
    codes = _kill_and_resume(env, args, points)
    assert codes.count(-signal.SIGKILL) >= 4
    runtime = product.open(load_settings(env))
    try:
        report = verify(runtime, mek_version=target, sample=80)
        assert report.clean, report.as_dict()
        assert runtime.dek_store.count_by_version() == {target: 80}
        assert read_all(runtime) == {f"doc-{i}": document(i) for i in range(80)}
    finally:
        runtime.close()


def _ledger_runs(db: str) -> list[tuple[str, str]]:
    conn = sqlite3.connect(db)
    try:
        return conn.execute("SELECT mode, status FROM rotation_runs ORDER BY started_at").fetchall()
    finally:
        conn.close()
