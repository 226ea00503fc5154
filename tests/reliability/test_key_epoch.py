"""The key-state epoch: its store on all three backends, and what a watching process does.

The store is one record per product, bumped atomically; the watcher (one poll per
``check()``, no thread, so nothing waits for time) drops exactly the cached keys a change
names, refreshes the provider, and fails closed when the store stays unreadable.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from field_encrypt import KeyVersionDisabledError, load_settings
from field_encrypt.backends.base import ALL_VERSIONS, KEPT_CHANGES, KeyState, KeyStateStore
from field_encrypt.backends.registry import open_database, open_key_state_store
from field_encrypt.errors import StoreUnavailableError
from field_encrypt.key_epoch import KeyEpochWatcher, key_state_store
from field_encrypt.products import ProductRuntime
from field_encrypt.rotation import disable_version, enable_version, open_lifecycle
from field_encrypt.runtime import open_runtime
from field_encrypt.testing import FakeClock
from tests.backends import BACKEND_KINDS, backend_for

COLLECTIONS = {"c": ["f"]}


@pytest.fixture(params=BACKEND_KINDS)
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    opened = open_database(backend_for(request.param, request, tmp_path).settings())
    yield opened
    opened.close()


def test_the_epoch_starts_at_zero_and_each_bump_is_counted_per_product(database: Any) -> None:
    """A fresh product reads epoch 0; every bump adds one, names its versions and command,
    and another product's record is its own."""
    store = open_key_state_store(database, product="p")
    other = open_key_state_store(database, product="q")
    assert store.read() == KeyState(product="p")
    store.bump(["1"], via="keys disable")
    state = store.bump(["kek:ab"], via="keys shred-partition")
    assert state == store.read()
    assert state.epoch == 2
    assert [(c.epoch, c.versions, c.via) for c in state.changes] == [
        (1, ("1",), "keys disable"),
        (2, ("kek:ab",), "keys shred-partition"),
    ]
    assert other.read().epoch == 0


def test_concurrent_bumps_are_never_lost(database: Any) -> None:
    """Eight threads bumping at once (each its own store object, like separate processes):
    the epoch counts every bump."""
    stores = [open_key_state_store(database, product="p") for _ in range(8)]
    barrier = threading.Barrier(len(stores))

    def bump(store: KeyStateStore) -> None:
        barrier.wait()
        for _ in range(3):
            store.bump(["1"], via="test")

    threads = [threading.Thread(target=bump, args=(s,)) for s in stores]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    state = stores[0].read()
    assert state.epoch == 24
    assert [c.epoch for c in state.changes] == list(range(1, 25))


def test_changes_since_an_epoch_and_when_they_are_no_longer_known() -> None:
    """Changes past the kept window, or a record that went back (a restored database), are
    ``None``: the watcher then drops everything."""
    state = KeyState(product="p")
    for _ in range(KEPT_CHANGES + 5):
        state = state.bumped(["1"], via="t", at=0.0)
    assert state.since(state.epoch) == ()
    assert [c.epoch for c in state.since(state.epoch - 2) or ()] == [state.epoch - 1, state.epoch]
    assert state.since(state.epoch - KEPT_CHANGES) is not None
    assert state.since(state.epoch - KEPT_CHANGES - 1) is None
    assert state.since(state.epoch + 3) is None


