"""Fixtures for the console: the sample product on a fresh database of each store kind."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from field_encrypt.products import ProductRuntime
from field_encrypt.rotation import MigrationOptions, create_version, migrate, open_ledger
from tests.backends import BACKEND_KINDS, Backend, backend_for
from tests.support.fixtures import env, runtime, settings, store_kind
from tests.support.sample_product import product
from tests.support.seed import seed

__all__ = ["Seeded", "env", "rewrap", "runtime", "seeded", "settings", "store_kind"]


@dataclass(kw_only=True)
class Seeded:
    """An opened runtime and the environment an operator would export for it."""

    kind: str
    env: dict[str, str]
    runtime: ProductRuntime


def console_env(backend: Backend, tmp_path: Path) -> dict[str, str]:
    """FIELD_ENCRYPT_* for the sample product on ``backend`` with a local keyring."""
    return {
        **backend.environ,
        "FIELD_ENCRYPT_KEY_PROVIDER": "local",
        "FIELD_ENCRYPT_KEYRING": str(tmp_path / "keyring.json"),
        "FIELD_ENCRYPT_ENABLED": "true",
    }


@pytest.fixture(params=BACKEND_KINDS)
def seeded(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Seeded]:
    """Version 1 wraps 10 DEKs, version 2 (current) 5; nothing rewrapped yet. The
    environment is exported too, so the CLI in this process reads the same database."""
    backend = backend_for(request.param, request, tmp_path)
    env = console_env(backend, tmp_path)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    # Refresh 0: the console's runtime sees at once what the CLI changes in the keyring.
    settings = backend.settings(keyring=env["FIELD_ENCRYPT_KEYRING"], provider_refresh_seconds=0)
    runtime = product.open(settings)
    try:
        seed(runtime, 10)
        create_version(runtime)
        seed(runtime, 5, start=10)
        yield Seeded(kind=backend.kind, env=env, runtime=runtime)
    finally:
        runtime.close()


def rewrap(runtime: ProductRuntime) -> None:
    """Rewrap every DEK onto the current version, as ``migrate --mode rewrap-deks`` does."""
    report = migrate(runtime, open_ledger(runtime), MigrationOptions(mode="rewrap-deks"))
    assert report.status == "completed"
