"""Fixtures for the unit suite: a real local keyring and a real SQLite dek_store in tmp_path."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from field_encrypt import FieldEncryptor, compiled
from field_encrypt.backends.sqlite.db import SqliteDatabase
from field_encrypt.backends.sqlite.dek_store import SqliteDekStore
from field_encrypt.cache import DekCache
from field_encrypt.providers.local import LocalKeyProvider

COLLECTIONS = {"notes": ["title", "body", "meta.secret"]}


class Clock:
    """A clock tests move by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def provider(tmp_path: Path) -> LocalKeyProvider:
    return LocalKeyProvider(tmp_path / "keyring.json", mek_name="notelett-mek", refresh_seconds=0)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqliteDekStore]:
    database = SqliteDatabase(tmp_path / "notelett.db")
    yield SqliteDekStore(database, product="notelett")
    database.close()


@pytest.fixture
def encryptor(provider: LocalKeyProvider, store: SqliteDekStore, clock: Clock) -> FieldEncryptor:
    return FieldEncryptor(
        product="notelett",
        provider=provider,
        store=store,
        collections=COLLECTIONS,
        cache=DekCache(ttl_seconds=60, clock=clock),
    )


@pytest.fixture(params=["compiled", "pure"])
def read_path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Each read test runs on the compiled path (``field_encrypt._gcm``) and on pure Python.

    Set before the encryptor is made (list it first, or in ``usefixtures``): an encryptor
    picks its path at construction. Without the extension the compiled run is skipped
    (tests/unit/test_compiled.py fails instead when ``CI`` is set).
    """
    if request.param == "compiled":
        if not compiled.built():
            pytest.skip("field_encrypt._gcm is not built")
        monkeypatch.delenv(compiled.PURE_PYTHON_ENV, raising=False)
    else:
        monkeypatch.setenv(compiled.PURE_PYTHON_ENV, "1")
    return str(request.param)
