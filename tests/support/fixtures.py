"""Fixtures for the cli and rotation suites: a product environment in a temporary directory.

The product's database is SQLite unless the test asks for another kind: a suite runs on
every store with ``pytestmark = pytest.mark.parametrize("store_kind", STORE_KINDS,
indirect=True)`` (or the ``on_every_store`` mark below). PostgreSQL and the Cosmos DB test
server start on first use, once per session (``tests/backends.py``); each test gets a fresh,
empty database.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from field_encrypt.backends.registry import open_run_ledger
from field_encrypt.config import Settings, load_settings
from field_encrypt.products import ProductRuntime
from tests.backends import BACKEND_KINDS, backend_for
from tests.support.sample_product import product

STORE_KINDS = BACKEND_KINDS
on_every_store = pytest.mark.parametrize("store_kind", STORE_KINDS, indirect=True)
"""Run the marked test (or module, as ``pytestmark``) once per store kind."""


@pytest.fixture
def store_kind(request: pytest.FixtureRequest) -> str:
    """The kind of database the product's environment names (``sqlite`` unless parametrised)."""
    kind: str = getattr(request, "param", "sqlite")
    return kind


@pytest.fixture
def env(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, store_kind: str, request: pytest.FixtureRequest
) -> dict[str, str]:
    """FIELD_ENCRYPT_* for a local keyring and a fresh database of ``store_kind`` (a SQLite file
    under ``tmp_path`` by default), also set in the process environment."""
    values = {
        "FIELD_ENCRYPT_KEY_PROVIDER": "local",
        "FIELD_ENCRYPT_KEYRING": str(tmp_path / "keyring.json"),
        "FIELD_ENCRYPT_DATABASE": str(tmp_path / "fe.db"),
        "FIELD_ENCRYPT_ENABLED": "true",
    }
    if store_kind != "sqlite":
        values |= backend_for(store_kind, request, tmp_path).environ
    for key, value in values.items():
        monkeypatch.setenv(key, value)
    return values


@pytest.fixture
def settings(env: dict[str, str]) -> Settings:
    return load_settings(env)


@pytest.fixture
def runtime(settings: Settings) -> Iterator[ProductRuntime]:
    """The sample product, opened on the test's database and keyring."""
    rt = product.open(settings)
    yield rt
    rt.close()


def expire_leases(env: Mapping[str, str]) -> int:
    """Move every live lease of the sample product into the past, through the run ledger (what
    the lease's TTL does in real time to a killed worker's lease); how many there were."""
    runtime = product.open(load_settings(env))
    try:
        ledger = open_run_ledger(runtime.database)
        leases = ledger.live_leases(product.name, now=time.time())
        for run, shard in leases:
            assert shard.owner is not None
            ledger.renew_lease(run.run_id, shard.index, owner=shard.owner, now=0.0, ttl=0.0)
        return len(leases)
    finally:
        runtime.close()


def move_holders_elsewhere(env: Mapping[str, str]) -> int:
    """Hand every live lease of the sample product to a holder on another host (a dead
    holder there cannot be told from a live one, so its lease must be waited out); how many
    there were."""
    runtime = product.open(load_settings(env))
    try:
        ledger = open_run_ledger(runtime.database)
        leases = ledger.live_leases(product.name, now=time.time())
        for run, shard in leases:
            assert shard.owner is not None
            ledger.renew_lease(run.run_id, shard.index, owner=shard.owner, now=0.0, ttl=0.0)
            ledger.acquire_shard(
                run.run_id, shard.index, owner=ELSEWHERE, now=time.time(), ttl=3600.0
            )
        return len(leases)
    finally:
        runtime.close()


ELSEWHERE = "elsewhere.invalid:1:000000"


def ledger_runs(env: Mapping[str, str], *, field: str = "mode") -> list[tuple[str, str]]:
    """``(plan.FIELD, status)`` of the sample product's runs, newest last."""
    runtime = product.open(load_settings(env))
    try:
        runs: list[Any] = open_run_ledger(runtime.database).latest_runs(product.name, limit=100)
        return [(getattr(r.plan, field), r.status) for r in reversed(runs)]
    finally:
        runtime.close()
