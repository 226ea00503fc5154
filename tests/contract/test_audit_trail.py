"""The audit trail contract: every store keeps the same chain and detects the same tampering.

Each store's harness tampers with its own raw client (sqlite3, psycopg, the Cosmos DB SDK),
as someone with write access to the database would, behind the trail's back.
"""

from __future__ import annotations

import datetime as dt
import json
import threading
import urllib.parse
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Protocol

import pytest

from field_encrypt import ConfigurationError, audit
from field_encrypt.backends.registry import open_audit_trail, open_database
from field_encrypt.backends.sqlite.audit import SqliteAuditTrail
from tests.backends import BACKEND_KINDS, backend_for

PRODUCT = "notelett"
Clock = Callable[[], dt.datetime]


class RawTrail(Protocol):
    """Direct access to a product's stored events, bypassing the trail."""

    def read(self, seq: int) -> tuple[str, str]:
        """The stored event text and hash at ``seq``."""
        ...

    def write(self, seq: int, event: str, hash: str) -> None:
        """Overwrite the event text and hash stored at ``seq``."""
        ...

    def delete(self, seq: int) -> None:
        """Delete the event at ``seq``."""
        ...

    def close(self) -> None: ...


class SqliteRaw:
    def __init__(self, path: str) -> None:
        import sqlite3

        self.db = sqlite3.connect(path, isolation_level=None)

    def read(self, seq: int) -> tuple[str, str]:
        row = self.db.execute("SELECT event, hash FROM actiontrail WHERE seq = ?", (seq,))
        event, hash = row.fetchone()
        return event, hash

    def write(self, seq: int, event: str, hash: str) -> None:
        self.db.execute(
            "UPDATE actiontrail SET event = ?, hash = ? WHERE seq = ?", (event, hash, seq)
        )

    def delete(self, seq: int) -> None:
        self.db.execute("DELETE FROM actiontrail WHERE seq = ?", (seq,))

    def close(self) -> None:
        self.db.close()


class PostgresRaw:
    def __init__(self, url: str) -> None:
        import psycopg

        self.db = psycopg.connect(url, autocommit=True)

    def read(self, seq: int) -> tuple[str, str]:
        row = self.db.execute(
            "SELECT event, hash FROM actiontrail WHERE product = %s AND seq = %s", (PRODUCT, seq)
        ).fetchone()
        assert row is not None
        return row[0], row[1]

    def write(self, seq: int, event: str, hash: str) -> None:
        self.db.execute(
            "UPDATE actiontrail SET event = %s, hash = %s WHERE product = %s AND seq = %s",
            (event, hash, PRODUCT, seq),
        )

    def delete(self, seq: int) -> None:
        self.db.execute("DELETE FROM actiontrail WHERE product = %s AND seq = %s", (PRODUCT, seq))

    def close(self) -> None:
        self.db.close()


class CosmosRaw:
    def __init__(self, client: Any, url: str) -> None:
        name = urllib.parse.parse_qs(urllib.parse.urlsplit(url).query)["database"][0]
        self.container = client.get_database_client(name).get_container_client("actiontrail")

    def _id(self, seq: int) -> str:
        from field_encrypt.backends.cosmos.audit import event_id

        return event_id(seq)

    def read(self, seq: int) -> tuple[str, str]:
        item = self.container.read_item(self._id(seq), partition_key=PRODUCT)
        return item["event"], item["hash"]

    def write(self, seq: int, event: str, hash: str) -> None:
        item = self.container.read_item(self._id(seq), partition_key=PRODUCT)
        self.container.upsert_item({**item, "event": event, "hash": hash})

    def delete(self, seq: int) -> None:
        self.container.delete_item(self._id(seq), partition_key=PRODUCT)

    def close(self) -> None:
        pass  # the session's client stays open


