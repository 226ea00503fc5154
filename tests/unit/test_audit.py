"""The audit trail: CloudEvents shape, append-only hash chain, tamper detection, sinks."""

from __future__ import annotations

import datetime as dt
import io
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from field_encrypt import ConfigurationError, audit
from field_encrypt.stores.sqlite_db import SqliteDatabase


@pytest.fixture
def database(tmp_path: Path) -> Iterator[SqliteDatabase]:
    db = SqliteDatabase(tmp_path / "audit.db")
    yield db
    db.close()


@pytest.fixture
def trail(database: SqliteDatabase) -> audit.SqliteAuditTrail:
    times = iter(
        dt.datetime(2026, 1, 1, tzinfo=dt.UTC) + dt.timedelta(minutes=i) for i in range(1000)
    )
    return audit.SqliteAuditTrail(database, product="notelett", clock=lambda: next(times))


def _fill(trail: audit.SqliteAuditTrail, n: int = 5) -> None:
    for i in range(n):
        trail.emit(audit.MEK_VERSION_CREATED, subject=f"mek/v{i}", data={"version": str(i)})


def test_events_are_cloudevents(trail: audit.SqliteAuditTrail) -> None:
    """A stored event has every CloudEvents attribute and chains to the one before."""
    first = trail.emit(audit.RUN_STARTED, subject="run/1", data={"mode": "rewrap-deks"})
    second = trail.emit(audit.RUN_COMPLETED, subject="run/1", data={"rewrapped": 3})
    ce = second.cloudevent()
    assert ce["specversion"] == "1.0" and ce["datacontenttype"] == "application/json"
    assert {"id", "type", "source", "subject", "time", "data"} <= ce.keys()
    assert ce["source"] == "field-encrypt/notelett"
    assert first.prevhash == audit.GENESIS
    assert second.prevhash == first.hash
    assert audit.event_hash(ce) == ce["hash"]


def test_intact_chain_verifies(trail: audit.SqliteAuditTrail) -> None:
    """An untouched trail verifies, counting every event and naming the head's hash."""
    assert trail.verify() == audit.ChainReport(events=0, intact=True)
    _fill(trail)
    head = trail.events()[-1].hash
    assert trail.verify() == audit.ChainReport(events=5, intact=True, head=head)


def _rewrite(database: SqliteDatabase, seq: int, change: dict[str, object]) -> None:
    (text,) = database.query("SELECT event FROM actiontrail WHERE seq = ?", (seq,))[0]
    event = json.loads(text)
    event.update(change)
    database.execute("UPDATE actiontrail SET event = ? WHERE seq = ?", (json.dumps(event), seq))


def test_edit_is_detected(trail: audit.SqliteAuditTrail, database: SqliteDatabase) -> None:
    """Changing any event's content breaks the chain at that event."""
    _fill(trail)
    _rewrite(database, 3, {"data": {"version": "forged"}})
    report = trail.verify()
    assert not report.intact and report.first_broken_seq == 3
    assert "edited" in (report.reason or "")


def test_deletion_is_detected(trail: audit.SqliteAuditTrail, database: SqliteDatabase) -> None:
    """Deleting an event breaks the chain at the event after it."""
    _fill(trail)
    database.execute("DELETE FROM actiontrail WHERE seq = 2")
    report = trail.verify()
    assert not report.intact and report.first_broken_seq == 3


def test_reordering_is_detected(trail: audit.SqliteAuditTrail, database: SqliteDatabase) -> None:
    """Swapping two stored events breaks the chain."""
    _fill(trail)
    rows = database.query("SELECT seq, event, hash FROM actiontrail WHERE seq IN (2, 3)")
    (s2, e2, h2), (s3, e3, h3) = rows
    database.execute("UPDATE actiontrail SET event = ?, hash = ? WHERE seq = ?", (e3, h3, s2))
    database.execute("UPDATE actiontrail SET event = ?, hash = ? WHERE seq = ?", (e2, h2, s3))
    report = trail.verify()
    assert not report.intact and report.first_broken_seq == 2


def test_rehashed_edit_is_still_detected(
    trail: audit.SqliteAuditTrail, database: SqliteDatabase
) -> None:
    """An edit whose forger recomputes that event's hash breaks the next link instead."""
    _fill(trail)
    (text,) = database.query("SELECT event FROM actiontrail WHERE seq = 2")[0]
    event = json.loads(text)
    event["data"] = {"version": "forged"}
    event["hash"] = audit.event_hash(event)
    database.execute(
        "UPDATE actiontrail SET event = ?, hash = ? WHERE seq = 2",
        (json.dumps(event), event["hash"]),
    )
    report = trail.verify()
    assert not report.intact and report.first_broken_seq == 3


def test_filters(trail: audit.SqliteAuditTrail) -> None:
    """events() filters by type, subject, time and limit."""
    _fill(trail, 3)
    trail.emit(audit.DEK_SHREDDED, subject="dek/abc", data={})
    assert [e.type for e in trail.events(types=[audit.DEK_SHREDDED])] == [audit.DEK_SHREDDED]
    assert len(trail.events(subject="mek/v1")) == 1
    assert len(trail.events(since=dt.datetime(2026, 1, 1, 0, 2, tzinfo=dt.UTC))) == 2
    assert len(trail.events(limit=2)) == 2


