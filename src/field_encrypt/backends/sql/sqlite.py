"""The SQLite dialect of the shared SQL stores: stdlib ``sqlite3`` under ``BEGIN IMMEDIATE``."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from field_encrypt.backends.sql.dialect import COLUMN_TYPES, Dialect, Params, Session
from field_encrypt.backends.sqlite.db import Migration, SqliteDatabase, translate_errors


class SqliteSession(Session):
    """A :class:`Session` on one ``sqlite3`` connection."""

    conn: sqlite3.Connection

    def rows(self, sql: str, params: Params | None = None) -> list[Any]:
        with translate_errors():
            return self.conn.execute(sql, params or {}).fetchall()

    def run(self, sql: str, params: Params | None = None) -> int:
        with translate_errors():
            return self.conn.execute(sql, params or {}).rowcount

    def run_many(self, sql: str, params: Sequence[Params]) -> None:
        with translate_errors():
            self.conn.executemany(sql, params)


class SqliteDialect(Dialect):
    """SQLite: every write transaction holds the file's write lock, so nothing else locks;
    timestamps are epoch seconds from this process's clock."""

    name = "sqlite"
    order_column = "rowid"
    for_update = ""
    now = ":now"
    session_type = SqliteSession
    locks = False
    types = {name: sql[0] for name, sql in COLUMN_TYPES.items()}
    table_exists = "SELECT 1 FROM sqlite_master WHERE name = :name"
    json_value = ":json"

    def __init__(self, database: SqliteDatabase) -> None:
        self.database = database
        self.label = repr(database.path)

    @contextmanager
    def connection(self) -> Iterator[Session]:
        yield SqliteSession(self.database.connection())

    def query(self, sql: str, params: Params | None = None) -> list[Any]:
        """Through the database's own ``query`` (a connection refused as read-only is
        reopened once outside a transaction)."""
        rows: list[Any] = self.database.query(sql, params or {})
        return rows

    def execute(self, sql: str, params: Params | None = None) -> int:
        return int(self.database.execute(sql, params or {}).rowcount)

    def migration(self, name: str, sql: str) -> Migration:
        return Migration(name, sql)

    def now_params(self) -> dict[str, Any]:
        return {"now": time.time()}