class TrailHarness:
    """Opens trails on one fresh database of one kind, and its raw client."""

    def __init__(self, kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> None:
        self.kind = kind
        self.backend = backend_for(kind, request, tmp_path)
        self._databases: list[Any] = []
        self._request = request
        self._raw: RawTrail | None = None

    def open(self, product: str = PRODUCT, clock: Clock | None = None) -> audit.AuditTrail:
        """A trail on its own database connection (pool, client), as another process has."""
        database = open_database(self.backend.settings())
        self._databases.append(database)
        if clock is None:
            return open_audit_trail(database, product=product)
        trail_class: Any = SqliteAuditTrail
        if self.kind == "postgres":
            from field_encrypt.backends.postgres.audit import PostgresAuditTrail as trail_class
        elif self.kind == "cosmos":
            from field_encrypt.backends.cosmos.audit import CosmosAuditTrail as trail_class
        trail: audit.AuditTrail = trail_class(database, product=product, clock=clock)
        return trail

    @property
    def raw(self) -> RawTrail:
        if self._raw is None:
            if self.kind == "sqlite":
                self._raw = SqliteRaw(self.backend.url)
            elif self.kind == "postgres":
                self._raw = PostgresRaw(self.backend.url)
            else:
                client = self._request.getfixturevalue("cosmos_client")
                self._raw = CosmosRaw(client, self.backend.url)
        return self._raw

    def close(self) -> None:
        if self._raw is not None:
            self._raw.close()
        for database in self._databases:
            database.close()


@pytest.fixture(params=BACKEND_KINDS)
def harness(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[TrailHarness]:
    found = TrailHarness(request.param, request, tmp_path)
    yield found
    found.close()


def _minutes() -> Clock:
    times = iter(
        dt.datetime(2026, 1, 1, tzinfo=dt.UTC) + dt.timedelta(minutes=i) for i in range(1000)
    )
    return lambda: next(times)


@pytest.fixture
def trail(harness: TrailHarness) -> audit.AuditTrail:
    return harness.open(clock=_minutes())


def _fill(trail: audit.AuditTrail, n: int = 5) -> None:
    for i in range(n):
        trail.emit(audit.MEK_VERSION_CREATED, subject=f"mek/v{i}", data={"version": str(i)})


def test_events_are_cloudevents(trail: audit.AuditTrail) -> None:
    """A stored event has every CloudEvents attribute and chains to the one before."""
    first = trail.emit(audit.RUN_STARTED, subject="run/1", data={"mode": "rewrap-deks"})
    second = trail.emit(audit.RUN_COMPLETED, subject="run/1", data={"seconds": 2.0, "n": 3})
    ce = second.cloudevent()
    assert ce["specversion"] == "1.0" and ce["datacontenttype"] == "application/json"
    assert ce["source"] == "field-encrypt/notelett"
    assert (first.seq, second.seq) == (1, 2)
    assert first.prevhash == audit.GENESIS and second.prevhash == first.hash
    assert audit.event_hash(ce) == ce["hash"]
    assert trail.events() == [first, second]


def test_intact_chain_verifies(trail: audit.AuditTrail) -> None:
    """An untouched trail verifies, counting every event and naming the head's hash."""
    assert trail.verify() == audit.ChainReport(events=0, intact=True)
    _fill(trail)
    head = trail.events()[-1].hash
    assert trail.verify() == audit.ChainReport(events=5, intact=True, head=head)


def test_edit_is_detected(trail: audit.AuditTrail, harness: TrailHarness) -> None:
    """Changing one byte of an event's content breaks the chain at that event."""
    _fill(trail)
    text, hash = harness.raw.read(3)
    forged = text.replace('"version": "2"', '"version": "3"')
    assert forged != text
    harness.raw.write(3, forged, hash)
    report = trail.verify()
    assert (report.intact, report.first_broken_seq) == (False, 3)
    assert "edited" in (report.reason or "")


def test_deletion_is_detected(trail: audit.AuditTrail, harness: TrailHarness) -> None:
    """Deleting an event breaks the chain at the event after it."""
    _fill(trail)
    harness.raw.delete(2)
    report = trail.verify()
    assert (report.intact, report.first_broken_seq) == (False, 3)


def test_reordering_is_detected(trail: audit.AuditTrail, harness: TrailHarness) -> None:
    """Swapping two stored events breaks the chain."""
    _fill(trail)
    (e2, h2), (e3, h3) = harness.raw.read(2), harness.raw.read(3)
    harness.raw.write(2, e3, h3)
    harness.raw.write(3, e2, h2)
    report = trail.verify()
    assert (report.intact, report.first_broken_seq) == (False, 2)


def test_rehashed_edit_is_still_detected(trail: audit.AuditTrail, harness: TrailHarness) -> None:
    """An edit whose forger recomputes that event's hash breaks the next link instead."""
    _fill(trail)
    text, _ = harness.raw.read(2)
    event = json.loads(text)
    event["data"] = {"version": "forged"}
    event["hash"] = audit.event_hash(event)
    harness.raw.write(2, json.dumps(event), event["hash"])
    report = trail.verify()
    assert (report.intact, report.first_broken_seq) == (False, 3)


def test_an_append_after_a_deleted_tail_is_detected(
    trail: audit.AuditTrail, harness: TrailHarness
) -> None:
    """Events appended after the newest were deleted do not hide the deletion for long.

    SQLite and PostgreSQL link the next event to the last one left (the cut is what the
    recorded chain head is for); Cosmos DB's head item still names the deleted event.
    """
    _fill(trail, 3)
    head = trail.verify().head
    harness.raw.delete(3)
    trail.emit(audit.DEK_SHREDDED, subject="dek/a")
    report = trail.verify()
    if harness.kind == "cosmos":
        assert (report.intact, report.first_broken_seq) == (False, 4)
    else:
        assert report.intact and head not in {e.hash for e in trail.events()}


def test_filters(trail: audit.AuditTrail) -> None:
    """events() filters by type, subject, time and limit, in order."""
    _fill(trail, 3)
    trail.emit(audit.DEK_SHREDDED, subject="dek/abc", data={})
    assert [e.type for e in trail.events(types=[audit.DEK_SHREDDED])] == [audit.DEK_SHREDDED]
    both = trail.events(types=[audit.DEK_SHREDDED, audit.MEK_VERSION_CREATED])
    assert [e.seq for e in both] == [1, 2, 3, 4]
    assert [e.subject for e in trail.events(subject="mek/v1")] == ["mek/v1"]
    start = dt.datetime(2026, 1, 1, 0, 2, tzinfo=dt.UTC)
    assert [e.seq for e in trail.events(since=start)] == [3, 4]
    assert [e.seq for e in trail.events(until=start)] == [1, 2]
    assert [e.seq for e in trail.events(limit=2)] == [1, 2]
    assert trail.events(subject="nothing") == []


@pytest.mark.parametrize("data", [{"dek": b"\x00" * 32}, {"nested": [{"k": bytearray(4)}]}])
def test_key_material_cannot_be_logged(trail: audit.AuditTrail, data: dict[str, object]) -> None:
    """Bytes are refused in event data, and nothing is stored."""
    with pytest.raises(ConfigurationError):
        trail.emit(audit.RUN_STARTED, subject="run/1", data=data)
    with pytest.raises(ConfigurationError):
        trail.emit("com.example.thing", subject="x")
    assert trail.events() == []


def test_products_have_separate_chains(harness: TrailHarness) -> None:
    """Two products in one database keep two independent chains."""
    a, b = harness.open(product="a"), harness.open(product="b")
    a.emit(audit.RUN_STARTED, subject="r")
    first_b = b.emit(audit.RUN_STARTED, subject="r")
    assert first_b.prevhash == audit.GENESIS
    assert a.verify().intact and b.verify().intact
    assert [e.subject for e in a.events()] == ["r"]


def test_concurrent_writers_never_fork_the_chain(harness: TrailHarness) -> None:
    """Two writers, each on its own connection, emit 50 events each: one intact chain of 100."""
    writers = [harness.open(), harness.open()]
    start = threading.Barrier(len(writers))

    def write(trail: audit.AuditTrail, name: str) -> None:
        start.wait()
        for i in range(50):
            trail.emit(audit.RUN_PROGRESS, subject=f"run/{name}", data={"i": i})

    with ThreadPoolExecutor(len(writers)) as pool:
        done = [pool.submit(write, t, str(n)) for n, t in enumerate(writers)]
        for future in done:
            future.result()
    report = writers[0].verify()
    assert report == audit.ChainReport(events=100, intact=True, head=report.head)
    events = writers[1].events()
    assert [e.seq for e in events] == list(range(events[0].seq, events[0].seq + 100))
    for name in ("0", "1"):
        assert [e.data["i"] for e in events if e.subject == f"run/{name}"] == list(range(50))


@pytest.mark.parametrize("harness", ["cosmos"], indirect=True)
def test_a_head_left_behind_is_caught_up(harness: TrailHarness) -> None:
    """Cosmos DB: a writer that died after its event but before the head moved loses nothing.

    The next writer reads forward past the stale head and links to the newest event.
    """
    trail = harness.open()
    _fill(trail, 3)
    raw = harness.raw
    assert isinstance(raw, CosmosRaw)
    head = raw.container.read_item("head", partition_key=PRODUCT)
    first_hash = raw.read(1)[1]
    raw.container.upsert_item({**head, "seq": 1, "hash": first_hash})
    fourth = trail.emit(audit.DEK_SHREDDED, subject="dek/a")
    assert (fourth.seq, fourth.prevhash) == (4, raw.read(3)[1])
    assert trail.verify() == audit.ChainReport(events=4, intact=True, head=fourth.hash)
    assert raw.container.read_item("head", partition_key=PRODUCT)["seq"] == 4


def test_an_act_that_fails_leaves_no_event(trail: audit.AuditTrail) -> None:
    """The outbox: an act that fails inside its unit stores no event. SQLite and PostgreSQL
    roll the unit back; Cosmos DB keeps the announced intent for the reconciler (the act
    may have happened before the error), and a refusal settles it."""
    outbox: Any = trail
    with pytest.raises(RuntimeError), audit.recorded(trail, audit.DEK_SHREDDED, subject="dek/a"):
        raise RuntimeError("the act failed")
    assert trail.events() == []
    assert len(outbox.pending()) == (0 if outbox.atomic else 1)
    for intent in outbox.pending():
        outbox.settle(intent.id)
    with (
        pytest.raises(ConfigurationError),
        audit.recorded(trail, audit.DEK_SHREDDED, subject="dek/b", external=True),
    ):
        raise ConfigurationError("refused before acting")
    assert trail.events() == [] and outbox.pending() == []
    with audit.recorded(trail, audit.DEK_SHREDDED, subject="dek/c", external=True) as event:
        event.data["existed"] = True
    assert [(e.subject, dict(e.data)) for e in trail.events()] == [("dek/c", {"existed": True})]
    assert outbox.pending() == []


def test_concurrent_units_never_fork_the_chain(harness: TrailHarness) -> None:
    """Two writers, each on its own connection, record 25 acts each in units (an act's
    write and its event together): one intact chain of 50, nothing left pending."""
    writers = [harness.open(), harness.open()]
    start = threading.Barrier(len(writers))

    def write(trail: audit.AuditTrail, name: str) -> None:
        start.wait()
        for i in range(25):
            with audit.recorded(trail, audit.RUN_PROGRESS, subject=f"run/{name}") as event:
                event.data["i"] = i

    with ThreadPoolExecutor(len(writers)) as pool:
        done = [pool.submit(write, t, str(n)) for n, t in enumerate(writers)]
        for future in done:
            future.result()
    report = writers[0].verify()
    assert report == audit.ChainReport(events=50, intact=True, head=report.head)
    events = writers[1].events()
    for name in ("0", "1"):
        assert [e.data["i"] for e in events if e.subject == f"run/{name}"] == list(range(25))
    outbox: Any = writers[0]
    assert outbox.pending() == []
