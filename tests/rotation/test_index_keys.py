"""Index root keys ride along with MEK rotation: rewrap moves them, verify and counts see them."""

from __future__ import annotations

import pytest

from field_encrypt.backends.base import KEK_PREFIX
from field_encrypt.blind_index import IndexedField
from field_encrypt.config import load_settings
from field_encrypt.index_keys import IndexKeyring, index_key_id
from field_encrypt.products import ProductRuntime
from field_encrypt.rotation import verify
from field_encrypt.testing import FakeClock
from field_encrypt.usage import dek_counts
from tests.rotation.helpers import run, versions_of
from tests.support.sample_product import product
from tests.support.seed import seed

SSN = IndexedField(collection="records", path="ssn")


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def _keyring(runtime: ProductRuntime) -> IndexKeyring:
    return IndexKeyring(
        product=runtime.encryptor.product, provider=runtime.provider, store=runtime.dek_store
    )


def test_verify_does_not_call_an_index_key_an_unreferenced_dek(runtime: ProductRuntime) -> None:
    """An index root key is in the dek_store but no document names it: verify stays clean,
    while a real orphan DEK is still reported."""
    seed(runtime, 4)
    _keyring(runtime).create(1)
    report = verify(runtime, mek_version="1")
    assert report.clean, report.as_dict()
    assert report.by_version == {"1": 5}  # counted: the version cannot retire under it
    orphan = runtime.encryptor.create_dek()
    report = verify(runtime, mek_version="1")
    assert report.unreferenced_deks == 1 and report.unreferenced_examples == [orphan]


def test_rewrap_moves_the_index_key_and_values_stay(
    runtime: ProductRuntime, clock: FakeClock
) -> None:
    """``migrate rewrap`` rewraps the index root key with the DEKs; the index values computed
    before and after are the same, so no re-index follows an MEK rotation."""
    seed(runtime, 6)
    keyring = _keyring(runtime)
    keyring.create(1)
    before = keyring.blind_index([SSN], version=1).value("records", "ssn", "123-45-6789")
    runtime.provider.create_version()
    report = run(runtime, clock)
    assert report.status == "completed" and report.counters.changed == 7
    assert versions_of(runtime) == {"2": 7}
    assert dek_counts(runtime) == {"2": 7}
    key_id = index_key_id(runtime.encryptor.product, 1)
    assert runtime.dek_store.get(key_id).mek_version == "2"
    assert verify(runtime, mek_version="2").clean
    after = _keyring(runtime).blind_index([SSN], version=1).value("records", "ssn", "123-45-6789")
    assert after == before


def test_under_the_kek_tier_the_index_key_sits_where_a_new_dek_would(
    env: dict[str, str], monkeypatch: pytest.MonkeyPatch, clock: FakeClock
) -> None:
    """With ``FIELD_ENCRYPT_KEY_LAYOUT=kek`` the root key is wrapped under the default
    partition's KEK, like a new DEK, and still opens to the same key after the MEK rotates."""
    monkeypatch.setenv("FIELD_ENCRYPT_KEY_LAYOUT", "kek")
    runtime = product.open(load_settings({**env, "FIELD_ENCRYPT_KEY_LAYOUT": "kek"}))
    try:
        keyring = _keyring(runtime)
        keyring.create(1)
        record = runtime.dek_store.get(index_key_id(runtime.encryptor.product, 1))
        assert record.mek_version.startswith(KEK_PREFIX)
        before = keyring.blind_index([SSN], version=1).value("records", "ssn", "x")
        runtime.provider.create_version()
        assert run(runtime, clock).status == "completed"
        assert dek_counts(runtime) == {"2": 1}
        assert (
            _keyring(runtime).blind_index([SSN], version=1).value("records", "ssn", "x") == before
        )
    finally:
        runtime.close()
