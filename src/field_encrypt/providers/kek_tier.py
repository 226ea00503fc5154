"""The intermediate key tier: DEKs wrapped locally under KEKs, KEKs wrapped by the MEK.

``KekTierProvider`` is itself a :class:`~field_encrypt.providers.base.KeyProvider`, so the
envelope and the rewrap engine use it like any other:

- a DEK wrapped under a KEK is recorded with ``mek_version = "kek:<kekId>"`` and wrapped
  with AES-256-GCM under the KEK (associated data: the DEK context), locally;
- any other version is a MEK version and goes to the MEK provider, so a rewrap from
  ``"2"`` to ``"kek:<id>"`` moves a DEK into the tier, and the reverse moves it out;
- a rewrap from ``"kek:<old>"`` to ``"kek:<new>"`` is a KEK rotation, at local speed.

MEK rotation with the tier rewraps the KEKs only (:meth:`KekTierProvider.rewrap_keks`):
a handful of remote calls whatever the number of DEKs. A DEK's effective MEK version is
its KEK's (:func:`~field_encrypt.stores.kek.effective_counts`).

Unwrapped KEKs are cached like DEKs (same TTL; evicted when their MEK version is disabled
in this process). Trade-off: an unwrapped KEK in memory can unwrap every DEK under it.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from field_encrypt.cache import DekCache
from field_encrypt.errors import DecryptionError
from field_encrypt.providers.base import KeyProvider, KeyVersion, WrappedDek
from field_encrypt.stores.kek import KEK_PREFIX, KekRecord, KekStore

ALGORITHM = "A256GCM-KEK"


def kek_context(product: str, kek_id: str) -> bytes:
    """The binding of a wrapped KEK: it unwraps only as this product's KEK ``kek_id``."""
    return b"field-encrypt/kek/v1\x00" + product.encode() + b"\x00" + kek_id.encode()


@dataclass(frozen=True, slots=True, kw_only=True)
class KekRewrapResult:
    """What a MEK rotation under the tier did."""

    matched: int
    rewrapped: int
    skipped: int
    remote_calls: int


