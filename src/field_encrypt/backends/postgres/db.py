"""One PostgreSQL database shared by a product's stores: a connection pool and named migrations.

Why SQLAlchemy Core over psycopg 3: SQLAlchemy gives the connection pool (``QueuePool`` with
pre-ping, so a connection the server dropped is replaced before use, and an invalidated pool
after a failover), URL parsing, and composable queries for the scan filters; psycopg 3 gives
the binary protocol, array parameters (one ``UPDATE ... FROM unnest(...)`` per batch) and
``COPY``. Nothing here needs the ORM.

Settings come from the URL (``FIELD_ENCRYPT_DATABASE``); the query parameters in
:data:`POOL_PARAMETERS` are ours, every other one goes to libpq unchanged (``sslmode``,
``sslrootcert``, ``application_name``, ``options`` ...)::

    postgresql://user:pass@db.internal:5432/notelett?sslmode=verify-full&pool_size=10

Schema changes are named migrations (as in :mod:`field_encrypt.backends.sqlite.db`): each runs
in its own transaction (PostgreSQL DDL is transactional) under a transaction-level advisory
lock, so processes starting together apply it exactly once, and is recorded in
``field_encrypt_migrations`` (``schema_migrations`` of earlier builds is renamed when it is
ours; Rails' or golang-migrate's is left alone).
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
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

try:
    import psycopg
    import sqlalchemy
    from sqlalchemy import Connection, Engine, text
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ConfigurationError(
        "the PostgreSQL store needs the 'postgres' extra: pip install 'field-encrypt[postgres]'"
    ) from exc

__all__ = ["Migration", "PostgresDatabase", "PostgresOptions", "translate_errors"]

MIGRATION_LOCK = 0x6669_656C_645F_656E
"""Advisory lock key held while a migration runs ("field_en" in ASCII)."""


def _duration(value: str) -> str:
    if not re.fullmatch(r"\d+(ms|s|min|h)?", value):
        raise ValueError(value)
    return value


_CONVERTERS: dict[str, Any] = {
    "pool_size": int,
    "max_overflow": int,
    "pool_timeout": float,
    "pool_recycle": float,
    "lock_timeout": _duration,
    "statement_timeout": _duration,
}
POOL_PARAMETERS = tuple(_CONVERTERS)
"""The URL query parameters read here; libpq gets all the others."""

_TRANSIENT_STATES = frozenset(
    {
        "40001",  # serialization_failure
        "40P01",  # deadlock_detected
        "25006",  # read_only_sql_transaction (a read-only or standby server)
        "55P03",  # lock_not_available (lock_timeout)
        "57014",  # query_canceled (statement_timeout)
        "57P01",  # admin_shutdown
        "57P02",  # crash_shutdown
        "57P03",  # cannot_connect_now (starting up, recovering)
    }
)
_TRANSIENT_CLASSES = ("08", "53")  # connection exception; insufficient resources


@dataclass(frozen=True, slots=True, kw_only=True)
class PostgresOptions:
    """Pool and session settings, from the URL's query parameters of the same names."""

    pool_size: int = 5
    """Connections kept open per process."""
    max_overflow: int = 5
    """Extra connections opened under load, closed when returned."""
    pool_timeout: float = 10.0
    """Seconds to wait for a free connection before ``StoreUnavailableError``."""
    pool_recycle: float = 1800.0
    """Seconds after which a connection is replaced (load balancers drop idle ones)."""
    lock_timeout: str = "5s"
    """How long a statement waits for a row lock before ``StoreUnavailableError``."""
    statement_timeout: str = "60s"
    """How long one statement may run before ``StoreUnavailableError``."""


def parse_url(url: str) -> tuple[sqlalchemy.URL, PostgresOptions]:
    """The SQLAlchemy URL (psycopg 3 driver) and our options, from a ``postgresql://`` URL."""
    try:
        parsed = sqlalchemy.make_url(url)
    except sqlalchemy.exc.ArgumentError as exc:
        raise ConfigurationError("FIELD_ENCRYPT_DATABASE is not a valid database URL") from exc
    if parsed.drivername not in ("postgresql", "postgres", "postgresql+psycopg"):
        raise ConfigurationError(
            f"unsupported PostgreSQL URL scheme {parsed.drivername!r}: use postgresql://"
        )
    query = dict(parsed.query)
    ours: dict[str, Any] = {}
    for name, convert in _CONVERTERS.items():
        if name in query:
            raw = query.pop(name)
            try:
                ours[name] = convert(raw if isinstance(raw, str) else raw[-1])
            except ValueError:
                raise ConfigurationError(
                    f"database URL parameter {name} is not valid: {name}={raw!r}"
                ) from None
    options = PostgresOptions(**ours)
    return parsed.set(drivername="postgresql+psycopg", query=query), options


