"""DekCache: bounded, TTL-limited, per-entry and per-version invalidation, counters."""

from __future__ import annotations

import os

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from field_encrypt.cache import DekCache

from .conftest import Clock


def _cipher() -> AESGCM:
    return AESGCM(os.urandom(32))


def test_hits_misses_and_ttl(clock: Clock) -> None:
    """An entry is served until its TTL passes, and the counters say what happened."""
    cache = DekCache(ttl_seconds=10, clock=clock)
    c = _cipher()
    assert cache.get(b"a") is None
    cache.put(b"a", c, "1")
    assert cache.get(b"a") is c
    clock.advance(10)
    assert cache.get(b"a") is None
    stats = cache.stats()
    assert (stats.hits, stats.misses, stats.evictions, stats.size) == (1, 2, 1, 0)


def test_bounded_size_evicts_oldest(clock: Clock) -> None:
    """Past max_entries the oldest entry goes first."""
    cache = DekCache(max_entries=2, clock=clock)
    for key in (b"a", b"b", b"c"):
        cache.put(key, _cipher(), "1")
    assert cache.get(b"a") is None
    assert cache.get(b"b") is not None and cache.get(b"c") is not None
    assert cache.stats().size == 2


def test_invalidate_one_and_by_version(clock: Clock) -> None:
    """invalidate drops one DEK; invalidate_version drops every DEK of that MEK version."""
    cache = DekCache(clock=clock)
    cache.put(b"a", _cipher(), "1")
    cache.put(b"b", _cipher(), "1")
    cache.put(b"c", _cipher(), "2")
    cache.invalidate(b"c")
    assert cache.get(b"c") is None
    assert cache.invalidate_version("1") == 2
    assert cache.stats().size == 0


def test_zero_sized_cache_keeps_nothing(clock: Clock) -> None:
    """max_entries=0 or ttl_seconds=0 turns caching off."""
    for cache in (DekCache(max_entries=0, clock=clock), DekCache(ttl_seconds=0, clock=clock)):
        cache.put(b"a", _cipher(), "1")
        assert cache.get(b"a") is None


def test_a_key_loaded_before_an_invalidation_is_not_put_back() -> None:
    """A reader that read the generation, then lost a race with a revocation, does not put
    its (possibly revoked) key back; one that loaded after it does."""
    cache = DekCache()
    cache.put(b"a", _cipher(), "1")
    generation = cache.generation
    assert cache.invalidate_versions({"1", "kek:x"}) == [b"a"]
    cache.put(b"a", _cipher(), "1", generation=generation)
    assert cache.get(b"a") is None
    cache.put(b"a", _cipher(), "1", generation=cache.generation)
    assert cache.get(b"a") is not None


def test_a_suspended_cache_keeps_nothing_until_resumed() -> None:
    """suspend() empties the cache and makes put() a no-op; resume() caches again."""
    cache = DekCache()
    cache.put(b"a", _cipher(), "1")
    cache.suspend()
    assert cache.suspended and cache.get(b"a") is None
    cache.put(b"b", _cipher(), "1")
    assert cache.stats().size == 0
    cache.resume()
    cache.put(b"b", _cipher(), "1")
    assert cache.get(b"b") is not None
