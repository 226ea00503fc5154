"""The parameters of the contract suites: every provider and every store runs the same tests.

A harness gives the suite what it cannot do through the protocol alone (the ``env``
provider cannot create versions at run time, so its harness builds it with them). The
production providers' harnesses (``tests/harnesses.py``) run them against real local
servers: the Key Vault server, moto's KMS and a SoftHSM2 token, started once for this
package, and only when a test of that provider runs.
"""

from __future__ import annotations

import base64
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Protocol

import pytest

from field_encrypt.backends.base import DekStore, KekStore
from field_encrypt.backends.sqlite.db import SqliteDatabase
from field_encrypt.backends.sqlite.dek_store import SqliteDekStore
from field_encrypt.backends.sqlite.kek_store import SqliteKekStore
from field_encrypt.documents import DocumentStore
from field_encrypt.providers.base import KeyProvider
from field_encrypt.providers.env import EnvKeyProvider
from field_encrypt.providers.kek_tier import KekTierProvider
from field_encrypt.providers.local import LocalKeyProvider
from tests.backends import BACKEND_KINDS
from tests.harnesses import (  # noqa: F401 - package-scoped fixtures used by the harnesses
    HARNESS_FIXTURES,
    RemoteHarness,
    akv_harness,
    aws_kms_harness,
    keyvault,
    kms,
    pkcs11_harness,
    softhsm,
)


class ProviderHarness(Protocol):
    def make(self, versions: int, disabled: frozenset[int] = frozenset()) -> KeyProvider:
        """A provider whose MEK has ``versions`` versions (oldest first), the newest current,
        with the versions at the ``disabled`` positions disabled."""
        ...

    def unmade(self) -> KeyProvider | None:
        """A provider on a MEK the key service does not have yet (no version made), or
        ``None`` where a provider cannot be without a version."""
        ...

    secrets: list[bytes]
    """Key material the harness knows of, which must never appear in reprs or errors."""


class LocalHarness:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.secrets: list[bytes] = []
        self._count = 0

    def make(self, versions: int, disabled: frozenset[int] = frozenset()) -> KeyProvider:
        self._count += 1
        provider = LocalKeyProvider(self.directory / f"ring{self._count}.json", mek_name="mek")
        for _ in range(versions - 1):
            provider.create_version()
        names = [v.version for v in provider.versions()]
        for index in disabled:
            provider.set_enabled(names[index], False)
        import json

        data = json.loads(provider.path.read_text())
        self.secrets += [base64.b64decode(v["key"]) for v in data["versions"]]
        return provider

    def unmade(self) -> KeyProvider | None:
        return None  # a keyring file is created with its first version


class EnvHarness:
    def __init__(self) -> None:
        self.secrets: list[bytes] = []

    def make(self, versions: int, disabled: frozenset[int] = frozenset()) -> KeyProvider:
        keys = [os.urandom(32) for _ in range(versions)]
        self.secrets += keys
        previous = ",".join(
            f"v{i + 1}={base64.b64encode(k).decode()}" for i, k in enumerate(keys[:-1])
        )
        return EnvKeyProvider(
            mek_name="mek",
            key=base64.b64encode(keys[-1]).decode(),
            key_version=f"v{versions}",
            previous_keys=previous,
            disabled_versions=[f"v{i + 1}" for i in disabled],
        )

    def unmade(self) -> KeyProvider | None:
        return None  # the key is the provider's configuration: there is always one version


class KekTierHarness:
    """The KEK tier over a local keyring: it must honour the same contract."""

    def __init__(self, directory: Path) -> None:
        self.local = LocalHarness(directory)
        self.directory = directory
        self.secrets = self.local.secrets

    def make(self, versions: int, disabled: frozenset[int] = frozenset()) -> KeyProvider:
        mek = self.local.make(versions, disabled)
        database = SqliteDatabase(self.directory / f"keks{self.local._count}.db")
        return KekTierProvider(
            mek, SqliteKekStore(database, product="contract"), product="contract"
        )

    def unmade(self) -> KeyProvider | None:
        return None  # over a local keyring, which always has a version


PROVIDER_KINDS = ["local", "env", "kek-tier", "akv", "aws-kms", "pkcs11"]
REMOTE_PROVIDER_KINDS = ["akv", "aws-kms"]
STORE_KINDS = BACKEND_KINDS


@pytest.fixture(params=PROVIDER_KINDS)
def provider_harness(request: pytest.FixtureRequest, tmp_path: Path) -> ProviderHarness:
    kind = request.param
    if kind == "local":
        return LocalHarness(tmp_path)
    if kind == "env":
        return EnvHarness()
    if kind == "kek-tier":
        return KekTierHarness(tmp_path)
    harness: ProviderHarness = request.getfixturevalue(HARNESS_FIXTURES[kind])
    return harness


@pytest.fixture(params=REMOTE_PROVIDER_KINDS)
def remote_harness(request: pytest.FixtureRequest) -> RemoteHarness:
    """The providers that call a service over the network, whose server injects faults."""
    harness: RemoteHarness = request.getfixturevalue(HARNESS_FIXTURES[request.param])
    return harness


@pytest.fixture(params=STORE_KINDS)
def dek_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[DekStore]:
    kind = request.param
    if kind == "sqlite":
        database = SqliteDatabase(tmp_path / "store.db")
        yield SqliteDekStore(database, product="contract")
        database.close()
        return
    if kind == "postgres":
        from field_encrypt.backends.postgres.db import PostgresDatabase
        from field_encrypt.backends.postgres.dek_store import PostgresDekStore

        pg = PostgresDatabase(request.getfixturevalue("postgres_url"))
        yield PostgresDekStore(pg, product="contract")
        pg.close()
        return
    if kind == "cosmos":
        from field_encrypt.backends.cosmos.db import CosmosDatabase
        from field_encrypt.backends.cosmos.dek_store import CosmosDekStore

        key = request.getfixturevalue("cosmos_server").key
        cosmos = CosmosDatabase.connect(request.getfixturevalue("cosmos_url"), key=key)
        yield CosmosDekStore(cosmos, product="contract")
        cosmos.close()
        return
    raise AssertionError(kind)


@pytest.fixture(params=STORE_KINDS)
def kek_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[KekStore]:
    """The product's kek_store in one fresh database of each kind."""
    from field_encrypt.backends.registry import open_database, open_kek_store
    from tests.backends import backend_for

    backend = backend_for(request.param, request, tmp_path)
    database = open_database(backend.settings())
    yield open_kek_store(database, product="contract")
    database.close()


OpenCollection = Callable[[str], DocumentStore]


@pytest.fixture(params=STORE_KINDS)
def open_collection(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[OpenCollection]:
    """Opens generic document stores (any collection) in one fresh database of each kind."""
    from field_encrypt.backends.registry import open_database, open_document_store
    from tests.backends import backend_for

    backend = backend_for(request.param, request, tmp_path)
    database = open_database(backend.settings())
    yield lambda collection: open_document_store(database, collection=collection)
    database.close()
