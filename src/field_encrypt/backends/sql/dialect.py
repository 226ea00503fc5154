"""What the shared SQL stores need of a database: sessions and a few dialect differences."""

from __future__ import annotations

import datetime as dt
import textwrap
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from typing import Any

Params = Mapping[str, Any]

COLUMN_TYPES = {
    # placeholder: (SQLite, PostgreSQL)
    "text": ("TEXT", "text"),
    "int": ("INTEGER", "integer"),
    "bigint": ("INTEGER", "bigint"),
    "real": ("REAL", "double precision"),
    "blob": ("BLOB", "bytea"),
    "json": ("TEXT", "jsonb"),
    "bool": ("INTEGER", "boolean"),
    "serial": ("INTEGER", "bigint GENERATED ALWAYS AS IDENTITY"),
    "timestamp": ("REAL NOT NULL", "timestamptz NOT NULL DEFAULT clock_timestamp()"),
}
"""The column types of the schema templates: ``{serial}`` is an insertion-order key,
``{timestamp}`` a time column (epoch seconds in SQLite)."""


class Session(ABC):
    """One connection, inside a transaction or in autocommit; statements take ``:name``
    parameters and driver errors come out as the library's store errors."""

    def __init__(self, conn: Any) -> None:
        self.conn = conn

    @abstractmethod
    def rows(self, sql: str, params: Params | None = None) -> list[Any]:
        """Every row of one query."""

    def first(self, sql: str, params: Params | None = None) -> Any | None:
        """The first row of one query, or ``None``."""
        rows = self.rows(sql, params)
        return rows[0] if rows else None

    @abstractmethod
    def run(self, sql: str, params: Params | None = None) -> int:
        """Run one statement; how many rows it changed."""

    @abstractmethod
    def run_many(self, sql: str, params: Sequence[Params]) -> None:
        """Run one statement once per parameter set (nothing when there are none)."""


class Dialect(ABC):
    """A database and the few ways its SQL differs from the other's."""

    name: str
    """``sqlite`` or ``postgres``."""
    order_column: str
    """The column that gives rows their insertion order (``rowid``, ``seq``)."""
    for_update: str
    """The clause that locks selected rows until the transaction ends ('' where the
    transaction already holds the database's write lock)."""
    now: str
    """The SQL for the current time in a timestamp column (may bind ``:now``)."""
    locks: bool
    """Whether :meth:`lock` does anything (SQLite's ``BEGIN IMMEDIATE`` already serialises)."""
    label: str
    """How the database shows in a store's repr."""
    table_exists: str
    """A query that returns a row when the table ``:name`` exists."""
    json_value: str
    """How a ``json`` column takes the JSON text bound as ``:json`` (a cast where needed)."""
    types: Mapping[str, str]
    """Its column of :data:`COLUMN_TYPES`."""

    database: Any

    session_type: type[Session]
    """The :class:`Session` on one of the driver's connections."""

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        """A transaction, committed at the end and rolled back on any error."""
        with self.database.transaction() as conn:
            yield self.session_type(conn)

    @abstractmethod
    def connection(self) -> AbstractContextManager[Session]:
        """A connection in autocommit mode: each statement is its own transaction."""

    def query(self, sql: str, params: Params | None = None) -> list[Any]:
        """Every row of one query, in its own transaction (a read's fast path)."""
        with self.connection() as session:
            return session.rows(sql, params)

    def execute(self, sql: str, params: Params | None = None) -> int:
        """One statement in its own transaction; how many rows it changed."""
        with self.connection() as session:
            return session.run(sql, params)

    def has_table(self, name: str) -> bool:
        """Whether the table ``name`` exists (another store may not have created it yet)."""
        return bool(self.query(self.table_exists, {"name": name}))

    @abstractmethod
    def migration(self, name: str, sql: str) -> Any:
        """The backend's named migration of ``sql``."""

    def schema(self, name: str, template: str, **variants: Mapping[str, str]) -> Any:
        """A named migration from a schema template: :attr:`types` fill the column types,
        ``variants`` (``{placeholder: {dialect name: SQL}}``) whatever else differs."""
        fragments = {key: by_dialect.get(self.name, "") for key, by_dialect in variants.items()}
        return self.migration(name, textwrap.dedent(template).format(**self.types, **fragments))

    @abstractmethod
    def now_params(self) -> dict[str, Any]:
        """The parameters :attr:`now` binds."""

    def lock(self, session: Session, key: str) -> None:  # noqa: B027 - a no-op by default
        """Serialise the decisions about ``key`` until the transaction ends (nothing to do
        where a transaction holds the database's write lock)."""


class SqlStore:
    """A store on one dialect's database: its schema steps applied on opening, its repr
    naming the database and :attr:`scope`."""

    scope = ""
    """The attribute a repr shows beside the database (``product``, ``collection``)."""

    def __init__(self, dialect: Dialect, migrations: Sequence[Any]) -> None:
        self.dialect = dialect
        self.database = dialect.database
        self.database.migrate(migrations)

    def __repr__(self) -> str:
        shown = f", {self.scope}={getattr(self, self.scope)!r}" if self.scope else ""
        return f"{type(self).__name__}({self.dialect.label}{shown})"


def timestamp(value: Any) -> dt.datetime:
    """A timestamp column's value as an aware datetime (SQLite keeps epoch seconds)."""
    if isinstance(value, dt.datetime):
        return value
    return dt.datetime.fromtimestamp(value, dt.UTC)