class PostgresDatabase:
    """A PostgreSQL database and this process's pool of connections to it."""

    def __init__(self, url: str | sqlalchemy.URL, **overrides: Any) -> None:
        """``overrides`` replace :class:`PostgresOptions` fields given in the URL."""
        if isinstance(url, str):
            self.url, options = parse_url(url)
        else:
            self.url, options = parse_url(url.render_as_string(hide_password=False))
        fields = {name: getattr(options, name) for name in POOL_PARAMETERS}
        self.options = PostgresOptions(**{**fields, **overrides})
        session = "-c TimeZone=UTC "
        session += f"-c lock_timeout={self.options.lock_timeout} "
        session += f"-c statement_timeout={self.options.statement_timeout}"
        extra = self.url.query.get("options")
        connect_args: dict[str, Any] = {
            "options": f"{session} {extra}" if isinstance(extra, str) else session
        }
        query = {k: v for k, v in self.url.query.items() if k != "options"}
        query.setdefault("application_name", "field-encrypt")
        query.setdefault("connect_timeout", "10")
        self.engine: Engine = sqlalchemy.create_engine(
            self.url.set(query=query),
            pool_size=self.options.pool_size,
            max_overflow=self.options.max_overflow,
            pool_timeout=self.options.pool_timeout,
            pool_recycle=self.options.pool_recycle,
            pool_pre_ping=True,
            connect_args=connect_args,
        )
        self._autocommit = self.engine.execution_options(isolation_level="AUTOCOMMIT")
        self._ambient = threading.local()

    def __repr__(self) -> str:
        return f"PostgresDatabase({self.url.render_as_string(hide_password=True)!r})"

    def close(self) -> None:
        """Close every pooled connection."""
        self.engine.dispose()

    @contextmanager
    def transaction(self) -> Iterator[Connection]:
        """``BEGIN`` ... ``COMMIT`` on a pooled connection, rolled back on any error.

        Inside a transaction already open on this thread (an act and its audit event, see
        :meth:`~field_encrypt.backends.sql.audit.SqlAuditTrail.within`), it is a
        ``SAVEPOINT`` of that transaction, and :meth:`connection` is that transaction's
        connection: what runs inside commits with the outer transaction, as SQLite's
        per-thread connection does.
        """
        outer: Connection | None = getattr(self._ambient, "conn", None)
        if outer is not None:
            with translate_errors(), outer.begin_nested():
                yield outer
            return
        with translate_errors(), self.engine.begin() as conn:
            self._ambient.conn = conn
            try:
                yield conn
            finally:
                self._ambient.conn = None

    @contextmanager
    def connection(self) -> Iterator[Connection]:
        """A pooled connection in autocommit mode: each statement is its own transaction
        (inside a transaction open on this thread: that transaction's connection)."""
        outer: Connection | None = getattr(self._ambient, "conn", None)
        if outer is not None:
            with translate_errors():
                yield outer
            return
        with translate_errors(), self._autocommit.connect() as conn:
            yield conn

    def execute(self, statement: Any, params: Any = None) -> list[Any]:
        """Run one statement in its own transaction; the rows it returned, if any."""
        with self.connection() as conn:
            result = conn.execute(statement, params)
            return list(result.all()) if result.returns_rows else []

    def query(self, sql: str, params: Any = None) -> list[tuple[Any, ...]]:
        """One statement in psycopg's own paramstyle, binary results, rows as plain tuples.

        For the hot paths (scans, batched writes): SQLAlchemy's per-row result processing
        costs about 4 µs a row, as much as the server spends reading it.
        """
        with self.connection() as conn:
            raw: Any = conn.connection.driver_connection
            with raw.cursor(binary=True) as cursor:
                cursor.execute(sql, params)
                return list(cursor.fetchall()) if cursor.description is not None else []

    def migrate(self, migrations: Sequence[Migration]) -> list[str]:
        """Apply the pending migrations in order, each in its own transaction; the names applied.

        A step that fails on the schema (a table or index of the same name that is not
        ours) is a :class:`ConfigurationError` naming it, not a store outage.
        """
        if not self.pending_migrations(migrations):
            return []
        applied: list[str] = []
        for migration in migrations:
            with self.transaction() as conn:
                conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK})
                _adopt_legacy_table(conn)
                _create_migrations_table(conn)
                done = conn.execute(
                    text(f"SELECT 1 FROM {MIGRATIONS_TABLE} WHERE name = :name"),
                    {"name": migration.name},
                ).first()
                if done:
                    continue
                try:
                    with conn.begin_nested():
                        conn.exec_driver_sql(migration.sql)
                except sqlalchemy.exc.DBAPIError as exc:
                    if is_transient(exc):
                        raise
                    detail = str(exc.orig).splitlines()[0] if exc.orig is not None else str(exc)
                    raise schema_conflict(
                        self.url.render_as_string(hide_password=True), migration.name, detail
                    ) from None
                conn.execute(
                    text(f"INSERT INTO {MIGRATIONS_TABLE} (name) VALUES (:name)"),
                    {"name": migration.name},
                )
                applied.append(migration.name)
        return applied

    def applied_migrations(self) -> list[str]:
        """Names of the migrations applied so far, oldest first."""
        with self.connection() as conn:
            columns = _columns(conn, MIGRATIONS_TABLE)
            if not columns:
                return []
            if not is_ours(columns):
                raise schema_conflict(
                    self.url.render_as_string(hide_password=True),
                    MIGRATIONS_TABLE,
                    f"its columns are {', '.join(sorted(columns))}",
                )
            rows = conn.execute(
                text(f"SELECT name FROM {MIGRATIONS_TABLE} ORDER BY applied_at, name")
            )
            return [name for (name,) in rows]

    def pending_migrations(self, migrations: Sequence[Migration]) -> list[str]:
        """Names among ``migrations`` not applied yet, in order."""
        applied = set(self.applied_migrations())
        return [m.name for m in migrations if m.name not in applied]


