"""The akv provider against the local Key Vault server, through the real azure SDKs."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

pytest.importorskip("azure.keyvault.keys")

from azure.core.exceptions import HttpResponseError
from azure.identity import ClientSecretCredential, DefaultAzureCredential
from azure.keyvault.keys import KeyClient
from azure.keyvault.keys.crypto import CryptographyClient, KeyWrapAlgorithm

from field_encrypt import init_encryption, load_settings
from field_encrypt.bootstrap import build_provider
from field_encrypt.errors import (
    ConfigurationError,
    DecryptionError,
    KeyProviderError,
    KeyProviderUnavailableError,
    KeyVersionDisabledError,
    KeyVersionNotFoundError,
)
from field_encrypt.providers import binding
from field_encrypt.providers.azure_key_vault import AzureKeyVaultProvider
from field_encrypt.providers.base import dek_context
from tests.harnesses import AkvHarness


def ctx(i: int) -> bytes:
    return dek_context("notelett", f"{i:032x}")


def operator_keys(harness: AkvHarness) -> KeyClient:
    """The vault as an operator's ``az keyvault`` sees it."""
    server = harness.server
    return KeyClient(
        server.url,
        harness.credential,
        verify_challenge_resource=False,
        connection_verify=str(server.ca_cert),
        retry_total=0,
    )


def test_a_rewrap_costs_one_vault_call_per_dek(akv_harness: AkvHarness) -> None:
    """Wrapping is local (no vault call); a rewrap is one unwrapKey call per DEK and nothing
    else once the versions' public keys are cached."""
    server = akv_harness.server
    provider = akv_harness.make(1)
    old = provider.current_version()
    deks = [os.urandom(32) for _ in range(12)]
    server.reset_stats()
    wrapped = [provider.wrap(dek, context=ctx(i)) for i, dek in enumerate(deks)]
    assert server.stats.get("requests", 0) == 0
    new = provider.create_version().version
    provider.rewrap(wrapped[0].ciphertext, from_version=old, context=ctx(0), to_version=new)

    server.reset_stats()
    moved = [
        provider.rewrap(w.ciphertext, from_version=old, context=ctx(i), to_version=new)
        for i, w in enumerate(wrapped[1:], start=1)
    ]

    stats = server.stats
    assert stats["unwrapkey"] == stats["requests"] == len(deks) - 1
    assert "wrapkey" not in stats and "get" not in stats
    for i, (dek, w) in enumerate(zip(deks[1:], moved, strict=True), start=1):
        assert provider.unwrap(w.ciphertext, version=new, context=ctx(i)) == dek


def test_wraps_are_rsa_oaep_256_of_the_dek_and_its_context_digest(akv_harness: AkvHarness) -> None:
    """The vault's own RSA-OAEP-256 unwrap of a wrapped DEK gives dek || SHA-256(context)[:16];
    RSA-OAEP (SHA-1) does not open it. Versions are RSA keys of the configured size, limited
    to wrapKey and unwrapKey."""
    provider = akv_harness.make(1)
    dek = os.urandom(32)
    wrapped = provider.wrap(dek, context=ctx(1))
    with operator_keys(akv_harness) as keys:
        key = keys.get_key(provider.mek_name, wrapped.mek_version)
    assert wrapped.algorithm == "RSA-OAEP-256+CTX" and len(wrapped.ciphertext) == 2048 // 8
    assert sorted(key.key_operations or []) == ["unwrapKey", "wrapKey"]
    with CryptographyClient(
        key,
        akv_harness.credential,
        verify_challenge_resource=False,
        connection_verify=str(akv_harness.server.ca_cert),
        retry_total=0,
    ) as crypto:
        opened = crypto.unwrap_key(KeyWrapAlgorithm.rsa_oaep_256, wrapped.ciphertext).key
        with pytest.raises(HttpResponseError):
            crypto.unwrap_key(KeyWrapAlgorithm.rsa_oaep, wrapped.ciphertext)
    assert opened == binding.seal(dek, ctx(1))


