"""The key lifecycle store contract (version notes, rotation state), on all three stores."""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from field_encrypt.backends.registry import open_database
from field_encrypt.errors import ConcurrentUpdateError
from field_encrypt.rotation import LifecycleStore, open_lifecycle
from field_encrypt.rotation.lifecycle import RotationState, VersionNote
from tests.backends import BACKEND_KINDS, backend_for


@pytest.fixture(params=BACKEND_KINDS)
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    opened = open_database(backend_for(request.param, request, tmp_path).settings())
    yield opened
    opened.close()


def lifecycle_in(database: Any) -> LifecycleStore:
    """The store open_lifecycle picks for a runtime on ``database``."""
    runtime: Any = _JustADatabase(database)
    return open_lifecycle(runtime)


@dataclasses.dataclass
class _JustADatabase:
    """What open_lifecycle reads of a runtime: its database."""

    database: Any


def test_notes_round_trip_per_product(database: Any) -> None:
    """A version's note reads back; products do not see each other's; missing is empty."""
    store = lifecycle_in(database)
    assert isinstance(store, LifecycleStore)
    assert store.note("p", "1") == VersionNote(version="1")
    note = VersionNote(version="1", disabled_at=10.0, retain_until=99.5, compromised_at=11.0)
    store.save_note("p", note)
    store.save_note("p", dataclasses.replace(note, dek_exposed=True, exposed_before=9.0))
    store.save_note("q", VersionNote(version="1"))
    assert store.note("p", "1").dek_exposed and store.note("p", "1").compromised
    assert store.notes("p") == {"1": store.note("p", "1")}
    assert store.notes("q") == {"1": VersionNote(version="1")}


def test_rotation_state_is_compare_and_swap(database: Any) -> None:
    """The first write and every later one name the revision they read; stale writers lose."""
    store = lifecycle_in(database)
    idle = store.state("p")
    assert idle == RotationState(product="p")
    first = store.save_state(dataclasses.replace(idle, stage="preflight", started_at=1.0))
    assert first.revision == 1
    with pytest.raises(ConcurrentUpdateError):
        store.save_state(dataclasses.replace(idle, stage="create"))
    second = store.save_state(dataclasses.replace(first, stage="create", to_version="2"))
    with pytest.raises(ConcurrentUpdateError):
        store.save_state(dataclasses.replace(first, stage="rewrap"))
    assert store.state("p") == second
    assert store.state("q") == RotationState(product="q")


def test_racing_invocations_advance_the_rotation_once(database: Any) -> None:
    """Six invocations save from the same read at once: exactly one succeeds."""
    stores = [lifecycle_in(database) for _ in range(6)]
    read = stores[0].save_state(RotationState(product="p", stage="verify"))
    barrier = threading.Barrier(len(stores))
    won: list[str] = []

    def advance(i: int) -> None:
        barrier.wait()
        try:
            stores[i].save_state(dataclasses.replace(read, stage="soak", holder=f"w{i}"))
            won.append(f"w{i}")
        except ConcurrentUpdateError:
            pass

    threads = [threading.Thread(target=advance, args=(i,)) for i in range(len(stores))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(won) == 1
    assert stores[0].state("p").holder == won[0]
