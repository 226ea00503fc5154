"""build_provider for the production providers: settings in, a checked provider out."""

from __future__ import annotations

import pytest

from field_encrypt import ConfigurationError, load_settings
from field_encrypt.bootstrap import build_provider
from tests.harnesses import Pkcs11Harness


def test_pkcs11_from_settings(pkcs11_harness: Pkcs11Harness) -> None:
    """FIELD_ENCRYPT_PKCS11_MODULE, _TOKEN and _PIN build a working pkcs11 provider; the PIN is
    a secret that stays out of the settings' repr."""
    hsm = pkcs11_harness.hsm
    settings = load_settings(
        {
            "FIELD_ENCRYPT_KEY_PROVIDER": "pkcs11",
            "FIELD_ENCRYPT_MEK_NAME": "from-settings",
            "FIELD_ENCRYPT_PKCS11_MODULE": str(hsm.module_path),
            "FIELD_ENCRYPT_PKCS11_TOKEN": hsm.token_label,
            "FIELD_ENCRYPT_PKCS11_PIN": hsm.user_pin,
        }
    )
    assert hsm.user_pin not in repr(settings)
    provider = build_provider(settings)
    try:
        created = provider.create_version()
        assert provider.wrap(bytes(32), context=b"c").mek_version == created.version == "1"
    finally:
        provider.close()  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("variables", "message"),
    [
        (
            {"FIELD_ENCRYPT_KEY_PROVIDER": "pkcs11"},
            "FIELD_ENCRYPT_PKCS11_MODULE, FIELD_ENCRYPT_PKCS11_TOKEN, FIELD_ENCRYPT_PKCS11_PIN",
        ),
        (
            {"FIELD_ENCRYPT_KEY_PROVIDER": "pkcs11", "FIELD_ENCRYPT_PKCS11_MECHANISM": "AES_GCM"},
            "FIELD_ENCRYPT_PKCS11_MECHANISM",
        ),
        ({"FIELD_ENCRYPT_KEY_PROVIDER": "akv", "AZURE_KEYVAULT_URL": "http://plain"}, "https://"),
        (
            {"FIELD_ENCRYPT_KEY_PROVIDER": "akv", "FIELD_ENCRYPT_AKV_KEY_SIZE": "1024"},
            "FIELD_ENCRYPT_AKV_KEY_SIZE",
        ),
        (
            {"FIELD_ENCRYPT_KEY_PROVIDER": "aws-kms", "FIELD_ENCRYPT_MEK_NAME": "aws/reserved"},
            "FIELD_ENCRYPT_MEK_NAME",
        ),
        ({"FIELD_ENCRYPT_PROVIDER_MAX_ATTEMPTS": "0"}, "FIELD_ENCRYPT_PROVIDER_MAX_ATTEMPTS"),
        (
            {"FIELD_ENCRYPT_PROVIDER_READ_TIMEOUT_SECONDS": "0"},
            "FIELD_ENCRYPT_PROVIDER_READ_TIMEOUT_SECONDS",
        ),
    ],
)
def test_bad_provider_settings_fail_at_start_up(variables: dict[str, str], message: str) -> None:
    """Each missing or bad provider setting is a ConfigurationError naming it."""
    with pytest.raises(ConfigurationError, match=message):
        build_provider(load_settings(variables))
