"""One SQLite database file shared by a product's stores: connections and named migrations.

Each thread gets its own connection (WAL journal, ``synchronous=NORMAL``, a busy timeout),
in autocommit mode; :meth:`SqliteDatabase.transaction` opens ``BEGIN IMMEDIATE`` so writers
queue instead of failing late. Schema changes are named migrations, applied once each in
their own transaction and recorded in ``field_encrypt_migrations`` (as sqlite-utils does;
``schema_migrations``, the name of earlier releases, belongs to Rails, golang-migrate and
others, and is renamed on first open only when it is ours).

Faults that clear by themselves are :class:`StoreUnavailableError` (locked or busy,
read-only, full, I/O error, the file gone), and none of them sticks: SQLite opens a file
it may not write read-only *for the connection's life*, so a statement refused as
read-only drops its connection and runs once more on a fresh one (which sees restored
permissions, or a restored file). Once the file exists it is reopened with ``mode=rw``,
so a vanished file is an error, never a new empty database.
"""

from __future__ import annotations

import itertools
import os
import sqlite3
import threading
import time
import urllib.parse
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

from field_encrypt.backends.sql.migration import (
    LEGACY_TABLE,
    MIGRATIONS_TABLE,
    Migration,
    is_ours,
    schema_conflict,
)
from field_encrypt.errors import (
    AlreadyExistsError,
    ConfigurationError,
    StoreError,
    StoreUnavailableError,
)

__all__ = ["Migration", "SqliteDatabase", "translate_errors"]

_SAVEPOINTS = itertools.count(1)
"""Savepoint names: unique within the process, so nested savepoints never collide."""


def _create_private(path: str) -> None:
    """Create the database file with mode 0600 if it does not exist yet (it holds wrapped
    DEKs, ids and the audit trail); SQLite gives its -wal and -shm files the same mode."""
    if path.startswith("file:"):
        return  # a URI: SQLite opens it
    with suppress(FileExistsError):
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))


