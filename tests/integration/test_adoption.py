"""Adoption into an application's existing database: field-encrypt's migrations table has
a name of its own (``field_encrypt_migrations``), so Rails' or golang-migrate's
``schema_migrations`` is left alone; the table of earlier builds is renamed; a table of the
same name as one of ours is a configuration error (exit 3), not "unavailable" (exit 7)."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest

from field_encrypt.errors import ConfigurationError
from field_encrypt.rehearsal import product, seed
from tests.backends import Backend
from tests.cli.helpers import cli_process

KINDS = ["sqlite", "postgres"]
PRODUCT = "field_encrypt.rehearsal:product"


def _sql(backend: Backend, statement: str) -> list[tuple[Any, ...]]:
    if backend.kind == "postgres":
        import psycopg

        with psycopg.connect(backend.url, autocommit=True) as pg:
            cursor = pg.execute(statement)  # type: ignore[arg-type]
            return [tuple(r) for r in cursor.fetchall()] if cursor.description else []
    conn = sqlite3.connect(backend.url)
    try:
        with conn:
            return conn.execute(statement).fetchall()
    finally:
        conn.close()


def _tables(backend: Backend) -> set[str]:
    if backend.kind == "postgres":
        rows = _sql(backend, "SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
    else:
        rows = _sql(backend, "SELECT name FROM sqlite_master WHERE type = 'table'")
    return {name for (name,) in rows}


def _env(backend: Backend, tmp_path: Path) -> dict[str, str]:
    return {
        **backend.environ,
        "FIELD_ENCRYPT_KEY_PROVIDER": "local",
        "FIELD_ENCRYPT_KEYRING": str(tmp_path / "keyring.json"),
        "FIELD_ENCRYPT_ENABLED": "true",
    }


@pytest.mark.parametrize("store_backend", KINDS, indirect=True)
def test_a_foreign_schema_migrations_is_left_alone(store_backend: Backend, tmp_path: Path) -> None:
    """golang-migrate's table (version, dirty) in the database: init and keys list work (keys
    list exited 7, "no such column: name"), and that table keeps its shape and its row."""
    _sql(
        store_backend,
        "CREATE TABLE schema_migrations (version bigint NOT NULL PRIMARY KEY, dirty boolean NOT NULL)",
    )
    _sql(store_backend, "INSERT INTO schema_migrations (version, dirty) VALUES (20240101, false)")
    env = _env(store_backend, tmp_path)
    created = cli_process("init", "--product", PRODUCT, env=env)
    assert created.returncode == 0, created.stderr
    listed = cli_process("keys", "list", "--product", PRODUCT, env=env)
    assert listed.returncode == 0, listed.stderr
    assert _sql(store_backend, "SELECT version, dirty FROM schema_migrations") in (
        [(20240101, False)],
        [(20240101, 0)],
    )
    assert "field_encrypt_migrations" in _tables(store_backend)
    names = {n for (n,) in _sql(store_backend, "SELECT name FROM field_encrypt_migrations")}
    assert "0001_dek_store" in names


@pytest.mark.parametrize("store_backend", KINDS, indirect=True)
def test_the_migrations_table_of_earlier_builds_is_renamed(
    store_backend: Backend, tmp_path: Path
) -> None:
    """A database whose steps are recorded in ``schema_migrations`` (name, applied_at), as
    earlier builds wrote it: opened, the table is renamed, no step runs again, data stays."""
    settings = store_backend.settings(keyring=str(tmp_path / "keyring.json"))
    runtime = product.open(settings)
    try:
        seed(runtime, 3)
        before = runtime.database.applied_migrations()
    finally:
        runtime.close()
    _sql(store_backend, "ALTER TABLE field_encrypt_migrations RENAME TO schema_migrations")
    if store_backend.kind == "postgres":
        _sql(
            store_backend,
            "ALTER INDEX field_encrypt_migrations_pkey RENAME TO schema_migrations_pkey",
        )
    assert "field_encrypt_migrations" not in _tables(store_backend)

    runtime = product.open(settings)
    try:
        assert runtime.database.applied_migrations() == before
        assert runtime.documents["records"].count() == 3
        assert runtime.dek_store.count_by_version() == {"1": 3}
    finally:
        runtime.close()
    tables = _tables(store_backend)
    assert "field_encrypt_migrations" in tables and "schema_migrations" not in tables


@pytest.mark.parametrize("store_backend", KINDS, indirect=True)
def test_a_table_in_the_way_is_a_configuration_error(
    store_backend: Backend, tmp_path: Path
) -> None:
    """The application has a ``dek_store`` table of its own: opening fails with a
    ConfigurationError naming the step, and the CLI exits 3 (it exited 7, "retry")."""
    _sql(store_backend, "CREATE TABLE dek_store (id integer PRIMARY KEY, label text)")
    with pytest.raises(ConfigurationError, match=r"schema conflict .*0001_dek_store"):
        product.open(store_backend.settings(keyring=str(tmp_path / "keyring.json")))
    result = cli_process("init", "--product", PRODUCT, env=_env(store_backend, tmp_path))
    assert result.returncode == 3, result.stderr
    assert "schema conflict" in result.stderr and "Traceback" not in result.stderr