def _columns(conn: Connection, table: str) -> set[str]:
    """The column names of ``table`` in the current schema; empty when there is none."""
    rows = conn.execute(
        text(
            "SELECT column_name FROM information_schema.columns "
            "WHERE table_schema = current_schema() AND table_name = :table"
        ),
        {"table": table},
    )
    return {name for (name,) in rows}


def _adopt_legacy_table(conn: Connection) -> None:
    """Rename the migrations table of earlier builds (``schema_migrations``, ours by its
    shape) and its primary key's index; another tool's table of that name is left alone."""
    if _columns(conn, MIGRATIONS_TABLE) or not is_ours(_columns(conn, LEGACY_TABLE)):
        return
    conn.exec_driver_sql(f"ALTER TABLE {LEGACY_TABLE} RENAME TO {MIGRATIONS_TABLE}")
    conn.exec_driver_sql(
        f"ALTER INDEX IF EXISTS {LEGACY_TABLE}_pkey RENAME TO {MIGRATIONS_TABLE}_pkey"
    )


def _create_migrations_table(conn: Connection) -> None:
    conn.exec_driver_sql(
        f"CREATE TABLE IF NOT EXISTS {MIGRATIONS_TABLE} ("
        " name text PRIMARY KEY,"
        " applied_at timestamptz NOT NULL DEFAULT clock_timestamp())"
    )


def is_transient(error: BaseException) -> bool:
    """Whether a driver error is worth retrying: connection lost, shutdown, lock or timeout."""
    if isinstance(error, sqlalchemy.exc.DBAPIError):
        if error.connection_invalidated:
            return True
        error = error.orig if error.orig is not None else error
    if isinstance(error, sqlalchemy.exc.TimeoutError | sqlalchemy.exc.DisconnectionError):
        return True
    state = getattr(error, "sqlstate", None)
    if state is None:
        return isinstance(error, psycopg.OperationalError | psycopg.InterfaceError)
    return state in _TRANSIENT_STATES or state.startswith(_TRANSIENT_CLASSES)


def _sqlstate(error: BaseException) -> str | None:
    if isinstance(error, sqlalchemy.exc.DBAPIError):
        error = error.orig if error.orig is not None else error
    state = getattr(error, "sqlstate", None)
    return state if isinstance(state, str) else None


@contextmanager
def translate_errors() -> Iterator[None]:
    """Convert SQLAlchemy and psycopg errors into the library's store errors, once."""
    try:
        yield
    except (sqlalchemy.exc.SQLAlchemyError, psycopg.Error) as exc:
        state = _sqlstate(exc)
        if state == "23505":
            raise AlreadyExistsError("a row with that key already exists", cause=exc) from exc
        if is_transient(exc):
            raise StoreUnavailableError(
                f"PostgreSQL unavailable ({state or type(exc).__name__})", cause=exc
            ) from exc
        raise StoreError(f"PostgreSQL error ({state or type(exc).__name__})", cause=exc) from exc
