"""Store backends for tests: one server of each kind per session, a fresh database per test.

A pytest plugin (the root conftest loads it). ``store_backend`` is parametrized by
:data:`BACKEND_KINDS` through ``@pytest.mark.parametrize("store_backend", BACKEND_KINDS,
indirect=True)`` or a suite's own fixture; it hands out a :class:`Backend`, whose ``environ``
is what an operator would export (``FIELD_ENCRYPT_DATABASE`` and, for Cosmos DB,
``FIELD_ENCRYPT_COSMOS_KEY``). Servers start on first use only, so a run of SQLite tests never
starts PostgreSQL or Node. When a server cannot run, its tests skip on a developer machine and
fail in CI (``tests.conftest.require``).
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import urllib.parse
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from field_encrypt.config import Settings, load_settings
from tests.conftest import require

if TYPE_CHECKING:
    from azure.cosmos import CosmosClient

    from tests.servers.cosmos import CosmosServer
    from tests.servers.postgres import PostgresServer

ALL_BACKEND_KINDS = ("sqlite", "postgres", "cosmos")


def _backend_kinds(chosen: str | None) -> list[str]:
    """The kinds the store-parametrised suites run on: all of them, unless
    ``FIELD_ENCRYPT_TEST_STORES`` (comma-separated) narrows a run, as the secret-hygiene
    slice does (it runs on SQLite; the full run covers every store)."""
    if not chosen:
        return list(ALL_BACKEND_KINDS)
    kinds = [kind.strip() for kind in chosen.split(",") if kind.strip()]
    unknown = sorted(set(kinds) - set(ALL_BACKEND_KINDS))
    if unknown or not kinds:
        named = f" (unknown: {', '.join(unknown)})" if unknown else ""
        raise pytest.UsageError(
            f"FIELD_ENCRYPT_TEST_STORES={chosen!r}{named}: "
            f"name some of {', '.join(ALL_BACKEND_KINDS)}, comma-separated"
        )
    return kinds


BACKEND_KINDS = _backend_kinds(os.environ.get("FIELD_ENCRYPT_TEST_STORES"))


@dataclass(kw_only=True)
class Backend:
    """One fresh, empty database of one kind, and the settings that reach it."""

    kind: str
    url: str
    environ: dict[str, str] = field(default_factory=dict)

    def settings(self, **overrides: object) -> Settings:
        """Settings for this database (``overrides`` as ``load_settings`` takes them)."""
        return load_settings(self.environ, **overrides)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """A throwaway PostgreSQL cluster for the whole session."""
    require(importlib.util.find_spec("psycopg") is not None, "needs the 'postgres' extra")
    from tests.servers.postgres import PostgresServer, PostgresServerError, find_bindir

    try:
        find_bindir()
    except PostgresServerError as exc:
        require(False, str(exc))
    with PostgresServer() as server:
        yield server


@pytest.fixture(scope="session")
def cosmos_server() -> Iterator[CosmosServer]:
    """The Cosmos DB test server for the whole session."""
    require(importlib.util.find_spec("azure.cosmos") is not None, "needs the 'cosmos' extra")
    require(shutil.which("node") is not None, "needs Node.js 20 or later on PATH")
    from tests.servers.cosmos import CosmosServer

    with CosmosServer() as server:
        yield server


@pytest.fixture(scope="session")
def cosmos_client(cosmos_server: CosmosServer) -> Iterator[CosmosClient]:
    """One verifying client for the session's administrative calls."""
    with cosmos_server.client() as client:
        yield client


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> Iterator[str]:
    """The URL of a new, empty PostgreSQL database, dropped after the test."""
    import psycopg

    name = f"t_{uuid.uuid4().hex[:16]}"
    with psycopg.connect(postgres_server.dsn, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    yield postgres_server.dsn_for(name)
    with psycopg.connect(postgres_server.dsn, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def cosmos_url(cosmos_server: CosmosServer, cosmos_client: CosmosClient) -> Iterator[str]:
    """A ``cosmos://`` URL naming a new Cosmos DB database, deleted after the test."""
    name = f"t{uuid.uuid4().hex[:16]}"
    yield cosmos_url_for(cosmos_server, name)
    from azure.cosmos.exceptions import CosmosResourceNotFoundError

    with contextlib.suppress(CosmosResourceNotFoundError):
        cosmos_client.delete_database(name)


def cosmos_url_for(server: CosmosServer, database: str, **parameters: Any) -> str:
    """``cosmos://127.0.0.1:PORT/?database=...&ca_cert=...`` for the test server."""
    host = urllib.parse.urlsplit(server.url).netloc
    query = urllib.parse.urlencode(
        {"database": database, "ca_cert": str(server.ca_cert), **parameters}
    )
    return f"cosmos://{host}/?{query}"


@pytest.fixture
def store_backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    """A fresh database of the kind in ``request.param`` (one of :data:`BACKEND_KINDS`)."""
    return backend_for(getattr(request, "param", "sqlite"), request, tmp_path)


def backend_for(kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    """A fresh database of ``kind``, for fixtures parametrized by :data:`BACKEND_KINDS`."""
    if kind == "sqlite":
        url = str(tmp_path / "field-encrypt.db")
        return Backend(kind=kind, url=url, environ={"FIELD_ENCRYPT_DATABASE": url})
    if kind == "postgres":
        url = request.getfixturevalue("postgres_url")
        return Backend(kind=kind, url=url, environ={"FIELD_ENCRYPT_DATABASE": url})
    if kind == "cosmos":
        url = request.getfixturevalue("cosmos_url")
        server: CosmosServer = request.getfixturevalue("cosmos_server")
        environ = {"FIELD_ENCRYPT_DATABASE": url, "FIELD_ENCRYPT_COSMOS_KEY": server.key}
        return Backend(kind=kind, url=url, environ=environ)
    raise AssertionError(f"unknown backend kind {kind!r}")


def new_backend(kind: str, request: pytest.FixtureRequest, directory: Path) -> Backend:
    """Another fresh database of ``kind`` each call (dropped after the test), for a test that
    needs several: ``backend_for`` hands out the test's one database."""
    if kind == "sqlite":
        return backend_for(kind, request, directory)
    name = f"t{uuid.uuid4().hex[:16]}"
    if kind == "postgres":
        import psycopg

        server: PostgresServer = request.getfixturevalue("postgres_server")
        with psycopg.connect(server.dsn, autocommit=True) as admin:
            admin.execute(f'CREATE DATABASE "{name}"')

        def drop() -> None:
            with psycopg.connect(server.dsn, autocommit=True) as admin:
                admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

        request.addfinalizer(drop)
        url = server.dsn_for(name)
        return Backend(kind=kind, url=url, environ={"FIELD_ENCRYPT_DATABASE": url})
    if kind == "cosmos":
        cosmos: CosmosServer = request.getfixturevalue("cosmos_server")
        client: CosmosClient = request.getfixturevalue("cosmos_client")

        def delete() -> None:
            from azure.cosmos.exceptions import CosmosResourceNotFoundError

            with contextlib.suppress(CosmosResourceNotFoundError):
                client.delete_database(name)

        request.addfinalizer(delete)
        url = cosmos_url_for(cosmos, name)
        environ = {"FIELD_ENCRYPT_DATABASE": url, "FIELD_ENCRYPT_COSMOS_KEY": cosmos.key}
        return Backend(kind=kind, url=url, environ=environ)
    raise AssertionError(f"unknown backend kind {kind!r}")
