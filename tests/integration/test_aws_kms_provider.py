"""The aws-kms provider against moto's KMS on loopback, through a real boto3 client."""

from __future__ import annotations

import os

import pytest

pytest.importorskip("boto3")

from field_encrypt import load_settings
from field_encrypt.bootstrap import build_provider
from field_encrypt.errors import (
    ConfigurationError,
    DecryptionError,
    KeyVersionNotFoundError,
)
from field_encrypt.providers.aws_kms import (
    TAG_MEK,
    TAG_VERSION,
    AwsKmsKeyProvider,
    encryption_context,
)
from field_encrypt.providers.base import dek_context
from tests.harnesses import AwsKmsHarness


def ctx(i: int) -> bytes:
    return dek_context("notelett", f"{i:032x}")


def test_rewrap_is_reencrypt_and_never_asks_for_the_plaintext(
    aws_kms_harness: AwsKmsHarness,
) -> None:
    """Rewrapping N DEKs is N ReEncrypt calls, with no Decrypt or GenerateDataKey: the plaintext
    DEKs never leave KMS; the result unwraps under the new version to the same DEKs."""
    kms = aws_kms_harness.kms
    provider = aws_kms_harness.make(1)
    old = provider.current_version()
    deks = [os.urandom(32) for _ in range(10)]
    wrapped = [provider.wrap(dek, context=ctx(i)) for i, dek in enumerate(deks)]
    new = provider.create_version().version
    kms.clear_faults()  # zeroes the call counters

    moved = [
        provider.rewrap(w.ciphertext, from_version=old, context=ctx(i), to_version=new)
        for i, w in enumerate(wrapped)
    ]

    assert dict(kms.calls) == {"ReEncrypt": len(deks)}
    assert all(m.mek_version == new for m in moved)
    for i, (dek, m) in enumerate(zip(deks, moved, strict=True)):
        assert provider.unwrap(m.ciphertext, version=new, context=ctx(i)) == dek


def test_versions_live_in_kms_tags_and_the_alias(aws_kms_harness: AwsKmsHarness) -> None:
    """Each version is a key tagged with the MEK name and its number, and the alias points at
    the newest: a provider in another process lists the same versions from KMS alone."""
    provider = aws_kms_harness.make(3, disabled=frozenset({0}))
    client = aws_kms_harness.kms.client()
    versions = provider.versions()

    for number, version in enumerate(versions, start=1):
        tags = {
            t["TagKey"]: t["TagValue"]
            for t in client.list_resource_tags(KeyId=version.version)["Tags"]
        }
        assert tags == {TAG_MEK: provider.mek_name, TAG_VERSION: str(number)}
    alias = client.describe_key(KeyId=f"alias/{provider.mek_name}")["KeyMetadata"]["KeyId"]
    assert alias == versions[-1].version == provider.current_version()

    elsewhere = aws_kms_harness.provider(mek_name=provider.mek_name)
    assert elsewhere.versions() == versions
    assert [v.enabled for v in versions] == [False, True, True]


def test_the_encryption_context_names_product_and_dek(aws_kms_harness: AwsKmsHarness) -> None:
    """The KMS encryption context carries the product and dekId (what CloudTrail shows an
    auditor): a plain Decrypt with that context opens the wrap, one with another dekId fails."""
    provider = aws_kms_harness.make(1)
    dek_id = "ab" * 16
    wrapped = provider.wrap(dek := os.urandom(32), context=dek_context("notelett", dek_id))
    client = aws_kms_harness.kms.client()
    assert encryption_context(dek_context("notelett", dek_id)) == {
        "field-encrypt:product": "notelett",
        "field-encrypt:dekId": dek_id,
    }
    opened = client.decrypt(
        CiphertextBlob=wrapped.ciphertext,
        EncryptionContext={"field-encrypt:product": "notelett", "field-encrypt:dekId": dek_id},
    )
    assert opened["Plaintext"] == dek
    with pytest.raises(client.exceptions.InvalidCiphertextException):
        client.decrypt(
            CiphertextBlob=wrapped.ciphertext,
            EncryptionContext={"field-encrypt:product": "notelett", "field-encrypt:dekId": "0"},
        )
    assert encryption_context(b"something else") == {
        "field-encrypt:context": "c29tZXRoaW5nIGVsc2U="
    }


def test_rewrap_from_the_wrong_version_is_refused(aws_kms_harness: AwsKmsHarness) -> None:
    """A ReEncrypt whose source is not the version named is refused (the provider checks the
    SourceKeyId KMS reports), so a row's mekVersion cannot silently be wrong."""
    provider = aws_kms_harness.make(2)
    old, new = (v.version for v in provider.versions())
    wrapped = provider.wrap(os.urandom(32), context=ctx(1), version=old)
    with pytest.raises(DecryptionError):
        provider.rewrap(wrapped.ciphertext, from_version=new, context=ctx(1), to_version=new)


def test_only_this_meks_keys_are_managed(aws_kms_harness: AwsKmsHarness) -> None:
    """set_enabled refuses a KMS key that is not a version of this MEK (another team's key is
    never disabled through it); a MEK with no versions yet says so."""
    provider = aws_kms_harness.make(1)
    stranger = aws_kms_harness.kms.client().create_key(Description="not ours")["KeyMetadata"]
    with pytest.raises(KeyVersionNotFoundError):
        provider.set_enabled(stranger["KeyId"], False)
    with pytest.raises(KeyVersionNotFoundError, match="create one first"):
        aws_kms_harness.provider().current_version()


def test_built_from_settings(
    aws_kms_harness: AwsKmsHarness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """FIELD_ENCRYPT_KEY_PROVIDER=aws-kms builds the provider with the region, endpoint, one
    attempt per call and the configured timeouts; without any region it fails at start-up."""
    kms = aws_kms_harness.kms
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    settings = load_settings(
        {
            "FIELD_ENCRYPT_KEY_PROVIDER": "aws-kms",
            "FIELD_ENCRYPT_MEK_NAME": "built-from-settings",
            "FIELD_ENCRYPT_AWS_REGION": kms.region,
            "FIELD_ENCRYPT_AWS_KMS_ENDPOINT_URL": kms.endpoint_url,
            "FIELD_ENCRYPT_PROVIDER_CONNECT_TIMEOUT_SECONDS": "2",
        }
    )
    provider = build_provider(settings)
    assert isinstance(provider, AwsKmsKeyProvider)
    config = provider._client.meta.config
    assert (config.connect_timeout, config.read_timeout) == (2, 10)
    assert config.retries["total_max_attempts"] == 1
    created = provider.create_version()
    assert provider.wrap(os.urandom(32), context=ctx(0)).mek_version == created.version

    for variable in ("AWS_REGION", "AWS_DEFAULT_REGION"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
    with pytest.raises(ConfigurationError, match="FIELD_ENCRYPT_AWS_REGION"):
        build_provider(load_settings({"FIELD_ENCRYPT_KEY_PROVIDER": "aws-kms"}))
