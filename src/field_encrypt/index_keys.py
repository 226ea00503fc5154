"""Index root keys: 32 random bytes per version, wrapped by the MEK and kept in the dek_store.

A product's blind indexes (:mod:`field_encrypt.blind_index`) derive their keys from an
index root key. Each version of it is generated at random (never derived from a DEK or
the MEK), wrapped by the key provider exactly like a DEK, under the binding
``dek_context(product, key_id)``, and stored as a row of the product's dek_store under a
reserved id::

    key_id = "b1d1" + version as 8 hex digits + "0" + the first 19 hex digits of
             SHA-256("field-encrypt/index-root-id/v1" 00 product)

That is 32 hex digits like a dekId, but digit 12, a UUIDv4's version digit (always ``4`` in
a dekId from :meth:`~field_encrypt.envelope.FieldEncryptor.create_dek`), is ``0``, so it
never collides with a DEK; the product digest keeps it unique in a database that several
products share (the SQL dek_store's ``dek_id`` is unique across products).

Why the dek_store and not a record of its own: an index root key then is a DEK to every
tool that already exists. ``migrate rewrap`` rewraps it with the other DEKs, ``keys
compromised`` moves it off an exposed version, backups hold it, and the retire gate counts
it, so an MEK version cannot be retired while the index key still needs it. No backend
changes; ``verify`` only has to not list it as an unreferenced DEK (:func:`is_index_key_id`).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterable, Sequence

from field_encrypt.backends.base import DekStore
from field_encrypt.blind_index import BlindIndex, IndexedField, check_version
from field_encrypt.errors import (
    AlreadyExistsError,
    ConfigurationError,
    DecryptionError,
    NotFoundError,
)
from field_encrypt.providers.base import KeyProvider, dek_context

__all__ = ["KEY_ID_PREFIX", "IndexKeyring", "index_key_id", "is_index_key_id"]

KEY_ID_PREFIX = "b1d1"
_ID_LABEL = b"field-encrypt/index-root-id/v1\x00"


def index_key_id(product: str, version: int) -> str:
    """The reserved dek_store id of ``product``'s index root key ``version``."""
    check_version(version)
    digest = hashlib.sha256(_ID_LABEL + product.encode()).hexdigest()
    return f"{KEY_ID_PREFIX}{version:08x}0{digest[:19]}"


def is_index_key_id(dek_id: str) -> bool:
    """Whether a dek_store id is an index root key's (not a DEK that documents use)."""
    return len(dek_id) == 32 and dek_id.startswith(KEY_ID_PREFIX) and dek_id[12] == "0"


class IndexKeyring:
    """The index root keys of one product, wrapped in its dek_store.

    :meth:`create` makes a version (once; a second process creating the same version at
    the same time gets the first one's key), :meth:`root_keys` unwraps the versions a
    :class:`~field_encrypt.blind_index.BlindIndex` needs. Unwrapped keys are returned to
    the caller and never cached, logged or shown in a repr.
    """

    def __init__(
        self,
        *,
        product: str,
        provider: KeyProvider,
        store: DekStore,
        random_bytes: Callable[[int], bytes] = os.urandom,
    ) -> None:
        if not product:
            raise ConfigurationError("a product name is required")
        if store.product != product:
            raise ConfigurationError(
                f"the dek_store belongs to product {store.product!r}, not {product!r}"
            )
        self.product = product
        self.provider = provider
        self.store = store
        self._random = random_bytes

    def __repr__(self) -> str:
        return f"IndexKeyring(product={self.product!r}, provider={self.provider.kind!r})"

    def create(self, version: int) -> bool:
        """Generate, wrap and store root key ``version``; whether this call created it.

        An existing version is left as it is (``False``), so every process of a product
        may call this at start-up.
        """
        key_id = index_key_id(self.product, version)
        root_key = self._random(32)
        if len(root_key) != 32:
            raise ConfigurationError("random_bytes returned the wrong length")
        wrapped = self.provider.wrap(root_key, context=dek_context(self.product, key_id))
        try:
            self.store.create(
                dek_id=key_id,
                mek_name=self.provider.mek_name,
                mek_version=wrapped.mek_version,
                wrapped=wrapped.ciphertext,
                algorithm=wrapped.algorithm,
            )
        except AlreadyExistsError:
            return False
        return True

    def exists(self, version: int) -> bool:
        """Whether root key ``version`` is in the dek_store."""
        try:
            self.store.get(index_key_id(self.product, version))
        except NotFoundError:
            return False
        return True

    def root_keys(self, versions: Iterable[int]) -> dict[int, bytes]:
        """The unwrapped root keys of ``versions``.

        A version that was never created is a :class:`ConfigurationError` naming it and
        what to run; one whose wrap does not open is a :class:`DecryptionError`.
        """
        keys: dict[int, bytes] = {}
        for version in versions:
            key_id = index_key_id(self.product, version)
            try:
                record = self.store.get(key_id)
            except NotFoundError:
                raise ConfigurationError(
                    f"index-key version {version} of product {self.product!r} does not exist "
                    f"(create it first: IndexKeyring.create({version}))"
                ) from None
            root_key = self.provider.unwrap(
                record.wrapped,
                version=record.mek_version,
                context=dek_context(self.product, key_id),
            )
            if len(root_key) != 32:
                raise DecryptionError()
            keys[version] = root_key
        return keys

    def blind_index(
        self, fields: Iterable[IndexedField], *, version: int, previous: Sequence[int] = ()
    ) -> BlindIndex:
        """A :class:`BlindIndex` computing under ``version`` and also looking up ``previous``.

        ``previous`` lists the older versions still present while a re-index runs.
        """
        return BlindIndex(
            product=self.product,
            fields=fields,
            root_keys=self.root_keys([version, *previous]),
            version=version,
        )
