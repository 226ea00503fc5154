"""Settings and init_encryption: start-up fails fast and clearly on bad configuration."""

from __future__ import annotations

import base64
import os
from pathlib import Path

import pytest

import field_encrypt
from field_encrypt import ConfigurationError, init_encryption, load_settings
from field_encrypt.providers.env import EnvKeyProvider
from field_encrypt.providers.local import LocalKeyProvider

KEY = base64.b64encode(os.urandom(32)).decode()


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    return {"FIELD_ENCRYPT_DATABASE": str(tmp_path / "db.sqlite"), **extra}


def test_public_api_is_pinned() -> None:
    """The curated public API does not change by accident."""
    assert sorted(field_encrypt.__all__) == [
        "AlreadyExistsError", "BlindIndex", "CacheStats", "ConcurrentUpdateError", "ConfigurationError",
        "DecryptionError", "DekCache", "DekMissingError", "DekPage", "DekRecord", "DekStore", "FieldEncryptError",
        "FieldEncryptor", "IndexKeyring", "IndexedField", "KeyProvider", "KeyProviderError", "KeyProviderUnavailableError",
        "KeyVersion", "KeyVersionDisabledError", "KeyVersionNotFoundError", "LeaseHeldError",
        "NotFoundError", "RewrapCheckError", "RotationError", "Settings", "StoreError", "StoreUnavailableError",
        "UnsupportedFormatError", "WrapUpdate", "WrappedDek", "__version__", "build_provider",
        "build_store", "init_encryption", "load_settings",
    ]  # fmt: skip


def test_version_is_the_installed_distributions() -> None:
    """``field_encrypt.__version__`` is what the package metadata says (``--version`` prints it)."""
    from importlib.metadata import version

    assert field_encrypt.__version__ == version("field-encrypt")


def test_env_provider_from_the_environment(tmp_path: Path) -> None:
    """FIELD_ENCRYPT_KEY_PROVIDER=env with FIELD_ENCRYPT_KEY builds a working encryptor."""
    settings = load_settings(
        _env(tmp_path, FIELD_ENCRYPT_KEY_PROVIDER="env", FIELD_ENCRYPT_KEY=KEY)
    )
    fe = init_encryption(product="p", collections={"c": ["f"]}, settings=settings)
    assert isinstance(fe.provider, EnvKeyProvider)
    sealed = fe.encrypt_document("c", "1", {"f": "secret"})
    assert fe.decrypt_document("c", "1", sealed) == {"f": "secret"}


def test_local_provider_is_the_default(tmp_path: Path) -> None:
    """Without a provider setting the local keyring is used, at FIELD_ENCRYPT_KEYRING."""
    settings = load_settings(_env(tmp_path, FIELD_ENCRYPT_KEYRING=str(tmp_path / "k.json")))
    fe = init_encryption(product="p", collections={"c": ["f"]}, settings=settings)
    assert isinstance(fe.provider, LocalKeyProvider)
    assert (tmp_path / "k.json").stat().st_mode & 0o777 == 0o600


@pytest.mark.parametrize(
    ("variables", "message"),
    [
        ({"FIELD_ENCRYPT_KEY_PROVIDER": "env"}, "FIELD_ENCRYPT_KEY is required"),
        (
            {"FIELD_ENCRYPT_KEY_PROVIDER": "env", "FIELD_ENCRYPT_KEY": "not base64!"},
            "not valid base64",
        ),
        (
            {
                "FIELD_ENCRYPT_KEY_PROVIDER": "env",
                "FIELD_ENCRYPT_KEY": base64.b64encode(b"short").decode(),
            },
            "32 bytes",
        ),
        ({"FIELD_ENCRYPT_KEY_PROVIDER": "vault9000"}, "FIELD_ENCRYPT_KEY_PROVIDER"),
        ({"FIELD_ENCRYPT_ENABLED": "maybe"}, "FIELD_ENCRYPT_ENABLED"),
        ({"FIELD_ENCRYPT_CACHE_TTL_SECONDS": "-1"}, "FIELD_ENCRYPT_CACHE_TTL_SECONDS"),
        ({"FIELD_ENCRYPT_MEK_NAME": " "}, "FIELD_ENCRYPT_MEK_NAME"),
        (
            {
                "FIELD_ENCRYPT_KEY_PROVIDER": "env",
                "FIELD_ENCRYPT_KEY": KEY,
                "FIELD_ENCRYPT_PREVIOUS_KEYS": "nonsense",
            },
            "version=base64",
        ),
        ({"FIELD_ENCRYPT_DATABASE": "mysql://x"}, "unsupported FIELD_ENCRYPT_DATABASE"),
    ],
)
def test_bad_settings_fail_at_start_up(
    tmp_path: Path, variables: dict[str, str], message: str
) -> None:
    """Each bad or missing setting is a ConfigurationError naming the variable, never its value."""
    env = {**_env(tmp_path, FIELD_ENCRYPT_KEYRING=str(tmp_path / "k.json")), **variables}
    with pytest.raises(ConfigurationError) as info:
        init_encryption(product="p", collections={"c": ["f"]}, settings=load_settings(env))
    assert message in str(info.value)
    assert KEY not in str(info.value)


def test_disabled_current_version_fails_at_start_up(tmp_path: Path) -> None:
    """A service must not start on a MEK whose current version is disabled."""
    ring = LocalKeyProvider(tmp_path / "k.json", mek_name="m")
    ring.set_enabled("1", False)
    settings = load_settings(_env(tmp_path, FIELD_ENCRYPT_KEYRING=str(tmp_path / "k.json")))
    with pytest.raises(ConfigurationError, match="disabled"):
        init_encryption(product="p", collections={"c": ["f"]}, settings=settings)


def test_settings_repr_hides_the_key(tmp_path: Path) -> None:
    """The key is a SecretStr: it never shows in the settings' repr."""
    settings = load_settings(_env(tmp_path, FIELD_ENCRYPT_KEY=KEY))
    assert KEY not in repr(settings) and KEY not in str(settings)


def test_env_rotation_rehearsal(tmp_path: Path) -> None:
    """Old keys given in FIELD_ENCRYPT_PREVIOUS_KEYS keep old documents readable."""
    old = load_settings(_env(tmp_path, FIELD_ENCRYPT_KEY_PROVIDER="env", FIELD_ENCRYPT_KEY=KEY))
    fe = init_encryption(product="p", collections={"c": ["f"]}, settings=old)
    sealed = fe.encrypt_document("c", "1", {"f": "secret"})
    new_key = base64.b64encode(os.urandom(32)).decode()
    new = load_settings(
        _env(
            tmp_path,
            FIELD_ENCRYPT_KEY_PROVIDER="env",
            FIELD_ENCRYPT_KEY=new_key,
            FIELD_ENCRYPT_KEY_VERSION="2",
            FIELD_ENCRYPT_PREVIOUS_KEYS=f"1={KEY}",
        )
    )
    fe2 = init_encryption(product="p", collections={"c": ["f"]}, settings=new)
    assert fe2.provider.current_version() == "2"
    assert fe2.decrypt_document("c", "1", sealed) == {"f": "secret"}
    assert fe2.store.count_by_version() == {"1": 1}


def test_a_given_mapping_ignores_the_process_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """load_settings(environ) reads that mapping only, not os.environ."""
    monkeypatch.setenv("FIELD_ENCRYPT_MEK_NAME", "from-process-env")
    assert load_settings(_env(tmp_path)).mek_name == "field-encrypt-mek"
    assert load_settings().mek_name == "from-process-env"
