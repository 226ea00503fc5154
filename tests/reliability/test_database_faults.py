"""The rotation engine against a misbehaving database: SQLite locked by another connection.

Another connection takes ``BEGIN EXCLUSIVE`` on the product's SQLite file (what a backup
tool, a migration or a stuck writer does) at a chosen moment of a rewrap, and holds it for
a while. With a short busy timeout every write of the run then fails with "database is
locked" until the lock goes. The run either waits it out and completes, or stops with
exit 7 within its ``--retry-budget``, keeping its cursor and handing its lease back; the
same command then completes. (PostgreSQL faults live in ``test_postgres_faults.py``.)
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from field_encrypt.backends.sqlite.ledger import SqliteRunLedger
from field_encrypt.products import ProductRuntime
from field_encrypt.providers.local import LocalKeyProvider
from field_encrypt.rotation import (
    MigrationOptions,
    RetryPolicy,
    migrate,
    open_ledger,
    open_lifecycle,
)
from field_encrypt.testing import FaultInjectingProvider
from tests import figures
from tests.cli.helpers import cli
from tests.reliability import remote
from tests.reliability.invariants import check
from tests.support.seed import document, seed

DOCUMENTS = 40
BUSY_MS = 200


class Locker:
    """Another connection holding ``BEGIN EXCLUSIVE`` on a SQLite file for ``seconds``."""

    def __init__(self, path: Path, seconds: float) -> None:
        self.path = path
        self.seconds = seconds
        self.taken = threading.Event()
        self.thread = threading.Thread(target=self._hold, daemon=True)

    def _hold(self) -> None:
        conn = sqlite3.connect(self.path, isolation_level=None, timeout=30)
        try:
            conn.execute("BEGIN EXCLUSIVE")
            self.taken.set()
            time.sleep(self.seconds)  # the lock is what is being tested: hold it for real
            conn.execute("COMMIT")
        finally:
            conn.close()

    def start(self) -> None:
        self.thread.start()
        assert self.taken.wait(10)

    def join(self) -> None:
        self.thread.join(30)


class Observer:
    """Counts the retries a run makes."""

    def __init__(self) -> None:
        self.retries = 0

    def run_started(self, run: Any, *, shard: int, resumed: bool) -> None:
        pass

    def batch_done(self, delta: Any) -> None:
        pass

    def event(self, name: str, fields: Any) -> None:
        if name == "retry":
            self.retries += 1


@pytest.fixture
def product_dir(tmp_path: Path) -> Iterator[Path]:
    provider = LocalKeyProvider(tmp_path / "keyring.json", mek_name="m", refresh_seconds=0)
    runtime = remote.open_runtime(tmp_path / "fe.db", provider)
    seed(runtime, DOCUMENTS)
    open_ledger(runtime)  # the ledger's and the key lifecycle's tables exist, as after any
    open_lifecycle(runtime)  # earlier run of the CLI
    provider.create_version()
    runtime.close()
    yield tmp_path


def _open(directory: Path) -> ProductRuntime:
    provider = LocalKeyProvider(directory / "keyring.json", mek_name="m", refresh_seconds=0)
    return remote.open_runtime(directory / "fe.db", provider, busy_timeout_ms=BUSY_MS)


def _lock_at(runtime: ProductRuntime, locker: Locker, call: int) -> None:
    hooked = FaultInjectingProvider(runtime.provider)
    seen = [0]

    def before(_name: str) -> None:
        seen[0] += 1
        if seen[0] == call:
            locker.start()

    hooked.before_call(before)
    runtime.provider = hooked


def _check(directory: Path, *, completed: bool, where: str) -> None:
    runtime = _open(directory)
    try:
        expected = {f"doc-{i}": document(i) for i in range(DOCUMENTS)}
        target = "2" if completed else None
        check(runtime, expected, completed_on=target).assert_ok(where)
    finally:
        runtime.close()


def test_a_lock_shorter_than_the_budget_is_waited_out(product_dir: Path) -> None:
    """Locked for a second mid-run: every write retries until it goes; the run completes."""
    runtime = _open(product_dir)
    locker = Locker(product_dir / "fe.db", 1.0)
    _lock_at(runtime, locker, 3 * 12)  # in the second batch of ten
    observer = Observer()
    try:
        report = migrate(
            runtime,
            SqliteRunLedger(runtime.database),
            MigrationOptions(
                mode="rewrap-deks",
                batch_size=10,
                retry=RetryPolicy(base_delay=0.05, max_delay=0.5, budget=10.0),
            ),
            observer=observer,
        )
    finally:
        runtime.close()
        locker.join()
    assert report.status == "completed", report.as_dict()
    assert observer.retries > 0
    _check(product_dir, completed=True, where="after the lock")
    figures.record("database faults", sqlite_locks=1, retries=observer.retries, runs_completed=1)


def _cli(directory: Path, *extra: str) -> Any:
    remote.OPENERS.append(lambda _settings: _open(directory))
    try:
        return cli(
            "migrate",
            "--product",
            "tests.reliability.remote:product",
            "--mode",
            "rewrap-deks",
            "--batch-size",
            "10",
            *extra,
        )
    finally:
        remote.OPENERS.pop()


def test_a_lock_longer_than_the_budget_exits_7_and_the_same_command_completes(
    product_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Locked past --retry-budget mid-run: exit 7, lease handed back; the same command then
    completes at once."""
    locker = Locker(product_dir / "fe.db", 1.6)
    opened: list[ProductRuntime] = []

    def open_locking(_settings: Any) -> ProductRuntime:
        runtime = _open(product_dir)
        _lock_at(runtime, locker, 3 * 12)
        opened.append(runtime)
        return runtime

    remote.OPENERS.append(open_locking)
    try:
        started = time.monotonic()
        stopped = cli(
            "migrate",
            "--product",
            "tests.reliability.remote:product",
            "--mode",
            "rewrap-deks",
            "--batch-size",
            "10",
            "--retry-budget",
            "1",
        )
        elapsed = time.monotonic() - started
    finally:
        remote.OPENERS.pop()
        locker.join()
    assert stopped.exit_code == 7, stopped.output
    assert elapsed < 1.6 + 2, elapsed  # the run gave up, then handed its lease back
    _check(product_dir, completed=False, where="after exit 7")
    done = _cli(product_dir, "--retry-budget", "1")
    assert done.exit_code == 0, done.output
    _check(product_dir, completed=True, where="after the same command")
    figures.record("database faults", sqlite_locks=1, cli_exit_7=1, runs_completed=1)


def test_a_lock_held_when_the_command_starts_is_waited_out(product_dir: Path) -> None:
    """Locked before the run opens its ledger entry: opening is retried; the run completes."""
    locker = Locker(product_dir / "fe.db", 1.0)
    locker.start()
    try:
        result = _cli(product_dir, "--retry-budget", "10")
    finally:
        locker.join()
    assert result.exit_code == 0, result.output
    _check(product_dir, completed=True, where="after a lock at start-up")
    figures.record("database faults", sqlite_locks=1, runs_completed=1)


Opener = Callable[[Any], ProductRuntime]
