"""The rotation engine against a misbehaving PostgreSQL: killed sessions, a held table lock,
the server stopped and started again mid-run.

The sample product runs on a fresh PostgreSQL database of the throwaway cluster
(``tests/servers/postgres.py``), its dek_store, documents and run ledger all there. At a
chosen provider call of a rewrap, the test:

* terminates every session of the database (``pg_terminate_backend``), twice;
* takes ``LOCK TABLE dek_store IN ACCESS EXCLUSIVE MODE`` on another connection and holds
  it for 2 s (statements of the run wait, then time out at ``lock_timeout=500ms`` and
  are retried);
* stops the server and starts it again 1.5 s later, on the same port and data.

Each time the run either completes, or (``--retry-budget`` shorter than the outage)
exits 7; the same command then completes. The invariants hold after each.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from field_encrypt import load_settings
from field_encrypt.products import ProductRuntime
from field_encrypt.testing import FaultInjectingProvider
from tests import figures
from tests.cli.helpers import cli
from tests.reliability import remote
from tests.reliability.invariants import check
from tests.support.sample_product import product
from tests.support.seed import document, seed

DOCUMENTS = 60


@pytest.fixture
def pg(
    postgres_server: Any, postgres_url: str, tmp_path: Path
) -> Iterator[tuple[Any, str, dict[str, str]]]:
    url = postgres_url + "?lock_timeout=500ms"
    env = {
        "FIELD_ENCRYPT_KEY_PROVIDER": "local",
        "FIELD_ENCRYPT_KEYRING": str(tmp_path / "keyring.json"),
        "FIELD_ENCRYPT_DATABASE": url,
    }
    runtime = product.open(load_settings(env))
    try:
        seed(runtime, DOCUMENTS)
        runtime.provider.create_version()
    finally:
        runtime.close()
    yield postgres_server, postgres_url.rsplit("/", 1)[1], env
    if not postgres_server.is_running:
        postgres_server.start()


def _check(env: dict[str, str], *, completed: bool, where: str) -> None:
    runtime = product.open(load_settings(env))
    try:
        expected = {f"doc-{i}": document(i) for i in range(DOCUMENTS)}
        check(runtime, expected, completed_on="2" if completed else None).assert_ok(where)
    finally:
        runtime.close()


def _migrate(env: dict[str, str], fault: Callable[[], None], at: set[int], budget: str) -> Any:
    """``field-encrypt migrate`` (in process) with ``fault()`` run before the calls ``at``."""

    def open_with_fault(_settings: Any) -> ProductRuntime:
        runtime = product.open(load_settings(env))
        hooked = FaultInjectingProvider(runtime.provider)
        seen = [0]

        def before(_name: str) -> None:
            seen[0] += 1
            if seen[0] in at:
                fault()

        hooked.before_call(before)
        runtime.provider = hooked
        return runtime

    remote.OPENERS.append(open_with_fault)
    try:
        return cli(
            "migrate", "--product", "tests.reliability.remote:product", "--mode", "rewrap-deks",
            "--batch-size", "10", "--retry-budget", budget,
        )  # fmt: skip
    finally:
        remote.OPENERS.pop()


def _same_command(env: dict[str, str], result: Any, fault: str) -> None:
    """After exit 0 or 7, the same command completes; invariants hold after each."""
    assert result.exit_code in (0, 7), result.output
    retries = result.output.count('"retry"')
    print(f"{fault}: exit {result.exit_code}, {retries} retries")
    _check(env, completed=result.exit_code == 0, where=f"after {fault}")
    if result.exit_code == 7:
        again = _migrate(env, lambda: None, set(), "30")
        assert again.exit_code == 0, again.output
        _check(env, completed=True, where=f"after the same command, {fault}")
    figures.record(
        "database faults",
        postgres_faults=1,
        postgres_retries=retries,
        runs_completed=1,
        cli_exit_7=int(result.exit_code == 7),
    )


def test_sessions_terminated_mid_run(pg: tuple[Any, str, dict[str, str]]) -> None:
    """pg_terminate_backend on every session, twice: the pool reconnects, the run completes."""
    server, dbname, env = pg
    killed: list[int] = []
    result = _migrate(env, lambda: killed.append(server.terminate_backends(dbname)), {20, 95}, "30")
    assert sum(killed) > 0
    _same_command(env, result, "terminated sessions")


def test_a_table_lock_held_for_seconds(pg: tuple[Any, str, dict[str, str]]) -> None:
    """ACCESS EXCLUSIVE on dek_store for 2 s: statements time out and are retried."""
    import psycopg

    server, dbname, env = pg
    holders: list[threading.Thread] = []

    def lock() -> None:
        taken = threading.Event()

        def hold() -> None:
            with psycopg.connect(server.dsn_for(dbname)) as conn:
                conn.execute("LOCK TABLE dek_store IN ACCESS EXCLUSIVE MODE")
                taken.set()
                time.sleep(2.0)  # the lock is what is being tested: hold it for real

        holder = threading.Thread(target=hold, daemon=True)
        holder.start()
        assert taken.wait(10)
        holders.append(holder)

    try:
        result = _migrate(env, lock, {40}, "30")
    finally:
        for holder in holders:
            holder.join(10)
    _same_command(env, result, "a held table lock")


@pytest.mark.parametrize("budget", ["30", "0.5"])
def test_the_server_stopped_and_started_mid_run(
    pg: tuple[Any, str, dict[str, str]], budget: str
) -> None:
    """The server goes away for 1.5 s: with a budget that outlasts it the run completes;
    with a shorter one it exits 7, and the same command then completes."""
    server, _dbname, env = pg
    restarts: list[threading.Thread] = []

    def bounce() -> None:
        server.stop()

        def later() -> None:
            time.sleep(1.5)  # the outage is what is being tested
            server.start()

        thread = threading.Thread(target=later, daemon=True)
        thread.start()
        restarts.append(thread)

    try:
        result = _migrate(env, bounce, {40}, budget)
    finally:
        for thread in restarts:
            thread.join(60)
    if budget == "30":
        assert result.exit_code == 0, result.output
    _same_command(env, result, f"a server restart (budget {budget}s)")
