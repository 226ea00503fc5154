"""field-encrypt: field-level envelope encryption with safe MEK rotation.

The public API is what ``__all__`` lists; a test pins it. Everything else is private.
"""

from field_encrypt.backends.base import DekPage, DekRecord, DekStore, WrapUpdate
from field_encrypt.bootstrap import build_provider, build_store, init_encryption
from field_encrypt.cache import CacheStats, DekCache
from field_encrypt.config import Settings, load_settings
from field_encrypt.envelope import FieldEncryptor
from field_encrypt.errors import (
    AlreadyExistsError,
    ConcurrentUpdateError,
    ConfigurationError,
    DecryptionError,
    DekMissingError,
    FieldEncryptError,
    KeyProviderError,
    KeyProviderUnavailableError,
    KeyVersionDisabledError,
    KeyVersionNotFoundError,
    LeaseHeldError,
    NotFoundError,
    RewrapCheckError,
    RotationError,
    StoreError,
    StoreUnavailableError,
    UnsupportedFormatError,
)
from field_encrypt.providers.base import KeyProvider, KeyVersion, WrappedDek

__all__ = [
    "AlreadyExistsError",
    "CacheStats",
    "ConcurrentUpdateError",
    "ConfigurationError",
    "DecryptionError",
    "DekCache",
    "DekMissingError",
    "DekPage",
    "DekRecord",
    "DekStore",
    "FieldEncryptError",
    "FieldEncryptor",
    "KeyProvider",
    "KeyProviderError",
    "KeyProviderUnavailableError",
    "KeyVersion",
    "KeyVersionDisabledError",
    "KeyVersionNotFoundError",
    "LeaseHeldError",
    "NotFoundError",
    "RewrapCheckError",
    "RotationError",
    "Settings",
    "StoreError",
    "StoreUnavailableError",
    "UnsupportedFormatError",
    "WrapUpdate",
    "WrappedDek",
    "build_provider",
    "build_store",
    "init_encryption",
    "load_settings",
]
