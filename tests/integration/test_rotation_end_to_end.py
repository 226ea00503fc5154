"""The runbook's rotation through the rotation engine, on every provider and every store.

Encrypt under v1, create v2, run ``migrate`` (rewrap-deks) to move every DEK onto v2, disable
v1: every document still decrypts with a cold cache, and v1 refuses what it used to unwrap.
Each production provider runs against its real local server (Key Vault server, moto's KMS,
SoftHSM2), each store on a fresh database (SQLite, PostgreSQL, the Cosmos DB test server).
The same steps through the CLI, with NoteLett serving, are ``test_runbook_stacks.py``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from field_encrypt.backends.registry import open_run_ledger
from field_encrypt.errors import KeyVersionDisabledError
from field_encrypt.products import ProductRuntime
from field_encrypt.providers.base import KeyProvider, dek_context
from field_encrypt.providers.observed import observed
from field_encrypt.rotation import MigrationOptions, migrate, verify
from tests.backends import BACKEND_KINDS, Backend
from tests.harnesses import HARNESS_FIXTURES
from tests.support.sample_product import product
from tests.support.seed import document, read_all, seed

DOCUMENTS = 24
PROVIDERS = ["local", *HARNESS_FIXTURES]


def _provider(kind: str, request: pytest.FixtureRequest, runtime: ProductRuntime) -> KeyProvider:
    """The ``local`` provider the settings built, or a production provider on a fresh MEK with
    one version, put in its place (measured, as ``open_runtime`` builds it)."""
    if kind == "local":
        return runtime.provider
    harness: Any = request.getfixturevalue(HARNESS_FIXTURES[kind])
    provider: KeyProvider = harness.make(1)
    return observed(provider)


@pytest.fixture
def runtime(store_backend: Backend, tmp_path: Path) -> Iterator[ProductRuntime]:
    """The sample product on the test's database (local keyring until the test swaps it)."""
    rt = product.open(store_backend.settings(keyring=str(tmp_path / "keyring.json")))
    yield rt
    rt.close()


@pytest.mark.parametrize("store_backend", BACKEND_KINDS, indirect=True)
@pytest.mark.parametrize("provider_kind", PROVIDERS)
def test_rotation_keeps_every_document_readable(
    provider_kind: str, runtime: ProductRuntime, request: pytest.FixtureRequest
) -> None:
    """Encrypt under v1, create v2, migrate rewrap-deks, disable v1: every DEK moved once (a
    re-run matches nothing), every document decrypts with a cold cache, v1 refuses to unwrap."""
    provider = _provider(provider_kind, request, runtime)
    runtime.provider = runtime.encryptor.provider = provider
    seed(runtime, DOCUMENTS)
    v1 = provider.current_version()
    old_row = runtime.dek_store.scan(limit=1).records[0]
    assert runtime.dek_store.count_by_version() == {v1: DOCUMENTS}

    v2 = provider.create_version().version
    assert provider.current_version() == v2
    ledger = open_run_ledger(runtime.database)
    report = migrate(runtime, ledger, MigrationOptions(mode="rewrap-deks", batch_size=10))
    assert report.status == "completed", report
    assert (report.counters.changed, report.counters.failed, report.remaining) == (DOCUMENTS, 0, 0)
    again = migrate(runtime, ledger, MigrationOptions(mode="rewrap-deks", batch_size=10))
    assert (again.counters.changed, again.counters.skipped) == (0, DOCUMENTS)
    assert runtime.dek_store.count_not_on(v2) == 0
    provider.set_enabled(v1, False)

    runtime.encryptor.cache.clear()
    assert read_all(runtime) == {f"doc-{i}": document(i) for i in range(DOCUMENTS)}
    assert verify(runtime, mek_version=v2, sample=DOCUMENTS).clean
    with pytest.raises(KeyVersionDisabledError):
        provider.unwrap(old_row.wrapped, version=v1, context=dek_context("sample", old_row.dek_id))
    seed(runtime, 1, start=DOCUMENTS)
    assert runtime.dek_store.count_by_version() == {v2: DOCUMENTS + 1}
    assert read_all(runtime)[f"doc-{DOCUMENTS}"] == document(DOCUMENTS)