class SqliteDatabase:
    """A SQLite file and the per-thread connections to it."""

    def __init__(
        self, path: str | Path, *, busy_timeout_ms: int = 10_000, create: bool = True
    ) -> None:
        self.path = str(path)
        self._busy_timeout_ms = busy_timeout_ms
        self._local = threading.local()
        self._lock = threading.Lock()
        self._all: list[tuple[threading.Thread, sqlite3.Connection]] = []
        self._opened = False
        self.created = self.path != ":memory:" and _prepare_file(Path(self.path), create=create)
        """Whether this object created the file (it did not exist)."""
        if self.created:
            _create_private(self.path)  # 0600 from the start

    def __repr__(self) -> str:
        return f"SqliteDatabase({self.path!r})"

    def connection(self) -> sqlite3.Connection:
        """This thread's connection, opened on first use."""
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            try:
                database, uri = self._target()
                conn = sqlite3.connect(
                    database, isolation_level=None, check_same_thread=False, timeout=0, uri=uri
                )
            except sqlite3.OperationalError as exc:  # unreadable file, unwritable directory
                if self._opened:  # it was there: a fault of the moment, not a setting
                    raise StoreUnavailableError(
                        f"the SQLite database {self.path} cannot be opened", cause=exc
                    ) from exc
                raise ConfigurationError(
                    f"cannot open the SQLite database {self.path} ({exc}): check that this "
                    "user may read and write it and its directory"
                ) from None
            conn.execute(f"PRAGMA busy_timeout = {int(self._busy_timeout_ms)}")
            with translate_errors():
                conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = NORMAL")
            conn.execute("PRAGMA foreign_keys = ON")
            self._local.conn = conn
            self._opened = True
            with self._lock:
                self._close_orphans()
                self._all.append((threading.current_thread(), conn))
        return conn

    def _target(self) -> tuple[str, bool]:
        """``(database, uri)`` for ``sqlite3.connect``: once opened, a plain path is
        reopened with ``mode=rw``, so a file that vanished is not recreated empty."""
        if not self._opened or self.path == ":memory:" or self.path.startswith("file:"):
            return self.path, self.path.startswith("file:")
        return f"file:{urllib.parse.quote(os.path.abspath(self.path))}?mode=rw", True

    def drop_connection(self) -> None:
        """Close this thread's connection; the next use opens a fresh one."""
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            return
        self._local.conn = None
        with self._lock:
            self._all = [(t, c) for t, c in self._all if c is not conn]
        with suppress(sqlite3.Error):
            conn.close()

    def _run(self, sql: str, params: Sequence[object]) -> sqlite3.Cursor:
        """Execute on this thread's connection; refused as read-only, once more on a fresh one."""
        conn = self.connection()
        try:
            return conn.execute(sql, params)
        except sqlite3.OperationalError as exc:
            if _code(exc) not in _REOPEN or conn.in_transaction:
                raise
        self.drop_connection()
        return self.connection().execute(sql, params)

    @contextmanager
    def busy_timeout(self, milliseconds: int) -> Iterator[None]:
        """Wait at most ``milliseconds`` for a lock in this block (on this thread)."""
        conn = self.connection()
        conn.execute(f"PRAGMA busy_timeout = {int(milliseconds)}")
        try:
            yield
        finally:
            with suppress(sqlite3.Error):
                conn.execute(f"PRAGMA busy_timeout = {int(self._busy_timeout_ms)}")

    def _close_orphans(self) -> None:
        """Close the connections of threads that have ended (a server's worker pool retires
        idle threads; their connections would otherwise hold file descriptors for ever)."""
        alive = []
        for thread, conn in self._all:
            if thread.is_alive():
                alive.append((thread, conn))
            else:
                conn.close()
        self._all = alive

    def close(self) -> None:
        """Close every connection this object opened."""
        with self._lock:
            for _, conn in self._all:
                conn.close()
            self._all.clear()
        self._local = threading.local()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """``BEGIN IMMEDIATE`` ... ``COMMIT``, rolled back on any error.

        Inside a transaction already open on this thread (a batch that creates a KEK on
        the way), it is a ``SAVEPOINT``: its work commits with the outer transaction, and
        an error inside rolls back only its own part. Driver errors raised by the
        statements inside are converted like any other.
        """
        conn = self.connection()
        if conn.in_transaction:
            with self._savepoint(conn):
                yield conn
            return
        with translate_errors():
            self._run("BEGIN IMMEDIATE", ())
        conn = self.connection()
        try:
            with translate_errors():
                yield conn
        except BaseException:
            if conn.in_transaction:  # SQLite already rolled back on SQLITE_FULL and kin
                conn.execute("ROLLBACK")
            raise
        with translate_errors():
            conn.execute("COMMIT")

    @contextmanager
    def _savepoint(self, conn: sqlite3.Connection) -> Iterator[None]:
        name = f"field_encrypt_{next(_SAVEPOINTS)}"
        with translate_errors():
            conn.execute(f"SAVEPOINT {name}")
        try:
            with translate_errors():
                yield
        except BaseException:
            conn.execute(f"ROLLBACK TO {name}")
            conn.execute(f"RELEASE {name}")
            raise
        with translate_errors():
            conn.execute(f"RELEASE {name}")

    def migrate(self, migrations: Sequence[Migration]) -> list[str]:
        """Apply the pending migrations in order; the names applied now.

        Nothing is written (no lock is taken) when every migration is already applied, so
        opening a store on a file another connection holds locked does not fail. A step
        that fails on the schema (a table or index of the same name that is not ours) is
        a :class:`ConfigurationError` naming it, not a store outage.
        """
        conn = self.connection()
        with translate_errors():
            self._adopt_legacy_table(conn)
            done = self._applied(conn)
            if done is not None and all(m.name in done for m in migrations):
                return []
            conn.execute(
                f"CREATE TABLE IF NOT EXISTS {MIGRATIONS_TABLE} "
                "(name TEXT PRIMARY KEY, applied_at REAL NOT NULL)"
            )
        applied = []
        for migration in migrations:
            with self.transaction() as tx:
                done_now = tx.execute(
                    f"SELECT 1 FROM {MIGRATIONS_TABLE} WHERE name = ?", (migration.name,)
                ).fetchone()
                if done_now:
                    continue
                try:
                    for statement in filter(None, (s.strip() for s in migration.sql.split(";"))):
                        tx.execute(statement)
                except sqlite3.OperationalError as exc:
                    if "locked" in str(exc) or "busy" in str(exc):
                        raise
                    raise schema_conflict(self.path, migration.name, str(exc)) from None
                tx.execute(
                    f"INSERT INTO {MIGRATIONS_TABLE} (name, applied_at) VALUES (?, ?)",
                    (migration.name, time.time()),
                )
                applied.append(migration.name)
        return applied

    def _adopt_legacy_table(self, conn: sqlite3.Connection) -> None:
        """Rename the migrations table of earlier releases (``schema_migrations``, ours by
        its shape) to :data:`MIGRATIONS_TABLE`; another tool's table of that name (Rails',
        golang-migrate's: a ``version`` column) is left alone."""
        if _columns(conn, MIGRATIONS_TABLE) or not is_ours(_columns(conn, LEGACY_TABLE)):
            return
        with self.transaction() as tx:
            if not _columns(tx, MIGRATIONS_TABLE) and is_ours(_columns(tx, LEGACY_TABLE)):
                tx.execute(f"ALTER TABLE {LEGACY_TABLE} RENAME TO {MIGRATIONS_TABLE}")

    def _applied(self, conn: sqlite3.Connection) -> set[str] | None:
        """The names recorded in the migrations table; ``None`` when there is none."""
        columns = _columns(conn, MIGRATIONS_TABLE)
        if not columns:
            return None
        if not is_ours(columns):
            raise schema_conflict(
                self.path, MIGRATIONS_TABLE, f"its columns are {', '.join(sorted(columns))}"
            )
        return {name for (name,) in conn.execute(f"SELECT name FROM {MIGRATIONS_TABLE}")}

    def applied_migrations(self) -> list[str]:
        """Names of the migrations applied so far, in order."""
        conn = self.connection()
        with translate_errors():
            if self._applied(conn) is None:
                return []
            rows = conn.execute(
                f"SELECT name FROM {MIGRATIONS_TABLE} ORDER BY applied_at, name"
            ).fetchall()
        return [name for (name,) in rows]

    def execute(self, sql: str, params: Sequence[object] = ()) -> sqlite3.Cursor:
        """Run one statement on this thread's connection, converting driver errors."""
        with translate_errors():
            return self._run(sql, params)

    def query(self, sql: str, params: Sequence[object] = ()) -> list[Any]:
        """All rows of one query."""
        with translate_errors():
            return self._run(sql, params).fetchall()


