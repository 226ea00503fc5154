"""``init_encryption``: build a product's encryptor from settings, failing fast and clearly."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TypedDict

from field_encrypt.audit import AuditTrail
from field_encrypt.backends.base import DekStore, KekStore
from field_encrypt.cache import DekCache
from field_encrypt.config import Settings, load_settings
from field_encrypt.envelope import FieldEncryptor, TokenForm
from field_encrypt.errors import ConfigurationError
from field_encrypt.providers.base import KeyProvider
from field_encrypt.providers.kek_tier import KekTierProvider


def build_provider(settings: Settings) -> KeyProvider:
    """The key provider ``settings.key_provider`` names, configured and checked."""
    match settings.key_provider:
        case "env":
            from field_encrypt.providers.env import EnvKeyProvider

            if settings.key is None:
                raise ConfigurationError(
                    "FIELD_ENCRYPT_KEY is required when FIELD_ENCRYPT_KEY_PROVIDER=env "
                    "(base64 of 32 random bytes)"
                )
            return EnvKeyProvider(
                mek_name=settings.mek_name,
                key=settings.key.get_secret_value(),
                key_version=settings.key_version,
                previous_keys=settings.previous_keys.get_secret_value(),
                disabled_versions=[
                    v.strip() for v in settings.disabled_versions.split(",") if v.strip()
                ],
            )
        case "local":
            from field_encrypt.providers.local import LocalKeyProvider

            refresh = (  # the keyring file is re-read at most this often (default 1 s)
                settings.provider_refresh_seconds
                if "provider_refresh_seconds" in settings.model_fields_set
                else 1.0
            )
            return LocalKeyProvider(
                settings.keyring,
                mek_name=settings.mek_name,
                refresh_seconds=refresh,
                create=settings.create_missing,
            )
        case other:
            return _remote_provider(other, settings)


def build_key_layout(
    mek: KeyProvider, settings: Settings, keks: KekStore, *, product: str
) -> KekTierProvider | None:
    """The KEK tier over ``mek`` when the product needs one, else ``None`` (use ``mek``).

    ``FIELD_ENCRYPT_KEY_LAYOUT=kek``: new DEKs go under KEKs. ``direct`` with KEKs still in
    the kek_store (a product moving back out of the tier): new DEKs go under the MEK, and
    the DEKs still under a KEK keep reading until ``migrate --mode to-direct`` has moved
    them. Unwrapped KEKs are cached like DEKs (``FIELD_ENCRYPT_CACHE_TTL_SECONDS``,
    ``FIELD_ENCRYPT_CACHE_MAX_ENTRIES``) and dropped when their MEK version is disabled.
    """
    if settings.key_layout == "direct" and not keks.all():
        return None
    cache = DekCache(max_entries=settings.cache_max_entries, ttl_seconds=settings.cache_ttl_seconds)
    return KekTierProvider(mek, keks, product=product, layout=settings.key_layout, cache=cache)


def layered_provider(
    mek: KeyProvider, tier: KekTierProvider | None, audit: AuditTrail | None
) -> KeyProvider:
    """What wraps the DEKs: the KEK tier (its KEK events recorded to ``audit``) if the
    layout has one, else the MEK provider."""
    if tier is None:
        return mek
    tier.audit = audit
    return tier


def configured_encryptor(
    settings: Settings,
    *,
    product: str,
    provider: KeyProvider,
    store: DekStore,
    collections: Mapping[str, Sequence[str]],
    audit: AuditTrail | None,
    token_form: TokenForm = "text",
) -> FieldEncryptor:
    """The product's :class:`FieldEncryptor` with what ``settings`` configure: the DEK
    cache, whether encryption is on, whether plaintext is still read."""
    return FieldEncryptor(
        product=product,
        provider=provider,
        store=store,
        collections=collections,
        cache=DekCache(
            max_entries=settings.cache_max_entries, ttl_seconds=settings.cache_ttl_seconds
        ),
        enabled=settings.enabled,
        allow_plaintext=settings.plaintext_allowed,
        token_form=token_form,
        audit=audit,
    )


def _remote_provider(name: str, settings: Settings) -> KeyProvider:
    """A production provider; its SDK is imported here, only when it is the one chosen."""
    match name:
        case "akv":
            if not settings.azure_keyvault_url:
                raise ConfigurationError(
                    "AZURE_KEYVAULT_URL is required when FIELD_ENCRYPT_KEY_PROVIDER=akv"
                )
            try:
                from field_encrypt.providers.azure_key_vault import AzureKeyVaultProvider
            except ImportError as exc:
                raise _missing_extra(name, "akv", exc) from None
            return AzureKeyVaultProvider(
                vault_url=settings.azure_keyvault_url,
                mek_name=settings.mek_name,
                key_size=settings.akv_key_size,
                **_remote_options(settings),
            )
        case "aws-kms":
            try:
                from field_encrypt.providers.aws_kms import AwsKmsKeyProvider
            except ImportError as exc:
                raise _missing_extra(name, "aws-kms", exc) from None
            return AwsKmsKeyProvider(
                mek_name=settings.mek_name,
                region=settings.aws_region,
                endpoint_url=settings.aws_kms_endpoint_url,
                **_remote_options(settings),
            )
        case "pkcs11":
            missing = [
                variable
                for variable, value in (
                    ("FIELD_ENCRYPT_PKCS11_MODULE", settings.pkcs11_module),
                    ("FIELD_ENCRYPT_PKCS11_TOKEN", settings.pkcs11_token),
                    ("FIELD_ENCRYPT_PKCS11_PIN", settings.pkcs11_pin),
                )
                if not value
            ]
            if missing:
                raise ConfigurationError(
                    f"{', '.join(missing)} required when FIELD_ENCRYPT_KEY_PROVIDER=pkcs11"
                )
            assert settings.pkcs11_module and settings.pkcs11_token and settings.pkcs11_pin
            try:
                from field_encrypt.providers.pkcs11 import Pkcs11KeyProvider
            except ImportError as exc:
                raise _missing_extra(name, "pkcs11", exc) from None
            return Pkcs11KeyProvider(
                module=settings.pkcs11_module,
                token_label=settings.pkcs11_token,
                pin=settings.pkcs11_pin.get_secret_value(),
                mek_name=settings.mek_name,
                mechanism=settings.pkcs11_mechanism,
                refresh_seconds=settings.provider_refresh_seconds,
            )
    raise ConfigurationError(f"key provider {name!r} is not available in this build")


class _RemoteOptions(TypedDict):
    connect_timeout: float
    read_timeout: float
    max_attempts: int
    refresh_seconds: float


def _remote_options(settings: Settings) -> _RemoteOptions:
    """The timeouts, attempts and refresh period every cloud provider takes."""
    return {
        "connect_timeout": settings.provider_connect_timeout_seconds,
        "read_timeout": settings.provider_read_timeout_seconds,
        "max_attempts": settings.provider_max_attempts,
        "refresh_seconds": settings.provider_refresh_seconds,
    }


def _missing_extra(name: str, extra: str, exc: ImportError) -> ConfigurationError:
    return ConfigurationError(
        f"FIELD_ENCRYPT_KEY_PROVIDER={name} needs the {extra!r} extra "
        f"(missing module {exc.name!r}): pip install 'field-encrypt[{extra}]'"
    )


def build_store(settings: Settings, *, product: str) -> DekStore:
    """The dek_store in the database ``settings.database`` names (SQLite, PostgreSQL, Cosmos)."""
    from field_encrypt.backends.registry import open_database, open_dek_store

    return open_dek_store(open_database(settings), product=product)


def init_encryption(
    *,
    product: str,
    collections: Mapping[str, Sequence[str]],
    settings: Settings | None = None,
    provider: KeyProvider | None = None,
    store: DekStore | None = None,
    audit: AuditTrail | None = None,
) -> FieldEncryptor:
    """Build everything from the environment (or the given parts) and prove it works.

    Without a given ``provider``, the one the settings name, under the KEK tier when
    ``FIELD_ENCRYPT_KEY_LAYOUT=kek`` (its kek_store in the dek_store's database).

    ``audit`` (e.g. :func:`field_encrypt.backends.registry.open_audit_trail`) records shreds and
    denied decryptions; without it nothing is recorded.

    Fails at start-up, with a :class:`ConfigurationError`, on bad or missing settings;
    with encryption enabled it also checks that the current MEK version can wrap.
    """
    settings = settings if settings is not None else load_settings()
    store = store if store is not None else build_store(settings, product=product)
    if provider is None:
        provider = build_provider(settings)
        from field_encrypt.backends.registry import database_kind_of, open_kek_store

        database = getattr(store, "database", None)
        try:
            database_kind_of(database)
        except TypeError:  # a store of the application's own: no kek_store beside it
            database = None
        if database is not None:  # the kek_store lives beside the dek_store
            tier = build_key_layout(
                provider, settings, open_kek_store(database, product=product), product=product
            )
            provider = tier if tier is not None else provider
        elif settings.key_layout == "kek":
            raise ConfigurationError(
                "FIELD_ENCRYPT_KEY_LAYOUT=kek needs a kek_store: this store has none in this build"
            )
    encryptor = configured_encryptor(
        settings,
        product=product,
        provider=provider,
        store=store,
        collections=collections,
        audit=audit,
    )
    if settings.enabled:
        current = provider.current_version()
        if not any(v.version == current and v.enabled for v in provider.versions()):
            raise ConfigurationError(
                f"the current version {current!r} of MEK {provider.mek_name!r} is disabled"
            )
    return encryptor
