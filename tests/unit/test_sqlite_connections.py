"""SqliteDatabase keeps one connection per thread and closes those of threads that ended."""

from __future__ import annotations

import os
import threading
from pathlib import Path

from field_encrypt.backends.sqlite.db import SqliteDatabase


def _open_files(path: Path) -> int:
    fds = Path("/proc/self/fd")
    count = 0
    for fd in fds.iterdir():
        try:
            if os.readlink(fd).startswith(str(path)):
                count += 1
        except OSError:
            continue
    return count


def test_connections_of_ended_threads_are_closed(tmp_path: Path) -> None:
    """200 short-lived worker threads (a server's pool retiring idle threads) leave a
    bounded number of open files, not one connection each (found by fuzzing NoteLett)."""
    database = SqliteDatabase(tmp_path / "db.sqlite")
    database.query("SELECT 1")
    for _ in range(200):
        worker = threading.Thread(target=database.query, args=("SELECT 1",))
        worker.start()
        worker.join()
    assert _open_files(tmp_path / "db.sqlite") <= 9  # this thread's and the last worker's
    database.close()
    assert _open_files(tmp_path / "db.sqlite") == 0


def test_a_transaction_inside_a_transaction_is_a_savepoint(tmp_path: Path) -> None:
    """A nested transaction (a KEK created inside a seed batch) neither fails ("cannot start
    a transaction within a transaction") nor commits early: its work commits with the outer
    one, and an error inside rolls back only its own part."""
    database = SqliteDatabase(tmp_path / "db.sqlite")
    database.execute("CREATE TABLE t (x INTEGER)")
    with database.transaction() as tx:
        tx.execute("INSERT INTO t VALUES (1)")
        with database.transaction() as inner:
            inner.execute("INSERT INTO t VALUES (2)")
        try:
            with database.transaction() as inner:
                inner.execute("INSERT INTO t VALUES (3)")
                raise ValueError("inner fails")
        except ValueError:
            pass
    assert database.query("SELECT x FROM t ORDER BY x") == [(1,), (2,)]
    try:
        with database.transaction() as tx:
            tx.execute("INSERT INTO t VALUES (4)")
            with database.transaction() as inner:
                inner.execute("INSERT INTO t VALUES (5)")
            raise ValueError("outer fails")
    except ValueError:
        pass
    assert database.query("SELECT x FROM t ORDER BY x") == [(1,), (2,)]
    database.close()
