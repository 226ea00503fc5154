"""Fixtures for the cli and rotation suites: a product environment in a temporary directory."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from field_encrypt.config import Settings, load_settings
from field_encrypt.products import ProductRuntime
from tests.support.sample_product import product


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """FIELD_ENCRYPT_* for a local keyring and a SQLite file under ``tmp_path`` (also set)."""
    values = {
        "FIELD_ENCRYPT_KEY_PROVIDER": "local",
        "FIELD_ENCRYPT_KEYRING": str(tmp_path / "keyring.json"),
        "FIELD_ENCRYPT_DATABASE": str(tmp_path / "fe.db"),
        "FIELD_ENCRYPT_ENABLED": "true",
    }
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
