"""A read-only, locked, full or vanished SQLite database, under a real ``notelett serve``.

Writes answer 503 with ``Retry-After``, readiness says the database takes no writes, reads
keep being served, and the same process recovers by itself once the fault clears.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import sqlite3
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from field_encrypt import StoreUnavailableError
from notelett import NoteLettSettings
from notelett.backend import Backend
from notelett.errors import status_of
from notelett.repositories.base import NoteRecord

from .conftest import auth
from .server import NoteLettServer, start_server
from .test_uvicorn import server_env

WRITERS = 60
LOCK_HELD_SECONDS = 6.0
NOTE = {"workspaceId": "ws-a", "title": "t", "body": "b"}


def _set_read_only(path: Path, read_only: bool) -> None:
    """Make the file read-only for the server: ``chattr +i`` as root (root ignores modes)."""
    if os.geteuid() == 0:
        if shutil.which("chattr") is None:
            pytest.skip("as root, needs chattr to make a file read-only")
        subprocess.run(["chattr", "+i" if read_only else "-i", str(path)], check=True)
    else:
        path.chmod(0o400 if read_only else 0o600)


@pytest.fixture
def database_file(settings: NoteLettSettings, backend: Backend) -> Iterator[Path]:
    """The test's SQLite file, seeded with one note and closed (no -wal left behind)."""
    path = Path(str(settings.database))
    yield path
    if path.exists():
        _set_read_only(path, False)  # never leave an immutable file in tmp_path


def _serve(settings: NoteLettSettings, backend: Backend, tmp_path: Path) -> NoteLettServer:
    backend.close()  # the server is the only user of the file
    return start_server(server_env(settings, backend), workdir=tmp_path, name="faults")


def _readiness(http: httpx.Client) -> tuple[int, str, dict[str, str]]:
    response = http.get("/api/diagnostics/readiness")
    body = response.json()
    return response.status_code, body["status"], {c["name"]: c["status"] for c in body["checks"]}


def _assert_503(response: httpx.Response) -> None:
    assert response.status_code == 503, response.text
    assert response.headers["retry-after"] == "5"
    assert response.json()["error"]["code"] == "database_unavailable"


def test_a_read_only_database_refuses_writes_503_and_recovers_without_a_restart(
    settings: NoteLettSettings,
    backend: Backend,
    database_file: Path,
    tmp_path: Path,
    create_note: Callable[..., dict[str, Any]],
) -> None:
    """Started on a read-only file: writes 503, reads 200, readiness degraded; writable
    again, the same process writes at once (no sticky read-only connection)."""
    existing = create_note()
    _set_read_only(database_file, True)
    server = _serve(settings, backend, tmp_path)
    try:
        with httpx.Client(base_url=server.base_url, headers=auth(), timeout=30) as http:
            for _ in range(3):  # several worker threads, each with its own connection
                _assert_503(http.post("/api/notes", json=NOTE))
            listing = http.get("/api/notes", params={"workspaceId": "ws-a"})
            assert listing.status_code == 200
            assert [n["id"] for n in listing.json()["items"]] == [existing["id"]]
            status, overall, checks = _readiness(http)
            assert (status, overall) == (200, "degraded")
            assert checks["database"] == "ok" and checks["database_writable"] == "fail"

            _set_read_only(database_file, False)
            for _ in range(5):  # every thread: the first write after the fault succeeds
                created = http.post("/api/notes", json=NOTE)
                assert created.status_code == 201, created.text
            assert _readiness(http)[:2] == (200, "ok")
    finally:
        server.stop()
    assert "Traceback" not in server.log()


def test_a_vanished_database_is_unavailable_and_never_recreated_empty(
    settings: NoteLettSettings, backend: Backend, database_file: Path
) -> None:
    """A connection opened after the file went away fails StoreUnavailableError (503), and no
    new empty database takes its place; the file back, a new connection works again."""
    database = backend.runtime.database
    away = database_file.with_name("moved-away.db")
    database_file.rename(away)
    outcome: list[BaseException | int] = []

    def new_thread_write() -> None:  # a thread of its own: a connection of its own
        try:
            backend.notes.insert(_record(f"n-{len(outcome)}"))
            outcome.append(201)
        except StoreUnavailableError as exc:
            outcome.append(exc)

    thread = threading.Thread(target=new_thread_write)
    thread.start()
    thread.join()
    assert isinstance(outcome[0], StoreUnavailableError), outcome
    assert status_of(outcome[0])[0] == 503
    assert not database_file.exists()
    away.rename(database_file)
    thread = threading.Thread(target=new_thread_write)
    thread.start()
    thread.join()
    assert outcome[1] == 201
    database.close()


