"""The intermediate key tier: DEKs wrapped locally under KEKs, KEKs wrapped by the MEK.

``KekTierProvider`` is itself a :class:`~field_encrypt.providers.base.KeyProvider`, so the
envelope and the rewrap engine use it like any other:

- a DEK wrapped under a KEK is recorded with ``mek_version = "kek:<kekId>"`` and wrapped
  with AES-256-GCM under the KEK (associated data: the DEK context), locally;
- any other version is a MEK version and goes to the MEK provider, so a rewrap from
  ``"2"`` to ``"kek:<id>"`` moves a DEK into the tier, and the reverse moves it out;
- a rewrap from ``"kek:<old>"`` to ``"kek:<new>"`` is a KEK rotation, at local speed.

MEK rotation with the tier rewraps the KEKs only (:meth:`KekTierProvider.rewrap_keks`,
three checked remote calls per KEK) whatever the number of DEKs. A DEK's effective MEK
version is its KEK's (:func:`~field_encrypt.backends.base.effective_counts`, applied by
:func:`field_encrypt.usage.dek_counts`). ``layout`` says where new DEKs go; both layouts
read both kinds of DEK, so a product moves between them with a migration
(``rotation/layout.py``). See docs/key-tier.md.

Unwrapped KEKs are cached like DEKs (same TTL; evicted when their MEK version is disabled
in this process). Trade-off: an unwrapped KEK in memory can unwrap every DEK under it.
"""

from __future__ import annotations

import hmac
import os
import time
import uuid
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Literal

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from field_encrypt.audit import (
    KEK_CREATED,
    KEK_DELETED,
    KEK_REWRAPPED,
    AuditTrail,
    Recording,
    recorded,
)
from field_encrypt.backends.base import KEK_PREFIX, KekRecord, KekStore
from field_encrypt.cache import DekCache
from field_encrypt.errors import (
    AlreadyExistsError,
    DecryptionError,
    KeyProviderError,
    NotFoundError,
)
from field_encrypt.providers.base import KeyProvider, KeyVersion, WrappedDek, refresh_provider
from field_encrypt.providers.symmetric import open_sealed

ALGORITHM = "A256GCM-KEK"
KEK_CALLS = 3
"""Remote calls to move one KEK to a new MEK version: unwrap, wrap, unwrap-and-compare."""

Layout = Literal["direct", "kek"]
"""Where new DEKs go: under the MEK (``direct``) or under the partition's KEK (``kek``)."""


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
    moved_kek_ids: tuple[str, ...] = ()


