"""Two products in one database on the same MEK: neither ``keys disable`` nor the
retirement gate lets one product disable a version another still wraps DEKs under."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from field_encrypt.errors import RotationError
from field_encrypt.products import ProductRuntime
from field_encrypt.rehearsal import product, seed
from field_encrypt.rotation import (
    MigrationOptions,
    disable_version,
    migrate,
    open_ledger,
    open_lifecycle,
    retire_gate,
)
from field_encrypt.runtime import open_runtime
from tests.backends import BACKEND_KINDS, Backend


@pytest.fixture(params=["direct", "kek"])
def pair(
    request: pytest.FixtureRequest, store_backend: Backend, tmp_path: Path
) -> Iterator[tuple[ProductRuntime, ProductRuntime]]:
    """The rehearsal product (6 documents) and ``billing`` (10 DEKs, wrapped directly under
    the MEK or under a KEK), one database and one keyring; version 2 created, and only the
    rehearsal product rewrapped onto it."""
    settings = store_backend.settings(keyring=str(tmp_path / "keyring.json"))
    sample = product.open(settings)
    layout = store_backend.settings(
        keyring=str(tmp_path / "keyring.json"), key_layout=request.param
    )
    billing = open_runtime(layout, product="billing", collections={"invoices": ["iban"]})
    try:
        seed(sample, 6)
        for _ in range(10):
            billing.encryptor.create_dek()
        sample.provider.create_version()
        migrate(sample, open_ledger(sample), MigrationOptions(mode="rewrap-deks"))
        yield sample, billing
    finally:
        billing.close()
        sample.close()


@pytest.mark.parametrize("store_backend", BACKEND_KINDS, indirect=True)
def test_disable_counts_every_product_under_the_version(
    pair: tuple[ProductRuntime, ProductRuntime],
) -> None:
    """The rehearsal product has no DEK left on version 1, billing has 10: disable is
    refused naming billing (it used to succeed, and billing's DEKs then failed with
    KeyVersionDisabledError); once billing is rewrapped too, it goes through."""
    sample, billing = pair
    assert sample.dek_store.count_by_version() == {"2": 6}
    with pytest.raises(RotationError, match="10 DEKs of product 'billing'"):
        disable_version(sample, open_lifecycle(sample), "1")
    assert [v.enabled for v in sample.provider.versions()] == [True, True]
    fresh = open_runtime(billing.settings, product="billing", collections={"invoices": ["iban"]})
    try:  # a runtime that reads the keyring again: version 2 is its current one too
        report = migrate(fresh, open_ledger(fresh), MigrationOptions(mode="rewrap-deks"))
        assert report.remaining == 0
    finally:
        fresh.close()
    disable_version(sample, open_lifecycle(sample), "1")
    assert [v.enabled for v in sample.provider.versions()] == [False, True]


@pytest.mark.parametrize("store_backend", BACKEND_KINDS, indirect=True)
def test_the_gate_counts_every_product_under_the_version(
    pair: tuple[ProductRuntime, ProductRuntime],
) -> None:
    """The gate's first condition fails while billing still has DEKs on version 1."""
    sample, _ = pair
    report = retire_gate(sample, open_ledger(sample), open_lifecycle(sample), "1", soak_hours=0)
    (gone, *_) = report.checks
    assert not gone.ok and "10 DEKs of product 'billing'" in gone.detail
    assert report.refusals and report.deks_left == 10


@pytest.mark.parametrize("store_backend", BACKEND_KINDS, indirect=True)
def test_an_empty_active_kek_of_another_product_blocks_disable_and_the_gate(
    store_backend: Backend, tmp_path: Path
) -> None:
    """``billing`` (KEK layout) has an active KEK under version 1 and no DEK yet; the
    rehearsal product is rewrapped onto version 2. Disabling version 1 is refused naming
    billing's KEK, with or without --force (it went through, and billing's next write then
    failed on its KEK); the gate says the same; after billing's own rewrap (which moves
    its KEK) both go through, and billing still writes."""
    keyring = str(tmp_path / "keyring.json")
    sample = product.open(store_backend.settings(keyring=keyring))
    layout = store_backend.settings(keyring=keyring, key_layout="kek")
    billing = open_runtime(layout, product="billing", collections={"invoices": ["iban"]})
    try:
        seed(sample, 6)
        assert billing.kek_tier is not None
        billing.kek_tier.dek_version()  # its active KEK, under version 1, wrapping nothing
        sample.provider.create_version()
        migrate(sample, open_ledger(sample), MigrationOptions(mode="rewrap-deks"))
        assert billing.dek_store.count_under(sample.provider.mek_name, "1") == {}
        for force in (False, True):
            with pytest.raises(RotationError, match="the active KEK of product 'billing'"):
                disable_version(
                    sample,
                    open_lifecycle(sample),
                    "1",
                    force=force,
                    reason="test" if force else None,
                )
        assert [v.enabled for v in sample.provider.versions()] == [True, True]
        report = retire_gate(sample, open_ledger(sample), open_lifecycle(sample), "1", soak_hours=0)
        (gone, *_) = report.checks
        assert not gone.ok and "the active KEK of product 'billing'" in gone.detail
    finally:
        billing.close()
    fresh = open_runtime(layout, product="billing", collections={"invoices": ["iban"]})
    try:
        migrate(fresh, open_ledger(fresh), MigrationOptions(mode="rewrap-deks"))
        report = retire_gate(sample, open_ledger(sample), open_lifecycle(sample), "1", soak_hours=0)
        assert report.checks[0].ok, report.checks[0].detail
        disable_version(sample, open_lifecycle(sample), "1")
        fresh.encryptor.create_dek()  # billing's next DEK: under its KEK, now on version 2
        assert fresh.dek_store.count_under(sample.provider.mek_name, "2") == {
            "billing": 1,
            "sample": 6,
        }
    finally:
        fresh.close()
        sample.close()