def _columns(conn: sqlite3.Connection, table: str) -> set[str]:
    """The column names of ``table``; empty when there is no such table."""
    return {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}


def _prepare_file(path: Path, *, create: bool) -> bool:
    """Check the database file's path; make its directory if ``create``. Whether it is new."""
    if path.is_dir():
        raise ConfigurationError(
            f"the SQLite database {path} is a directory (FIELD_ENCRYPT_DATABASE names a file)"
        )
    if path.exists():
        return False
    if path.is_symlink():
        raise ConfigurationError(
            f"the SQLite database {path} is a symlink to nothing: fix the link or "
            "FIELD_ENCRYPT_DATABASE"
        )
    if not create:
        raise ConfigurationError(
            f"the SQLite database {path} does not exist, and nothing was created: check "
            "FIELD_ENCRYPT_DATABASE (or NOTELETT_DATABASE), or create it with "
            "`field-encrypt init --product PRODUCT`"
        )
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigurationError(
            f"cannot create the directory of the SQLite database {path}: "
            f"{exc.strerror or type(exc).__name__}"
        ) from None
    return True


_TRANSIENT = {
    sqlite3.SQLITE_BUSY: "is locked",
    sqlite3.SQLITE_LOCKED: "is locked",
    sqlite3.SQLITE_READONLY: "is read-only",
    sqlite3.SQLITE_IOERR: "had an I/O error",
    sqlite3.SQLITE_FULL: "is full",
    sqlite3.SQLITE_CANTOPEN: "cannot be opened",
}
"""Primary result codes of faults that clear by themselves, as StoreUnavailableError."""
_REOPEN = frozenset({sqlite3.SQLITE_READONLY, sqlite3.SQLITE_CANTOPEN})
"""Codes that a fresh connection may not have (see the module docstring)."""


def _code(exc: sqlite3.Error) -> int:
    """The primary result code of a driver error (``-1`` when it carries none)."""
    code = getattr(exc, "sqlite_errorcode", None)
    return code & 0xFF if isinstance(code, int) else -1


@contextmanager
def translate_errors() -> Iterator[None]:
    """Convert sqlite3 errors into the library's store errors, once, at the driver boundary."""
    try:
        yield
    except sqlite3.OperationalError as exc:
        message = str(exc)
        fault = _TRANSIENT.get(_code(exc))
        if fault is None and ("locked" in message or "busy" in message):
            fault = "is locked"
        if fault is not None:
            raise StoreUnavailableError(f"SQLite database {fault}", cause=exc) from exc
        raise StoreError(f"SQLite error: {message}", cause=exc) from exc
    except sqlite3.IntegrityError as exc:
        if "UNIQUE" in str(exc) or "PRIMARY KEY" in str(exc):
            raise AlreadyExistsError("a row with that key already exists", cause=exc) from exc
        raise StoreError(f"SQLite constraint failed: {exc}", cause=exc) from exc
    except sqlite3.DatabaseError as exc:
        raise StoreError(f"SQLite error: {exc}", cause=exc) from exc