class KekTierProvider:
    """A KeyProvider that puts a tier of KEKs between the MEK and the DEKs.

    ``layout`` says where new DEKs go (``wrap`` with no version): ``"kek"`` under the
    partition's active KEK, ``"direct"`` under the MEK's current version. Both layouts
    read both kinds of DEK, so a product can move between them with a migration run
    while every document stays readable. ``remote`` is the MEK provider's: moving DEKs
    into or out of the tier calls it once per DEK.
    """

    def __init__(
        self,
        mek: KeyProvider,
        keks: KekStore,
        *,
        product: str,
        layout: Layout = "kek",
        cache: DekCache | None = None,
        audit: AuditTrail | None = None,
        random_bytes: Callable[[int], bytes] = os.urandom,
    ) -> None:
        if layout not in ("direct", "kek"):
            raise ValueError(f"layout must be 'direct' or 'kek', not {layout!r}")
        self.mek = mek
        self.keks = keks
        self.product = product
        self.layout: Layout = layout
        self.kind = f"{mek.kind}+kek"
        self.mek_name = mek.mek_name
        self.remote = mek.remote
        self.cache = cache if cache is not None else DekCache(max_entries=1000)
        self.audit = audit
        """Where KEK lifecycle events go (created, rewrapped, deleted); ``None``: nowhere."""
        self._random = random_bytes

    def with_mek(self, mek: KeyProvider) -> KekTierProvider:
        """The same tier (KEKs, cache, layout) over another MEK provider, e.g. a throttled one."""
        return KekTierProvider(
            mek,
            self.keks,
            product=self.product,
            layout=self.layout,
            cache=self.cache,
            audit=self.audit,
            random_bytes=self._random,
        )

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

    def refresh(self) -> None:
        """The MEK provider's :func:`~field_encrypt.providers.base.refresh_provider`."""
        refresh_provider(self.mek)

    # -- DEKs --------------------------------------------------------------------------

    def dek_version(self, partition: str = "") -> str:
        """``"kek:<id>"`` of the partition's active KEK, creating the KEK if there is none."""
        record = self.keks.active(partition)
        if record is None:
            try:
                record = self.new_kek(partition)
            except AlreadyExistsError:  # another process created it at the same moment
                record = self.keks.active(partition)
                if record is None:
                    raise
        return KEK_PREFIX + record.kek_id

    def effective_version(self, version: str) -> str:
        """The MEK version behind ``version``: a KEK's MEK version, or ``version`` itself."""
        if version.startswith(KEK_PREFIX):
            return self.keks.get(version[len(KEK_PREFIX) :]).mek_version
        return version

    def new_dek_version(self) -> str:
        """Where a new DEK goes by default: the active KEK (``kek`` layout) or the MEK's current."""
        return self.dek_version() if self.layout == "kek" else self.mek.current_version()

    def wrap(self, dek: bytes, *, context: bytes, version: str | None = None) -> WrappedDek:
        if version is None:
            version = self.new_dek_version()
        if not version.startswith(KEK_PREFIX):
            return self.mek.wrap(dek, context=context, version=version)
        nonce = self._random(12)
        sealed = self._kek(version[len(KEK_PREFIX) :]).encrypt(nonce, dek, context)
        return WrappedDek(mek_version=version, ciphertext=nonce + sealed, algorithm=ALGORITHM)

    def unwrap(self, ciphertext: bytes, *, version: str, context: bytes) -> bytes:
        if not version.startswith(KEK_PREFIX):
            return self.mek.unwrap(ciphertext, version=version, context=context)
        return open_sealed(self._kek(version[len(KEK_PREFIX) :]), ciphertext, context)

    def rewrap(
        self, ciphertext: bytes, *, from_version: str, context: bytes, to_version: str | None = None
    ) -> WrappedDek:
        target = to_version if to_version is not None else self.new_dek_version()
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
        with self._recorded(  # the KEK and kek.created: stored together or not at all
            KEK_CREATED, kek_id, partition, mekVersion=wrapped.mek_version
        ):
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

    def rewrap_keks(
        self, to_version: str | None = None, *, only_version: str | None = None
    ) -> KekRewrapResult:
        """MEK rotation under the tier: move every KEK to ``to_version`` (current if None).

        ``only_version`` limits it to the KEKs on that MEK version. Each KEK is unwrapped,
        wrapped under the target and the new wrap unwrapped again and compared before it is
        swapped in (:data:`KEK_CALLS` calls: a handful of KEKs, so every one is checked).
        Idempotent: KEKs already there cost nothing. A KEK changed concurrently is re-read
        and tried again.
        """
        target = to_version if to_version is not None else self.mek.current_version()
        matched = rewrapped = skipped = calls = 0
        moved: list[str] = []
        for record in self.keks.all():
            if only_version is not None and record.mek_version not in (only_version, target):
                continue
            matched += 1
            while record.mek_version != target:
                context = kek_context(self.product, record.kek_id)
                key = self.mek.unwrap(record.wrapped, version=record.mek_version, context=context)
                new = self.mek.wrap(key, context=context, version=target)
                calls += KEK_CALLS
                if new.mek_version != target or not hmac.compare_digest(
                    self.mek.unwrap(new.ciphertext, version=target, context=context), key
                ):
                    raise KeyProviderError(f"the new wrap of KEK {record.kek_id} does not hold it")
                with self._recorded(  # the new wrap and kek.rewrapped: one unit
                    KEK_REWRAPPED,
                    record.kek_id,
                    record.partition,
                    fromVersion=record.mek_version,
                    toVersion=target,
                ) as event:
                    if not self.keks.replace_wrap(
                        record,
                        mek_version=new.mek_version,
                        wrapped=new.ciphertext,
                        algorithm=new.algorithm,
                    ):
                        event.cancel()  # changed concurrently: re-read, try again
                if not event.cancelled:
                    self.cache.invalidate(bytes.fromhex(record.kek_id))
                    rewrapped += 1
                    moved.append(record.kek_id)
                    break
                record = self.keks.get(record.kek_id)
            else:
                skipped += 1
        return KekRewrapResult(
            matched=matched,
            rewrapped=rewrapped,
            skipped=skipped,
            remote_calls=calls,
            moved_kek_ids=tuple(moved),
        )

    def delete_unreferenced(
        self,
        dek_counts: dict[str, int],
        *,
        grace_seconds: float,
        now: Callable[[], float] = time.time,
    ) -> tuple[list[str], list[str]]:
        """Delete the retired KEKs no DEK refers to; ``(deleted, kept-with-reason)``.

        ``dek_counts`` are the dek_store's raw counts per version, read just before. A KEK
        is deleted only when it is not active, no DEK row names it, and it was retired at
        least ``grace_seconds`` ago (a writer that read it as active just before it was
        retired has had that long to store its DEK). Deleting a KEK that a DEK still named
        would shred that DEK, so anything else is kept, and said why.
        """
        deleted: list[str] = []
        kept: list[str] = []
        for record in self.keks.all():
            if record.active:
                continue
            refs = dek_counts.get(KEK_PREFIX + record.kek_id, 0)
            age = now() - record.updated_at.timestamp()
            if refs:
                kept.append(f"KEK {record.kek_id} kept: {refs} DEKs still refer to it")
            elif age < grace_seconds:
                kept.append(
                    f"KEK {record.kek_id} kept: retired {age:.0f}s ago, "
                    f"less than the {grace_seconds:g}s grace (re-run to delete it)"
                )
            else:
                self.cache.invalidate(bytes.fromhex(record.kek_id))
                if self._delete(record, reason="unreferenced", deks=0):
                    deleted.append(record.kek_id)
        return deleted, kept

    def shred_partition(self, partition: str, *, deks: int | None = None) -> int:
        """Destroy every KEK of a partition: all of its DEKs become unreadable. How many.

        ``deks``: how many DEK rows name those KEKs, if the caller counted (recorded in the
        ``kek.deleted`` events).
        """
        doomed = [k for k in self.keks.all() if k.partition == partition]
        for record in doomed:
            self.cache.invalidate(bytes.fromhex(record.kek_id))
            self._delete(record, reason="partition-shredded", deks=deks)
        return len(doomed)

    def _delete(self, record: KekRecord, **data: object) -> bool:
        """Delete a KEK and record ``kek.deleted`` with it (stored together or not at all:
        the audit outbox); whether there was one to delete."""
        with recorded(
            self.audit,
            KEK_DELETED,
            subject=f"kek/{record.kek_id}",
            data={"kekId": record.kek_id, "partition": record.partition, **data},
            check={"kekId": record.kek_id},
        ) as event:
            if not self.keks.delete(record.kek_id):
                event.cancel()
                return False
        return True

    def _recorded(
        self, type: str, kek_id: str, partition: str, **data: object
    ) -> AbstractContextManager[Recording]:
        """The unit of a KEK act and its event (:func:`~field_encrypt.audit.recorded`)."""
        return recorded(
            self.audit,
            type,
            subject=f"kek/{kek_id}",
            data={"kekId": kek_id, "partition": partition, **data},
            check={"kekId": kek_id},
        )

    def _kek(self, kek_id: str) -> AESGCM:
        raw_id = bytes.fromhex(kek_id)
        entry = self.cache.lookup(raw_id)
        if entry is not None:
            return entry[0]
        try:
            record = self.keks.get(kek_id)
        except NotFoundError:
            raise DecryptionError() from None  # the KEK was shredded: so were its DEKs
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