class _Reader:
    """Reads a note over and over on its own connection, timing each read."""

    def __init__(self, base_url: str, path: str) -> None:
        self.base_url = base_url
        self.path = path
        self.latencies: list[float] = []
        self.failures = 0
        self.stop = threading.Event()

    def run(self) -> None:
        with httpx.Client(base_url=self.base_url, headers=auth(), timeout=30) as http:
            while not self.stop.is_set():
                started = time.perf_counter()
                if http.get(self.path).status_code != 200:
                    self.failures += 1
                self.latencies.append(time.perf_counter() - started)
                self.stop.wait(0.02)


def test_writers_stuck_on_a_locked_database_never_stall_reads(
    settings: NoteLettSettings, backend: Backend, database_file: Path, tmp_path: Path
) -> None:
    """Another process holds the write lock; 60 writers pile up: reads stay fast, writes
    answer 503 with Retry-After (most at once, from the write gate), readiness says the
    database takes no writes; the lock released, writes succeed again."""
    server = _serve(settings, backend, tmp_path)
    try:
        with httpx.Client(base_url=server.base_url, headers=auth(), timeout=30) as http:
            note = http.post("/api/notes", json=NOTE).json()
            holder = sqlite3.connect(database_file, isolation_level=None, timeout=0)
            holder.execute("BEGIN IMMEDIATE")  # the write lock, as another process would
            reader = _Reader(server.base_url, f"/api/notes/{note['id']}")
            read_thread = threading.Thread(target=reader.run)
            read_thread.start()
            statuses: list[int] = []

            def write() -> None:
                with httpx.Client(base_url=server.base_url, headers=auth(), timeout=60) as own:
                    response = own.post("/api/notes", json=NOTE)
                    statuses.append(response.status_code)
                    if response.status_code == 503:
                        assert response.headers["retry-after"] == "5"

            writers = [threading.Thread(target=write) for _ in range(WRITERS)]
            started = time.perf_counter()
            for thread in writers:
                thread.start()
            time.sleep(LOCK_HELD_SECONDS)  # reads run while every writer is stuck or refused
            readiness = _readiness(http)
            reader.stop.set()
            read_thread.join()
            holder.execute("ROLLBACK")
            holder.close()
            for thread in writers:
                thread.join()
            elapsed = time.perf_counter() - started
            after = http.post("/api/notes", json=NOTE)
    finally:
        server.stop()
    latencies = sorted(reader.latencies)
    p99 = latencies[int(len(latencies) * 0.99) - 1] if latencies else float("inf")
    print(
        f"locked: {len(latencies)} reads, p99 {p99 * 1000:.1f} ms, max "
        f"{latencies[-1] * 1000:.1f} ms; writes {sorted(set(statuses))} "
        f"({statuses.count(503)} x 503) in {elapsed:.1f} s"
    )
    assert reader.failures == 0 and len(latencies) >= 50
    # before the gate, reads queued behind the writers for as long as the lock was held
    assert latencies[-1] < 2.0
    assert set(statuses) <= {201, 503} and statuses.count(503) >= WRITERS // 2, statuses
    assert readiness[:2] == (200, "degraded") and readiness[2]["database_writable"] == "fail"
    assert after.status_code == 201, after.text
    assert "Traceback" not in server.log()


def test_a_full_database_is_unavailable_not_an_internal_error(backend: Backend) -> None:
    """SQLITE_FULL (here: a page limit on this thread's connection) is StoreUnavailableError,
    which the service answers 503; the next write after the limit is lifted succeeds."""
    database = backend.runtime.database
    conn = database.connection()
    (pages,) = conn.execute("PRAGMA page_count").fetchone()
    conn.execute(f"PRAGMA max_page_count = {pages}")
    big = _record("n-big", body=os.urandom(64 * 1024))
    with pytest.raises(StoreUnavailableError) as raised:
        backend.notes.insert(big)
    assert "full" in str(raised.value)
    assert status_of(raised.value)[0] == 503
    conn.execute("PRAGMA max_page_count = 1073741823")
    backend.notes.insert(big)


def _record(note_id: str, *, body: bytes | None = None) -> NoteRecord:
    now = dt.datetime.now(dt.UTC)
    return NoteRecord(
        id=note_id,
        workspace_id="ws-a",
        title=None,
        body=body,
        tags=(),
        dek_id=None,
        revision=1,
        created_at=now,
        updated_at=now,
    )
