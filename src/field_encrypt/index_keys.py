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

The **current** index-key version is the newest one in the dek_store (:meth:`IndexKeyring.
versions`, found by looking up versions 1, 2, ... in windows of :data:`PROBE_WINDOW` ids,
one ``get_many`` each, until a window holds none; so the retire gate refuses to delete a
version when the newest would then be out of reach, :func:`reachable`). :meth:`IndexKeyring.open` gives a
:class:`~field_encrypt.blind_index.BlindIndex` writing under it and looking up every older
version still present. With an audit trail, creating a version records
``index-key.created`` and retiring one (deleting its row, after the gate in
:mod:`field_encrypt.rotation.reindex`) records ``index-key.retired``.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterable, Sequence

from field_encrypt.audit import INDEX_KEY_CREATED, INDEX_KEY_RETIRED, AuditTrail, recorded
from field_encrypt.backends.base import DekStore, NewDek, check_product_store
from field_encrypt.blind_index import MAX_VERSION, BlindIndex, IndexedField, check_version
from field_encrypt.errors import (
    AlreadyExistsError,
    ConfigurationError,
    DecryptionError,
    NotFoundError,
)
from field_encrypt.providers.base import KeyProvider, dek_context

__all__ = [
    "KEY_ID_PREFIX",
    "PROBE_WINDOW",
    "IndexKeyring",
    "index_key_id",
    "is_index_key_id",
    "reachable",
]

KEY_ID_PREFIX = "b1d1"
PROBE_WINDOW = 64
"""How many versions :meth:`IndexKeyring.versions` looks up at once."""
_ID_LABEL = b"field-encrypt/index-root-id/v1\x00"


def index_key_id(product: str, version: int) -> str:
    """The reserved dek_store id of ``product``'s index root key ``version``."""
    check_version(version)
    digest = hashlib.sha256(_ID_LABEL + product.encode()).hexdigest()
    return f"{KEY_ID_PREFIX}{version:08x}0{digest[:19]}"


def reachable(present: Iterable[int]) -> list[int]:
    """Which of the ``present`` versions :meth:`IndexKeyring.versions` finds, oldest first:
    it looks at windows of :data:`PROBE_WINDOW` versions from 1 and stops at an empty one."""
    have = sorted(set(present))
    found: list[int] = []
    start = 1
    while window := [v for v in have if start <= v < start + PROBE_WINDOW]:
        found += window
        start += PROBE_WINDOW
    return found


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
        audit: AuditTrail | None = None,
    ) -> None:
        check_product_store(product, store)
        self.product = product
        self.provider = provider
        self.store = store
        self._random = random_bytes
        self.audit = audit

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
        try:  # the row and its event are one unit; a failed insert rolls it back
            with recorded(
                self.audit,
                INDEX_KEY_CREATED,
                subject=f"index-key/{self.product}/{version}",
                data={"version": version, "keyId": key_id, "mekVersion": wrapped.mek_version},
                check={"wrappedSha256": hashlib.sha256(wrapped.ciphertext).hexdigest()},
            ):
                new = NewDek.of(key_id, mek_name=self.provider.mek_name, wrapped=wrapped)
                new.create_in(self.store)
        except AlreadyExistsError:
            return False
        return True

    def versions(self) -> list[int]:
        """The versions in the dek_store, oldest first (the last is the current one)."""
        found: list[int] = []
        start = 1
        while start <= MAX_VERSION:
            window = range(start, min(start + PROBE_WINDOW, MAX_VERSION + 1))
            ids = {index_key_id(self.product, v): v for v in window}
            present = self.store.get_many(list(ids))
            if not present:
                break
            found += sorted(ids[key_id] for key_id in present)
            start += PROBE_WINDOW
        return found

    def create_next(self) -> int:
        """Create the version after the newest (1 for the first); the version created."""
        versions = self.versions()
        version = versions[-1] + 1 if versions else 1
        if not self.create(version):
            raise AlreadyExistsError(
                f"index-key version {version} was created by someone else meanwhile"
            )
        return version

    def open(self, fields: Iterable[IndexedField]) -> BlindIndex:
        """A :class:`BlindIndex` writing under the newest version, looking up all present."""
        versions = self.versions()
        if not versions:
            raise ConfigurationError(
                f"product {self.product!r} has no index key yet "
                "(field-encrypt index-keys create --product PRODUCT)"
            )
        return self.blind_index(fields, version=versions[-1], previous=versions[:-1])

    def delete(self, version: int, *, via: str, data: dict[str, object] | None = None) -> bool:
        """Delete root key ``version`` (destroying it); whether it existed.

        Only through the gate (:func:`field_encrypt.rotation.reindex.retire_index_version`),
        which checks that no index value is left on it; recorded as ``index-key.retired``.
        """
        key_id = index_key_id(self.product, version)
        with recorded(  # the deletion and its event are one unit
            self.audit,
            INDEX_KEY_RETIRED,
            subject=f"index-key/{self.product}/{version}",
            data={"version": version, "keyId": key_id, "via": via, **(data or {})},
            check={"dekId": key_id},
        ) as event:
            existed = self.store.delete(key_id)
            if not existed:
                event.cancel()
        return existed

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