def test_a_version_disabled_by_an_operator_is_refused(akv_harness: AkvHarness) -> None:
    """Disabling a version with the Key Vault SDK (as ``az keyvault key set-attributes
    --enabled false`` does) makes unwraps fail with KeyVersionDisabledError, from the vault's
    403 KeyDisabled; wraps are refused once the cached state refreshes."""
    provider = akv_harness.provider(refresh_seconds=0)
    old = provider.create_version().version
    provider.create_version()
    dek = os.urandom(32)
    wrapped = provider.wrap(dek, context=ctx(2), version=old)
    with operator_keys(akv_harness) as keys:
        keys.update_key_properties(provider.mek_name, old, enabled=False)

    with pytest.raises(KeyVersionDisabledError) as info:
        provider.unwrap(wrapped.ciphertext, version=old, context=ctx(2))
    cause = info.value.cause
    assert isinstance(cause, HttpResponseError) and cause.status_code == 403
    assert cause.error is not None and cause.error.innererror == {"code": "KeyDisabled"}
    with pytest.raises(KeyVersionDisabledError):
        provider.wrap(dek, context=ctx(2), version=old)
    assert [v.enabled for v in provider.versions()] == [False, True]


def test_current_is_the_latest_version_even_when_disabled(
    akv_harness: AkvHarness, tmp_path: Path
) -> None:
    """The current version is the key's latest (the runbook's new version), listed last although
    versions created in the same second tie on creation time; a disabled latest version is not
    skipped: start-up fails instead."""
    provider = akv_harness.make(3)
    versions = provider.versions()
    with operator_keys(akv_harness) as keys:
        latest = keys.get_key(provider.mek_name).properties.version
    assert versions[-1].version == latest == provider.current_version()
    assert [v.current for v in versions] == [False, False, True]

    provider.set_enabled(latest, False)
    with pytest.raises(ConfigurationError, match="disabled"):
        init_encryption(
            product="p",
            collections={"c": ["f"]},
            provider=provider,
            settings=load_settings({"FIELD_ENCRYPT_DATABASE": str(tmp_path / "db")}),
        )


def test_errors_at_the_boundary(akv_harness: AkvHarness) -> None:
    """A key that does not exist is KeyVersionNotFoundError; a wrapped DEK of the wrong size
    fails without a vault call; a refused credential is a KeyProviderError, not transient."""
    server = akv_harness.server
    missing = akv_harness.provider()
    with pytest.raises(KeyVersionNotFoundError):
        missing.current_version()
    with pytest.raises(KeyVersionNotFoundError):
        missing.unwrap(b"\x00" * 256, version="0" * 32, context=ctx(0))

    provider = akv_harness.make(1)
    version = provider.current_version()
    provider.wrap(os.urandom(32), context=ctx(0))
    server.reset_stats()
    with pytest.raises(DecryptionError):
        provider.unwrap(b"\x00" * 255, version=version, context=ctx(0))
    assert server.stats.get("requests", 0) == 0

    with ClientSecretCredential(
        server.tenant_id,
        server.client_id,
        "not-the-secret",
        authority=server.authority,
        disable_instance_discovery=True,
        connection_verify=str(server.ca_cert),
    ) as wrong:
        refused = AzureKeyVaultProvider(
            vault_url=server.url,
            mek_name=provider.mek_name,
            credential=wrong,
            client_options={
                "connection_verify": str(server.ca_cert),
                "verify_challenge_resource": False,
            },
        )
        with pytest.raises(KeyProviderError) as info:
            refused.current_version()
        assert not isinstance(info.value, KeyProviderUnavailableError)
        assert "not-the-secret" not in str(info.value)
        refused.close()


def test_built_from_settings_with_default_azure_credential() -> None:
    """FIELD_ENCRYPT_KEY_PROVIDER=akv builds the provider on DefaultAzureCredential (workload
    identity, managed identity...), with the configured timeouts and key size; a missing
    AZURE_KEYVAULT_URL is a ConfigurationError."""
    settings = load_settings(
        {
            "FIELD_ENCRYPT_KEY_PROVIDER": "akv",
            "AZURE_KEYVAULT_URL": "https://example-vault.vault.azure.net/",
            "FIELD_ENCRYPT_MEK_NAME": "notelett-mek",
            "FIELD_ENCRYPT_AKV_KEY_SIZE": "3072",
            "FIELD_ENCRYPT_PROVIDER_READ_TIMEOUT_SECONDS": "7",
        }
    )
    provider = build_provider(settings)
    assert isinstance(provider, AzureKeyVaultProvider)
    assert isinstance(provider._credential, DefaultAzureCredential)
    assert (provider.vault_url, provider.mek_name, provider.key_size) == (
        "https://example-vault.vault.azure.net",
        "notelett-mek",
        3072,
    )
    assert provider._options["read_timeout"] == 7 and provider._options["retry_status"] == 0
    provider.close()
    with pytest.raises(ConfigurationError, match="AZURE_KEYVAULT_URL"):
        build_provider(load_settings({"FIELD_ENCRYPT_KEY_PROVIDER": "akv"}))