@pytest.fixture(params=BACKEND_KINDS)
def runtimes(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[list[ProductRuntime]]:
    """Two runtimes of one product on one database (two processes' worth), watching by
    hand: the poll interval is 0 so no thread runs, and the TTL is an hour."""
    backend = backend_for(request.param, request, tmp_path)
    settings = backend.settings(
        keyring=str(tmp_path / "ring.json"),
        mek_name="m",
        cache_ttl_seconds=3600,
        key_state_poll_seconds=0,
    )
    opened = [open_runtime(settings, product="p", collections=COLLECTIONS) for _ in range(2)]
    yield opened
    for runtime in opened:
        runtime.close()


def _watcher(runtime: ProductRuntime, clock: FakeClock | None = None) -> KeyEpochWatcher:
    store = key_state_store(runtime)
    assert store is not None
    watcher = KeyEpochWatcher(
        store,
        cache=runtime.encryptor.cache,
        provider=runtime.provider,
        tier=runtime.kek_tier,
        stale_after=10.0,
        **({"clock": clock.monotonic} if clock is not None else {}),
    )
    watcher.check()  # the baseline
    return watcher


def test_a_forced_disable_elsewhere_is_refused_here_at_the_next_poll(
    runtimes: list[ProductRuntime],
) -> None:
    """Process B has the DEK cached for an hour; process A force-disables its version. B's
    next poll drops exactly that version's DEKs (not the current version's), B's provider
    sees the version disabled at once, and reads fail; A enables it again and B's next
    poll restores reads."""
    a, b = runtimes
    old = a.encryptor.encrypt_document("c", "d1", {"f": "old"})
    a.provider.create_version()
    b.provider.refresh()  # type: ignore[attr-defined]
    new = b.encryptor.encrypt_document("c", "d2", {"f": "new"})
    watcher = _watcher(b)
    assert b.encryptor.decrypt_document("c", "d1", old)["f"] == "old"  # cached in B
    done = disable_version(a, open_lifecycle(a), "1", force=True, reason="exposed in a log")
    assert done.forced and done.deks_wrapped == 1
    assert b.encryptor.decrypt_document("c", "d1", old)["f"] == "old"  # no poll yet: cached
    assert watcher.check() == 1
    with pytest.raises(KeyVersionDisabledError):
        b.encryptor.decrypt_document("c", "d1", old)
    assert b.encryptor.decrypt_document("c", "d2", new)["f"] == "new"  # still cached, untouched
    assert b.encryptor.cache.stats().size == 1
    enable_version(a, open_lifecycle(a), "1")
    watcher.check()
    assert b.encryptor.decrypt_document("c", "d1", old)["f"] == "old"


def test_a_disable_without_force_is_refused_while_deks_use_the_version(
    runtimes: list[ProductRuntime],
) -> None:
    """The routine gate stands; --force needs a reason; the current version is never
    disabled, forced or not."""
    from field_encrypt.errors import ConfigurationError, RotationError

    a, _ = runtimes
    a.encryptor.encrypt_document("c", "d1", {"f": "x"})
    a.provider.create_version()
    lifecycle = open_lifecycle(a)
    with pytest.raises(RotationError, match="--force"):
        disable_version(a, lifecycle, "1")
    with pytest.raises(ConfigurationError, match="--reason"):
        disable_version(a, lifecycle, "1", force=True, reason="  ")
    with pytest.raises(RotationError, match="current version"):
        disable_version(a, lifecycle, "2", force=True, reason="r")
    assert [v.enabled for v in a.provider.versions()] == [True, True]


def test_a_missed_or_unknown_change_drops_everything(runtimes: list[ProductRuntime]) -> None:
    """A watcher that fell behind the kept changes, or sees ``*``, drops its whole cache."""
    a, b = runtimes
    stored = a.encryptor.encrypt_document("c", "d", {"f": "x"})
    watcher = _watcher(b)
    b.encryptor.decrypt_document("c", "d", stored)
    store = watcher.store
    store.bump([ALL_VERSIONS], via="migrate rewrap-deks")
    assert watcher.check() == 1
    b.encryptor.decrypt_document("c", "d", stored)
    for _ in range(KEPT_CHANGES + 1):
        store.bump(["no-such-version"], via="test")
    assert watcher.check() == 1
    assert b.encryptor.cache.stats().size == 0


class _Unreachable:
    """A key-state store whose database does not answer (a real store behind it)."""

    def __init__(self, inner: KeyStateStore) -> None:
        self.inner = inner
        self.product = inner.product
        self.down = False

    def read(self) -> KeyState:
        if self.down:
            raise StoreUnavailableError("the database does not answer")
        return self.inner.read()

    def bump(self, versions: Any, *, via: str) -> KeyState:
        return self.inner.bump(versions, via=via)


def test_an_unreadable_store_fails_closed_after_the_stale_limit(
    runtimes: list[ProductRuntime],
) -> None:
    """While the epoch cannot be read, cached keys serve for ``stale_after`` seconds; then
    the cache is emptied and keeps nothing (every read unwraps) until a read succeeds."""
    a, b = runtimes
    stored = a.encryptor.encrypt_document("c", "d", {"f": "x"})
    clock = FakeClock()
    watcher = _watcher(b, clock)
    store = _Unreachable(watcher.store)
    watcher.store = store
    b.encryptor.decrypt_document("c", "d", stored)
    store.down = True
    clock.advance(9.9)
    watcher.check()
    assert b.encryptor.cache.stats().size == 1 and not b.encryptor.cache.suspended
    clock.advance(0.2)
    watcher.check()
    assert b.encryptor.cache.suspended and b.encryptor.cache.stats().size == 0
    b.encryptor.decrypt_document("c", "d", stored)  # the store and provider still answer
    assert b.encryptor.cache.stats().size == 0  # ...but nothing is kept
    store.down = False
    watcher.check()
    assert not b.encryptor.cache.suspended
    b.encryptor.decrypt_document("c", "d", stored)
    assert b.encryptor.cache.stats().size == 1


def test_a_long_running_runtime_watches_on_a_thread_and_stops_when_closed(
    tmp_path: Path,
) -> None:
    """open_runtime starts no watcher (a one-shot command has no cache worth keeping
    fresh); start_background(watch=True), as a long-running process calls it, starts one
    with the settings' interval, only once; closing the runtime stops it before the
    database closes."""
    from field_encrypt.runtime import start_background

    settings = load_settings(
        {},
        database=str(tmp_path / "db.sqlite"),
        keyring=str(tmp_path / "ring.json"),
        key_state_poll_seconds=0.05,
    )
    runtime = open_runtime(settings, product="p", collections=COLLECTIONS)
    assert runtime.key_epoch is None
    start_background(runtime, watch=True)
    watcher = runtime.key_epoch
    assert watcher is not None and watcher.interval == 0.05
    start_background(runtime, watch=True)
    assert runtime.key_epoch is watcher
    thread = watcher._poller.thread
    assert thread is not None and thread.is_alive()
    runtime.close()
    assert not thread.is_alive()


@pytest.fixture(params=BACKEND_KINDS)
def kek_runtimes(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[list[ProductRuntime]]:
    """Two runtimes of one product with the KEK tier, on one database, watching by hand."""
    backend = backend_for(request.param, request, tmp_path)
    settings = backend.settings(
        keyring=str(tmp_path / "ring.json"),
        mek_name="m",
        cache_ttl_seconds=3600,
        key_state_poll_seconds=0,
        key_layout="kek",
    )
    opened = [open_runtime(settings, product="p", collections=COLLECTIONS) for _ in range(2)]
    yield opened
    for runtime in opened:
        runtime.close()


def test_with_the_kek_tier_a_disabled_mek_version_drops_its_keks_and_their_deks(
    kek_runtimes: list[ProductRuntime],
) -> None:
    """B holds a DEK under a KEK wrapped by MEK v1 (DEK and KEK both cached). A forces v1
    off: B's next poll drops the KEK and the DEKs under it, and the read is refused."""
    a, b = kek_runtimes
    stored = a.encryptor.encrypt_document("c", "d", {"f": "x"})
    a.provider.create_version()
    watcher = _watcher(b)
    assert b.encryptor.decrypt_document("c", "d", stored)["f"] == "x"
    assert b.kek_tier is not None and b.kek_tier.cache.stats().size == 1
    disable_version(a, open_lifecycle(a), "1", force=True, reason="drill")
    assert watcher.check() == 2  # the KEK and the DEK under it
    assert b.kek_tier.cache.stats().size == 0
    with pytest.raises(KeyVersionDisabledError):
        b.encryptor.decrypt_document("c", "d", stored)


def test_a_shredded_partition_is_unreadable_elsewhere_at_the_next_poll(
    kek_runtimes: list[ProductRuntime],
) -> None:
    """B holds a DEK of partition ws-1 cached for an hour; A shreds ws-1 and announces it
    (what ``keys shred-partition`` does): B's next poll drops it, and the read fails; a
    DEK of another partition stays cached."""
    from field_encrypt.errors import DecryptionError
    from field_encrypt.key_epoch import announce_key_change

    a, b = kek_runtimes
    assert a.kek_tier is not None
    doomed_dek = a.encryptor.create_dek(version=a.kek_tier.dek_version("ws-1"))
    kept_dek = a.encryptor.create_dek(version=a.kek_tier.dek_version("ws-2"))
    doomed = a.encryptor.encrypt_document("c", "d1", {"f": "gone"}, dek_id=doomed_dek)
    kept = a.encryptor.encrypt_document("c", "d2", {"f": "kept"}, dek_id=kept_dek)
    watcher = _watcher(b)
    assert b.encryptor.decrypt_document("c", "d1", doomed)["f"] == "gone"
    assert b.encryptor.decrypt_document("c", "d2", kept)["f"] == "kept"
    keks = [k for k in a.kek_tier.keks.all() if k.partition == "ws-1"]
    a.kek_tier.shred_partition("ws-1")
    announce_key_change(a, ["kek:" + k.kek_id for k in keks], via="keys shred-partition")
    assert watcher.check() == 1
    with pytest.raises(DecryptionError):
        b.encryptor.decrypt_document("c", "d1", doomed)
    assert b.encryptor.decrypt_document("c", "d2", kept)["f"] == "kept"
    assert b.encryptor.cache.stats().size == 1


def test_every_key_state_command_bumps_the_epoch(runtimes: list[ProductRuntime]) -> None:
    """A completed rewrap, keys disable, keys enable, keys compromised (which rewraps and
    retires) each leave a change naming the versions they touched; a dry run leaves none."""
    from field_encrypt.rotation import (
        MigrationOptions,
        migrate,
        open_ledger,
        respond_to_compromise,
    )

    a, _ = runtimes
    a.encryptor.encrypt_document("c", "d", {"f": "x"})
    a.provider.create_version()
    ledger, lifecycle = open_ledger(a), open_lifecycle(a)
    migrate(a, ledger, MigrationOptions(mode="rewrap-deks", dry_run=True))
    migrate(a, ledger, MigrationOptions(mode="rewrap-deks"))
    disable_version(a, lifecycle, "1")
    enable_version(a, lifecycle, "1")
    respond_to_compromise(a, ledger, lifecycle, "1")
    store = key_state_store(a)
    assert store is not None
    changes = [(c.via, c.versions) for c in store.read().changes]
    assert changes[:3] == [
        ("migrate rewrap-deks", ("1",)),  # the versions it moved DEKs from
        ("keys disable", ("1",)),
        ("keys enable", ("1",)),
    ]
    assert ("keys compromised", ("1",)) in changes[3:]  # recorded, then rewrapped and retired
    assert changes[-1] == ("keys compromised", ("1",))  # the retirement's disable