class KekTierProvider:
    """A KeyProvider that puts a tier of KEKs between the MEK and the DEKs."""

    remote = False

    def __init__(
        self,
        mek: KeyProvider,
        keks: KekStore,
        *,
        product: str,
        cache: DekCache | None = None,
        random_bytes: Callable[[int], bytes] = os.urandom,
    ) -> None:
        self.mek = mek
        self.keks = keks
        self.product = product
        self.kind = f"{mek.kind}+kek"
        self.mek_name = mek.mek_name
        self.cache = cache if cache is not None else DekCache(max_entries=1000)
        self._random = random_bytes

    def __repr__(self) -> str:
        return f"KekTierProvider(mek={self.mek!r}, product={self.product!r})"

    # -- MEK management is the MEK provider's --------------------------------------------

    def versions(self) -> list[KeyVersion]:
        return self.mek.versions()

    def current_version(self) -> str:
        return self.mek.current_version()

    def create_version(self) -> KeyVersion:
        return self.mek.create_version()

    def set_enabled(self, version: str, enabled: bool) -> KeyVersion:
        result = self.mek.set_enabled(version, enabled)
        if not enabled:
            self.cache.invalidate_version(version)
        return result

    # -- DEKs --------------------------------------------------------------------------

    def dek_version(self, partition: str = "") -> str:
        """``"kek:<id>"`` of the partition's active KEK, creating the KEK if there is none."""
        record = self.keks.active(partition)
        if record is None:
            record = self.new_kek(partition)
        return KEK_PREFIX + record.kek_id

    def effective_version(self, version: str) -> str:
        """The MEK version behind ``version``: a KEK's MEK version, or ``version`` itself."""
        if version.startswith(KEK_PREFIX):
            return self.keks.get(version[len(KEK_PREFIX) :]).mek_version
        return version

    def wrap(self, dek: bytes, *, context: bytes, version: str | None = None) -> WrappedDek:
        if version is None:
            version = self.dek_version()
        if not version.startswith(KEK_PREFIX):
            return self.mek.wrap(dek, context=context, version=version)
        nonce = self._random(12)
        sealed = self._kek(version[len(KEK_PREFIX) :]).encrypt(nonce, dek, context)
        return WrappedDek(mek_version=version, ciphertext=nonce + sealed, algorithm=ALGORITHM)

    def unwrap(self, ciphertext: bytes, *, version: str, context: bytes) -> bytes:
        if not version.startswith(KEK_PREFIX):
            return self.mek.unwrap(ciphertext, version=version, context=context)
        cipher = self._kek(version[len(KEK_PREFIX) :])
        if len(ciphertext) != 12 + 32 + 16:
            raise DecryptionError()
        try:
            return cipher.decrypt(ciphertext[:12], ciphertext[12:], context)
        except InvalidTag:
            raise DecryptionError() from None

    def rewrap(
        self, ciphertext: bytes, *, from_version: str, context: bytes, to_version: str | None = None
    ) -> WrappedDek:
        target = to_version if to_version is not None else self.dek_version()
        if not from_version.startswith(KEK_PREFIX) and not target.startswith(KEK_PREFIX):
            return self.mek.rewrap(
                ciphertext, from_version=from_version, context=context, to_version=target
            )
        dek = self.unwrap(ciphertext, version=from_version, context=context)
        return self.wrap(dek, context=context, version=target)

    # -- KEKs --------------------------------------------------------------------------

    def new_kek(self, partition: str = "") -> KekRecord:
        """Create a KEK under the current MEK version; it becomes the partition's active KEK."""
        kek_id = uuid.UUID(bytes=self._random(16), version=4).hex
        key = self._random(32)
        wrapped = self.mek.wrap(key, context=kek_context(self.product, kek_id))
        record = self.keks.create(
            kek_id=kek_id,
            partition=partition,
            mek_name=self.mek.mek_name,
            mek_version=wrapped.mek_version,
            wrapped=wrapped.ciphertext,
            algorithm=wrapped.algorithm,
        )
        self.cache.put(bytes.fromhex(kek_id), AESGCM(key), wrapped.mek_version)
        return record

    def rewrap_keks(self, to_version: str | None = None) -> KekRewrapResult:
        """MEK rotation under the tier: move every KEK to ``to_version`` (current if None).

        Idempotent: KEKs already there cost nothing. A KEK changed concurrently is re-read
        and tried again.
        """
        target = to_version if to_version is not None else self.mek.current_version()
        matched = rewrapped = skipped = calls = 0
        for record in self.keks.all():
            matched += 1
            while record.mek_version != target:
                moved = self.mek.rewrap(
                    record.wrapped,
                    from_version=record.mek_version,
                    context=kek_context(self.product, record.kek_id),
                    to_version=target,
                )
                calls += 1
                if self.keks.replace_wrap(
                    record,
                    mek_version=moved.mek_version,
                    wrapped=moved.ciphertext,
                    algorithm=moved.algorithm,
                ):
                    self.cache.invalidate(bytes.fromhex(record.kek_id))
                    rewrapped += 1
                    break
                record = self.keks.get(record.kek_id)
            else:
                skipped += 1
        return KekRewrapResult(
            matched=matched, rewrapped=rewrapped, skipped=skipped, remote_calls=calls
        )

    def shred_partition(self, partition: str) -> int:
        """Destroy every KEK of a partition: all of its DEKs become unreadable. How many."""
        doomed = [k for k in self.keks.all() if k.partition == partition]
        for record in doomed:
            self.cache.invalidate(bytes.fromhex(record.kek_id))
            self.keks.delete(record.kek_id)
        return len(doomed)

    def _kek(self, kek_id: str) -> AESGCM:
        raw_id = bytes.fromhex(kek_id)
        entry = self.cache.lookup(raw_id)
        if entry is not None:
            return entry[0]
        record = self.keks.get(kek_id)
        key = self.mek.unwrap(
            record.wrapped,
            version=record.mek_version,
            context=kek_context(self.product, kek_id),
        )
        if len(key) != 32:
            raise DecryptionError()
        cipher = AESGCM(key)
        self.cache.put(raw_id, cipher, record.mek_version)
        return cipher
