"""Revocation pushed, not waited for: the key-state epoch, bumped and watched.

Every command that changes what keys may be used (``keys disable|enable|compromised|retire``,
``keys shred-partition``, a completed rewrap) calls :func:`announce_key_change`, which bumps
the product's key-state epoch (one small record in the product's own database, see
:class:`~field_encrypt.backends.base.KeyStateStore`) and names the versions it touched.

Every long-running process that holds a DEK cache (the NoteLett service, the console, the
scheduled rotation: :func:`~field_encrypt.runtime.start_background` with ``watch=True``; a
one-shot command starts none) runs a :class:`KeyEpochWatcher`: a daemon thread that reads the epoch once per ``FIELD_ENCRYPT_KEY_STATE_POLL_SECONDS`` (default 1 s;
one primary-key read, off the request path). When it moved, the watcher

1. makes the key provider forget the version states it cached
   (:func:`~field_encrypt.providers.base.refresh_provider`), then
2. drops exactly the cached keys the changes name: DEKs unwrapped under those MEK versions
   or KEKs, and, with the KEK tier, the KEKs wrapped under those MEK versions and every DEK
   under them (everything, when it missed changes or the record went back).

The next read of such a DEK unwraps it again through the provider, which now refuses a
disabled version. So a change made through field-encrypt reaches every process within one
poll interval plus one read, whatever ``FIELD_ENCRYPT_CACHE_TTL_SECONDS`` says; the TTL
bounds memory (and revocation done in the key service directly, behind field-encrypt's back).

**When the store does not answer**, the watcher cannot know whether a version was revoked.
It keeps serving from the cache for ``FIELD_ENCRYPT_KEY_STATE_STALE_SECONDS`` (default 10 s:
a fail-over or a network blip should not cost every cached key), then fails closed: it
suspends the cache (empties it, keeps nothing), so every read unwraps through the store and
the provider, and works exactly when they do. The first successful read resumes it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Collection, Sequence
from typing import TYPE_CHECKING

from field_encrypt import metrics
from field_encrypt.backends.base import ALL_VERSIONS, KEK_PREFIX, KeyState, KeyStateStore
from field_encrypt.cache import DekCache
from field_encrypt.errors import FieldEncryptError
from field_encrypt.poller import Poller
from field_encrypt.providers.base import KeyProvider, refresh_provider

if TYPE_CHECKING:
    from field_encrypt.products import ProductRuntime
    from field_encrypt.providers.kek_tier import KekTierProvider

log = logging.getLogger("field_encrypt.key_epoch")


def key_state_store(runtime: ProductRuntime) -> KeyStateStore | None:
    """The runtime's key-state store, opened in its database if it has none yet; ``None``
    for a database that is none of the backends (an in-memory test product)."""
    if runtime.key_state is not None:
        return runtime.key_state
    from field_encrypt.backends.registry import database_kind_of, open_key_state_store

    try:
        database_kind_of(runtime.database)
    except TypeError:
        return None
    runtime.key_state = open_key_state_store(runtime.database, product=runtime.encryptor.product)
    return runtime.key_state


def announce_key_change(
    runtime: ProductRuntime, versions: Sequence[str], *, via: str
) -> KeyState | None:
    """Bump the product's key-state epoch: ``versions`` changed (``via`` says how).

    Call it after the change is made (the provider's state, the KEK store), so a process
    that sees the new epoch also sees the change. This process's own cache is not touched
    here: the caller already did what it needed, and its watcher follows like the others.
    """
    store = key_state_store(runtime)
    if store is None:
        return None
    return store.bump(versions, via=via)


class KeyEpochWatcher:
    """Reads a product's key-state epoch every ``interval`` seconds; drops what changed.

    ``check()`` is one poll, for tests and for callers with their own loop; ``start()``
    runs it on a daemon thread until ``close()``.
    """

    def __init__(
        self,
        store: KeyStateStore,
        *,
        cache: DekCache,
        provider: KeyProvider,
        tier: KekTierProvider | None = None,
        interval: float = 1.0,
        stale_after: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if interval <= 0 or stale_after <= 0:
            raise ValueError("interval and stale_after must be positive")
        self.store = store
        self.cache = cache
        self.provider = provider
        self.tier = tier
        self.interval = interval
        self.stale_after = stale_after
        self._clock = clock
        self.epoch: int | None = None
        """The epoch this process acts on (``None`` before the first successful read)."""
        self.read_at = clock()
        """When the epoch was last read (start-up counts as read: the cache is empty)."""
        self.failures = 0
        """Failed reads in a row."""
        self._poller = Poller(
            f"field-encrypt-key-epoch-{self.product}", self.check, self._failed, interval=interval
        )

    def __repr__(self) -> str:
        return (
            f"KeyEpochWatcher(product={self.store.product!r}, epoch={self.epoch}, "
            f"interval={self.interval})"
        )

    @property
    def product(self) -> str:
        return self.store.product

    def check(self) -> int:
        """Read the epoch once and act on it; how many cached keys were dropped."""
        try:
            state = self.store.read()
        except FieldEncryptError as exc:
            self.failed(exc)
            return 0
        return self.apply(state)

    def apply(self, state: KeyState) -> int:
        """Act on a freshly read ``state``; how many cached keys were dropped."""
        self.read_at = self._clock()
        self.failures = 0
        if self.cache.suspended:  # the store answers again: the cache is empty, start over
            refresh_provider(self.provider)
            self.cache.resume()
            if self.tier is not None:
                self.tier.cache.resume()
            metrics.dek_cache_suspended(self.product, False)
            log.warning(
                "key state of %s readable again (epoch %d): DEK cache resumed",
                self.product,
                state.epoch,
            )
            self.epoch = state.epoch
            metrics.key_epoch_polled(self.product, "changed")
            return 0
        if self.epoch is None:
            self.epoch = state.epoch
            metrics.key_epoch_polled(self.product, "unchanged")
            return 0
        changes = state.since(self.epoch)
        if changes == ():
            metrics.key_epoch_polled(self.product, "unchanged")
            return 0
        refresh_provider(self.provider)  # before the drop: a reload then sees the new state
        if changes is None or any(ALL_VERSIONS in c.versions for c in changes):
            dropped = self._drop_all()
        else:
            dropped = self._drop({v for c in changes for v in c.versions})
        log.info(
            "key state of %s moved from epoch %d to %d (%s): %d cached keys dropped",
            self.product,
            self.epoch,
            state.epoch,
            "; ".join(f"{c.via} {','.join(c.versions)}" for c in changes or ()) or "missed",
            dropped,
        )
        self.epoch = state.epoch
        metrics.key_epoch_polled(self.product, "changed", dropped=dropped)
        return dropped

    def failed(self, error: BaseException) -> None:
        """A read failed: after ``stale_after`` seconds without one, suspend the caches."""
        self.failures += 1
        metrics.key_epoch_polled(self.product, "failed")
        if self.cache.suspended or self._clock() - self.read_at < self.stale_after:
            return
        self.cache.suspend()
        if self.tier is not None:
            self.tier.cache.suspend()
        metrics.dek_cache_suspended(self.product, True)
        log.warning(
            "cannot read the key state of %s for %.0fs (%s): DEK cache suspended, every read "
            "unwraps through the store and the provider until it can",
            self.product,
            self._clock() - self.read_at,
            type(error).__name__,
        )

    def _drop_all(self) -> int:
        dropped = self.cache.stats().size
        self.cache.clear()
        if self.tier is not None:
            dropped += self.tier.cache.stats().size
            self.tier.cache.clear()
        return dropped

    def _drop(self, versions: Collection[str]) -> int:
        meks = {v for v in versions if not v.startswith(KEK_PREFIX)}
        keks = {v for v in versions if v.startswith(KEK_PREFIX)}
        dropped = 0
        if self.tier is not None:
            if meks:  # the KEKs under those MEK versions go, and the DEKs under them
                try:
                    under = [k.kek_id for k in self.tier.keks.all() if k.mek_version in meks]
                except FieldEncryptError:
                    return self._drop_all()  # cannot tell which: drop everything
                keks |= {KEK_PREFIX + kek_id for kek_id in under}
                dropped += len(self.tier.cache.invalidate_versions(meks))
            for kek in keks:
                self.tier.cache.invalidate(bytes.fromhex(kek[len(KEK_PREFIX) :]))
        return dropped + len(self.cache.invalidate_versions(meks | keks))

    # -- the thread --------------------------------------------------------------------

    def start(self) -> KeyEpochWatcher:
        """Poll on a daemon thread (the first read at once); idempotent."""
        self._poller.start()
        return self

    def _failed(self, exc: Exception) -> None:
        log.exception("reading the key state of %s failed", self.product)
        self.failed(exc)

    def close(self) -> None:
        """Stop polling (before the database it reads is closed)."""
        self._poller.close(timeout=self.interval + 10.0)


def watch_key_state(runtime: ProductRuntime) -> KeyEpochWatcher | None:
    """Start watching the product's key-state epoch for ``runtime`` (its settings say how
    often; ``None`` when ``FIELD_ENCRYPT_KEY_STATE_POLL_SECONDS`` is 0 or the database has no
    key-state store). The watcher is closed with the runtime, before its database."""
    settings = runtime.settings
    if settings.key_state_poll_seconds <= 0:
        return None
    store = key_state_store(runtime)
    if store is None:
        return None
    watcher = KeyEpochWatcher(
        store,
        cache=runtime.encryptor.cache,
        provider=runtime.provider,
        tier=runtime.kek_tier,
        interval=settings.key_state_poll_seconds,
        stale_after=settings.key_state_stale_seconds,
    )
    runtime.resources.append(watcher.start())
    runtime.key_epoch = watcher
    return watcher
