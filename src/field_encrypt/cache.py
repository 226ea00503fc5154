"""DekCache: a bounded, TTL-limited cache of unwrapped DEKs, held as ready AES-GCM ciphers.

The cache is what makes a warm read cost little more than AES-GCM itself, and it is
also plaintext key material in memory, so it is bounded in size and in age. Entries
remember the MEK version they were unwrapped under: disabling that version in this
process evicts them at once (:meth:`DekCache.invalidate_version`); other processes evict
them when their :class:`~field_encrypt.key_epoch.KeyEpochWatcher` sees the product's
key-state epoch move (within ``FIELD_ENCRYPT_KEY_STATE_POLL_SECONDS``). The TTL then
bounds memory, and revocation only for a process that watches nothing.

A watcher that cannot read the epoch for too long :meth:`~DekCache.suspend` s the cache
(empties it and caches nothing) until it can again: keys are then unwrapped per read.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

if TYPE_CHECKING:
    from field_encrypt._gcm import Key


@dataclass(frozen=True, slots=True)
class CacheStats:
    """Counters since the cache was made."""

    hits: int
    misses: int
    evictions: int
    size: int


class DekCache:
    """``dekId -> (cipher, mekVersion)``, oldest evicted first, with a time-to-live per entry.

    An entry may also hold the DEK as a :class:`field_encrypt._gcm.Key`, for the compiled
    read path (:mod:`field_encrypt.compiled`); :meth:`key` reads it.
    """

    def __init__(
        self,
        *,
        max_entries: int = 10_000,
        ttl_seconds: float = 300.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_entries < 0 or ttl_seconds < 0:
            raise ValueError("max_entries and ttl_seconds must not be negative")
        self.max_entries = max_entries
        self.ttl_seconds = ttl_seconds
        self._clock = clock
        self._entries: OrderedDict[bytes, tuple[AESGCM, str, float, Key | None]] = OrderedDict()
        self._lock = threading.Lock()
        self._hits = 0
        self._misses = 0
        self._evictions = 0
        self._suspended = False
        self.generation = 0
        """Moves on at every :meth:`invalidate_version` (s), :meth:`clear` and :meth:`suspend`:
        a ``put`` of a key loaded before (``generation=``) is dropped, so a read racing a
        revocation cannot put back what it revoked."""

    def __repr__(self) -> str:
        return (
            f"DekCache(size={len(self._entries)}, max_entries={self.max_entries}, "
            f"ttl_seconds={self.ttl_seconds})"
        )

    def get(self, dek_id: bytes) -> AESGCM | None:
        """The cipher for ``dek_id``, or ``None`` when absent or expired."""
        entry = self.lookup(dek_id)
        return entry[0] if entry is not None else None

    def lookup(self, dek_id: bytes) -> tuple[AESGCM, str] | None:
        """``(cipher, mekVersion)`` for ``dek_id``, or ``None`` when absent or expired.

        The hit path takes no lock: a dict read is atomic, and eviction order is
        insertion order (a DEK is re-inserted when it is unwrapped again after expiry).
        """
        entry = self._entries.get(dek_id)
        if entry is not None and entry[2] > self._clock():
            self._hits += 1
            return entry[0], entry[1]
        with self._lock:
            self._misses += 1
            if entry is not None and self._entries.get(dek_id) is entry:
                del self._entries[dek_id]
                self._evictions += 1
        return None

    def lookup_many(self, dek_ids: Iterable[bytes]) -> dict[bytes, AESGCM]:
        """The cached ciphers among ``dek_ids`` (absent and expired ones left out).

        For a page of documents: one clock reading and no lock for all of them (like
        :meth:`lookup`'s hit path); hits and misses are counted, and an expired entry is
        replaced when the caller unwraps its DEK again and :meth:`put` s it.
        """
        entries = self._entries
        now = self._clock()
        found: dict[bytes, AESGCM] = {}
        asked = 0
        for dek_id in dek_ids:
            asked += 1
            entry = entries.get(dek_id)
            if entry is not None and entry[2] > now:
                found[dek_id] = entry[0]
        self._hits += len(found)
        self._misses += asked - len(found)
        return found

    def key(self, dek_id: bytes) -> Key | None:
        """The compiled path's key for ``dek_id``, or ``None`` when absent, expired or put
        without one (a hit is counted only when there is one; the caller then reads the
        DEK through :meth:`lookup`, which counts the rest)."""
        entry = self._entries.get(dek_id)
        if entry is not None and entry[3] is not None and entry[2] > self._clock():
            self._hits += 1
            return entry[3]
        return None

    def put(
        self,
        dek_id: bytes,
        cipher: AESGCM,
        mek_version: str,
        *,
        generation: int | None = None,
        key: Key | None = None,
    ) -> None:
        """Remember ``cipher`` (and the compiled path's ``key``) for ``dek_id``, unwrapped
        under ``mek_version``.

        ``generation``: :attr:`generation` read before the key was loaded; if the cache was
        invalidated since, the key is not kept (it may have been loaded from a revoked state).
        """
        if self.max_entries == 0 or self.ttl_seconds == 0 or self._suspended:
            return
        with self._lock:
            if generation is not None and generation != self.generation:
                return
            self._entries[dek_id] = (cipher, mek_version, self._clock() + self.ttl_seconds, key)
            self._entries.move_to_end(dek_id)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)
                self._evictions += 1

    def invalidate(self, dek_id: bytes) -> None:
        """Forget one DEK (after a rewrap, re-encrypt or shred)."""
        with self._lock:
            self._entries.pop(dek_id, None)

    def invalidate_version(self, mek_version: str) -> int:
        """Forget every DEK unwrapped under ``mek_version``; how many were dropped."""
        with self._lock:
            self.generation += 1
            doomed = [k for k, entry in self._entries.items() if entry[1] == mek_version]
            for key in doomed:
                del self._entries[key]
            self._evictions += len(doomed)
            return len(doomed)

    def invalidate_versions(self, versions: Collection[str]) -> list[bytes]:
        """Forget every DEK unwrapped under one of ``versions``; the dekIds dropped."""
        with self._lock:
            self.generation += 1
            doomed = [k for k, entry in self._entries.items() if entry[1] in versions]
            for key in doomed:
                del self._entries[key]
            self._evictions += len(doomed)
            return doomed

    def clear(self) -> None:
        """Forget everything."""
        with self._lock:
            self.generation += 1
            self._entries.clear()

    def suspend(self) -> None:
        """Forget everything and keep nothing until :meth:`resume` (fail closed)."""
        with self._lock:
            self._suspended = True
            self.generation += 1
            self._entries.clear()

    def resume(self) -> None:
        """Cache again after :meth:`suspend`."""
        self._suspended = False

    @property
    def suspended(self) -> bool:
        """Whether the cache keeps nothing (:meth:`suspend`)."""
        return self._suspended

    def stats(self) -> CacheStats:
        """Hit, miss and eviction counters, and the current size."""
        with self._lock:
            return CacheStats(
                hits=self._hits,
                misses=self._misses,
                evictions=self._evictions,
                size=len(self._entries),
            )
