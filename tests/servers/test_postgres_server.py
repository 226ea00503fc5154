"""The PostgreSQL harness starts a real, fast, loopback-only cluster that survives restarts."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import pytest

psycopg = pytest.importorskip("psycopg")
sqlalchemy = pytest.importorskip("sqlalchemy")

from tests.servers.postgres import PostgresServer  # noqa: E402


@pytest.fixture(scope="module")
def pg() -> Iterator[PostgresServer]:
    with PostgresServer() as server:
        yield server


def test_starts_within_a_few_seconds_and_cleans_up() -> None:
    """A cluster is ready in well under the 5 s budget, and exit removes it and frees the port."""
    started = time.monotonic()
    with PostgresServer() as server:
        elapsed = time.monotonic() - started
        root, port = server.root, server.port
        with psycopg.connect(server.dsn) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
    assert elapsed < 5, f"startup took {elapsed:.2f} s"
    assert not root.exists()
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
        pass


def test_runs_with_the_test_settings(pg: PostgresServer) -> None:
    """The server listens on loopback only, keeps its socket in the temp dir, and skips fsync."""
    with psycopg.connect(pg.dsn) as conn:
        settings = dict(
            conn.execute(
                "SELECT name, setting FROM pg_settings WHERE name IN ('listen_addresses', "
                "'unix_socket_directories', 'fsync', 'synchronous_commit', 'full_page_writes', "
                "'port')"
            ).fetchall()
        )
    assert settings == {
        "listen_addresses": "127.0.0.1",
        "unix_socket_directories": str(pg.socket_dir),
        "fsync": "off",
        "synchronous_commit": "off",
        "full_page_writes": "off",
        "port": str(pg.port),
    }
    assert pg.dsn == f"postgresql://postgres@127.0.0.1:{pg.port}/postgres"


def test_data_survives_a_restart_on_the_same_port(pg: PostgresServer) -> None:
    """Rows committed before stop() are there after start(), on the same port."""
    dsn = pg.create_database("restart_check")
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE wrapped_dek (dek_id text PRIMARY KEY, mek_version text)")
        conn.execute("INSERT INTO wrapped_dek VALUES ('d1', 'v1')")
    port = pg.port

    pg.stop()
    assert not pg.is_running
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(dsn, connect_timeout=2).close()
    pg.start()

    assert pg.port == port
    with psycopg.connect(dsn) as conn:
        assert conn.execute("SELECT dek_id, mek_version FROM wrapped_dek").fetchall() == [
            ("d1", "v1")
        ]


def test_terminate_backends_kills_open_sessions(pg: PostgresServer) -> None:
    """terminate_backends() ends every session on one database; the client sees the error."""
    dsn = pg.create_database("terminate_check")
    with psycopg.connect(dsn, autocommit=True) as victim, psycopg.connect(pg.dsn) as bystander:
        assert victim.execute("SELECT 1").fetchone() == (1,)
        assert pg.terminate_backends("terminate_check") == 1
        with pytest.raises(psycopg.OperationalError):
            victim.execute("SELECT 1")
        assert bystander.execute("SELECT 1").fetchone() == (1,)
    with psycopg.connect(dsn) as fresh:
        assert fresh.execute("SELECT 1").fetchone() == (1,)


def test_sqlalchemy_url_uses_psycopg3(pg: PostgresServer) -> None:
    """The SQLAlchemy URL connects through the psycopg 3 driver."""
    engine = sqlalchemy.create_engine(pg.url)
    try:
        with engine.connect() as conn:
            assert conn.dialect.driver == "psycopg"
            assert conn.execute(sqlalchemy.text("SELECT current_user")).scalar() == "postgres"
    finally:
        engine.dispose()


def test_database_names_are_checked(pg: PostgresServer) -> None:
    """Names that would need quoting are refused before any SQL runs."""
    with pytest.raises(ValueError):
        pg.create_database('x"; DROP DATABASE postgres; --')
