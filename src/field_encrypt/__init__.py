"""field-encrypt: field-level envelope encryption with safe MEK rotation.

The public API is what ``__all__`` lists; a test pins it. Everything else is private.

The errors and the two protocols' records are imported here; the names that pull in
pydantic-settings or the AEAD (``Settings``, ``FieldEncryptor``, ``init_encryption``...)
are imported on first use (PEP 562), so a program that needs only the error tree, like
``field-encrypt --help``, does not pay for them. ``__version__`` too: reading the installed
metadata imports ``importlib.metadata`` (~40 ms of start-up).
"""

from typing import TYPE_CHECKING

from field_encrypt.backends.base import DekPage, DekRecord, DekStore, WrapUpdate
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
from field_encrypt.lazy_names import lazy_names
from field_encrypt.providers.base import KeyProvider, KeyVersion, WrappedDek

if TYPE_CHECKING:
    __version__: str
    from field_encrypt.blind_index import BlindIndex, IndexedField
    from field_encrypt.bootstrap import build_provider, build_store, init_encryption
    from field_encrypt.cache import CacheStats, DekCache
    from field_encrypt.config import Settings, load_settings
    from field_encrypt.envelope import FieldEncryptor
    from field_encrypt.index_keys import IndexKeyring

_LAZY = {
    "BlindIndex": "field_encrypt.blind_index",
    "IndexedField": "field_encrypt.blind_index",
    "IndexKeyring": "field_encrypt.index_keys",
    "build_provider": "field_encrypt.bootstrap",
    "build_store": "field_encrypt.bootstrap",
    "init_encryption": "field_encrypt.bootstrap",
    "CacheStats": "field_encrypt.cache",
    "DekCache": "field_encrypt.cache",
    "Settings": "field_encrypt.config",
    "load_settings": "field_encrypt.config",
    "FieldEncryptor": "field_encrypt.envelope",
}


def _installed_version() -> str:
    """The installed distribution's version (``0+unknown`` from a never-installed tree)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("field-encrypt")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "0+unknown"


__getattr__, __dir__ = lazy_names(
    __name__, _LAZY, globals(), computed={"__version__": _installed_version}
)


__all__ = [
    "AlreadyExistsError",
    "BlindIndex",
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
    "IndexKeyring",
    "IndexedField",
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
    "__version__",
    "build_provider",
    "build_store",
    "init_encryption",
    "load_settings",
]
