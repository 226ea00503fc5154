"""The audit trail on SQLite: data checks, sinks, denial flood control.

The chain, its filters and tamper detection are the contract suite
(``tests/contract/test_audit_trail.py``), run on every store."""

from __future__ import annotations

import datetime as dt
import io
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from field_encrypt import ConfigurationError, audit
from field_encrypt.backends.registry import open_audit_trail
from field_encrypt.backends.sqlite.audit import SqliteAuditTrail
from field_encrypt.backends.sqlite.db import SqliteDatabase


@pytest.fixture
def database(tmp_path: Path) -> Iterator[SqliteDatabase]:
    db = SqliteDatabase(tmp_path / "audit.db")
    yield db
    db.close()


@pytest.fixture
def trail(database: SqliteDatabase) -> SqliteAuditTrail:
    times = iter(
        dt.datetime(2026, 1, 1, tzinfo=dt.UTC) + dt.timedelta(minutes=i) for i in range(1000)
    )
    return SqliteAuditTrail(database, product="notelett", clock=lambda: next(times))


def _fill(trail: SqliteAuditTrail, n: int = 5) -> None:
    for i in range(n):
        trail.emit(audit.MEK_VERSION_CREATED, subject=f"mek/v{i}", data={"version": str(i)})


@pytest.mark.parametrize(
    "data", [{"dek": b"\x00" * 32}, {"nested": [{"k": bytearray(4)}]}, {"x": object()}]
)
def test_key_material_cannot_be_logged(trail: SqliteAuditTrail, data: dict[str, object]) -> None:
    """Bytes (and other non-JSON values) are refused in event data, and nothing is stored."""
    with pytest.raises(ConfigurationError):
        trail.emit(audit.RUN_STARTED, subject="run/1", data=data)
    assert trail.events() == []


def test_sinks_receive_each_event(database: SqliteDatabase, tmp_path: Path) -> None:
    """Events go to a JSON-lines file and a stream after they are stored."""
    stream = io.StringIO()
    path = tmp_path / "events.jsonl"
    trail = SqliteAuditTrail(
        database, product="p", sinks=[audit.JsonLinesSink(path), audit.JsonLinesSink(stream)]
    )
    stored = trail.emit(audit.MEK_VERSION_DISABLED, subject="mek/v1", data={"version": "1"})
    lines = path.read_text().splitlines()
    assert len(lines) == 1 and json.loads(lines[0])["hash"] == stored.hash
    assert json.loads(stream.getvalue())["id"] == stored.id


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_denials_are_deduplicated_per_dek_and_version(trail: SqliteAuditTrail) -> None:
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


def test_denials_of_many_deks_are_capped_per_window(trail: SqliteAuditTrail) -> None:
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
    trail: SqliteAuditTrail, database: SqliteDatabase
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
    """Only field-encrypt's databases (SQLite, PostgreSQL, Cosmos DB) are accepted."""
    with pytest.raises(ConfigurationError):
        open_audit_trail(object(), product="p")


def test_full_type_adds_the_namespace() -> None:
    """Short names get the io.field-encrypt. prefix; full names stay."""
    assert audit.full_type("dek.shredded") == audit.DEK_SHREDDED
    assert audit.full_type(audit.DEK_SHREDDED) == audit.DEK_SHREDDED