@pytest.mark.parametrize(
    "data", [{"dek": b"\x00" * 32}, {"nested": [{"k": bytearray(4)}]}, {"x": object()}]
)
def test_key_material_cannot_be_logged(
    trail: audit.SqliteAuditTrail, data: dict[str, object]
) -> None:
    """Bytes (and other non-JSON values) are refused in event data, and nothing is stored."""
    with pytest.raises(ConfigurationError):
        trail.emit(audit.RUN_STARTED, subject="run/1", data=data)
    assert trail.events() == []


def test_sinks_receive_each_event(database: SqliteDatabase, tmp_path: Path) -> None:
    """Events go to a JSON-lines file and a stream after they are stored."""
    stream = io.StringIO()
    path = tmp_path / "events.jsonl"
    trail = audit.SqliteAuditTrail(
        database, product="p", sinks=[audit.JsonLinesSink(path), audit.JsonLinesSink(stream)]
    )
    stored = trail.emit(audit.MEK_VERSION_DISABLED, subject="mek/v1", data={"version": "1"})
    lines = path.read_text().splitlines()
    assert len(lines) == 1 and json.loads(lines[0])["hash"] == stored.hash
    assert json.loads(stream.getvalue())["id"] == stored.id


def test_unknown_namespace_is_refused(trail: audit.SqliteAuditTrail) -> None:
    """Event types live under io.field-encrypt."""
    with pytest.raises(ConfigurationError):
        trail.emit("com.example.thing", subject="x")


def test_products_have_separate_chains(database: SqliteDatabase) -> None:
    """Two products in one database keep two independent chains."""
    a = audit.SqliteAuditTrail(database, product="a")
    b = audit.SqliteAuditTrail(database, product="b")
    a.emit(audit.RUN_STARTED, subject="r")
    first_b = b.emit(audit.RUN_STARTED, subject="r")
    assert first_b.prevhash == audit.GENESIS
    assert a.verify().intact and b.verify().intact


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_denials_are_deduplicated_per_dek_and_version(trail: audit.SqliteAuditTrail) -> None:
    """A hot loop over one denied DEK records one event per window, then counts the rest."""
    clock = _Clock()
    recorder = audit.DenialRecorder(trail, window=60.0, clock=clock)
    for _ in range(1000):
        recorder.record(dek_id="a" * 32, mek_version="1", mek_name="m")
    recorder.record(dek_id="a" * 32, mek_version="2", mek_name="m")
    clock.now = 61.0
    recorder.record(dek_id="a" * 32, mek_version="1", mek_name="m")
    events = trail.events(types=[audit.DECRYPT_DENIED])
    assert [(e.data["mekVersion"], e.data["suppressed"]) for e in events] == [
        ("1", 0),
        ("2", 999),
        ("1", 0),
    ]
    assert events[0].subject == f"dek/{'a' * 32}"
    assert events[0].data["reason"] == "KeyVersionDisabledError"


def test_denials_of_many_deks_are_capped_per_window(trail: audit.SqliteAuditTrail) -> None:
    """Many distinct DEKs denied at once: at most ``burst`` events per window."""
    clock = _Clock()
    recorder = audit.DenialRecorder(trail, window=60.0, burst=5, clock=clock)
    for i in range(100):
        recorder.record(dek_id=f"{i:032x}", mek_version="1", mek_name="m")
    assert len(trail.events()) == 5
    clock.now = 60.0
    recorder.record(dek_id="f" * 32, mek_version="1", mek_name="m")
    last = trail.events()[-1]
    assert len(trail.events()) == 6 and last.data["suppressed"] == 95


def test_a_denial_the_trail_cannot_store_is_reported_later(
    trail: audit.SqliteAuditTrail, database: SqliteDatabase
) -> None:
    """A failed audit write never raises from the denial path; the next event counts it."""
    clock = _Clock()
    recorder = audit.DenialRecorder(trail, window=60.0, clock=clock)
    database.execute("ALTER TABLE actiontrail RENAME TO actiontrail_away")
    recorder.record(dek_id="a" * 32, mek_version="1", mek_name="m")
    database.execute("ALTER TABLE actiontrail_away RENAME TO actiontrail")
    recorder.record(dek_id="b" * 32, mek_version="1", mek_name="m")
    (event,) = trail.events()
    assert event.data["auditWritesFailed"] == 1


def test_open_audit_trail_refuses_unknown_databases() -> None:
    """Only databases with an audit trail implementation are accepted."""
    with pytest.raises(ConfigurationError):
        audit.open_audit_trail(object(), product="p")


def test_full_type_adds_the_namespace() -> None:
    """Short names get the io.field-encrypt. prefix; full names stay."""
    assert audit.full_type("dek.shredded") == audit.DEK_SHREDDED
    assert audit.full_type(audit.DEK_SHREDDED) == audit.DEK_SHREDDED
