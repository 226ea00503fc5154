"""The PostgreSQL dialect of the shared SQL stores: SQLAlchemy Core on psycopg 3."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Connection, text

from field_encrypt.backends.postgres.db import Migration, PostgresDatabase
from field_encrypt.backends.sql.dialect import COLUMN_TYPES, Dialect, Params, Session

_NAMED = re.compile(r"(?<![:\w]):(\w+)")


class PostgresSession(Session):
    """A :class:`Session` on one pooled SQLAlchemy connection."""

    conn: Connection

    def rows(self, sql: str, params: Params | None = None) -> list[Any]:
        return list(self.conn.execute(text(sql), dict(params or {})).all())

    def run(self, sql: str, params: Params | None = None) -> int:
        return int(self.conn.execute(text(sql), dict(params or {})).rowcount)

    def run_many(self, sql: str, params: Sequence[Params]) -> None:
        if params:
            self.conn.execute(text(sql), [dict(p) for p in params])


class PostgresDialect(Dialect):
    """PostgreSQL: lease decisions take a transaction-level advisory lock, rows are locked
    with ``FOR UPDATE``, timestamps come from the server's clock."""

    name = "postgres"
    order_column = "seq"
    for_update = " FOR UPDATE"
    now = "clock_timestamp()"
    session_type = PostgresSession
    locks = True
    types = {name: sql[1] for name, sql in COLUMN_TYPES.items()}
    table_exists = "SELECT 1 WHERE to_regclass(:name) IS NOT NULL"
    json_value = "CAST(:json AS jsonb)"

    def __init__(self, database: PostgresDatabase) -> None:
        self.database = database
        self.label = repr(database)

    @contextmanager
    def connection(self) -> Iterator[Session]:
        with self.database.connection() as conn:
            yield PostgresSession(conn)

    def query(self, sql: str, params: Params | None = None) -> list[Any]:
        """Reads go through psycopg directly (binary results, no per-row processing)."""
        statement = _NAMED.sub(r"%(\1)s", sql.replace("%", "%%"))
        rows: list[Any] = self.database.query(statement, dict(params or {}))
        return rows

    def migration(self, name: str, sql: str) -> Migration:
        return Migration(name, sql)

    def now_params(self) -> dict[str, Any]:
        return {}

    def lock(self, session: Session, key: str) -> None:
        digest = hashlib.sha256(key.encode()).digest()
        session.rows(
            "SELECT pg_advisory_xact_lock(:key)",
            {"key": int.from_bytes(digest[:8], "big", signed=True)},
        )
