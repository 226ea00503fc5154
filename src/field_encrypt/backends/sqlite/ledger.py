"""The run ledger in the product's SQLite database (next to its dek_store).

Every lease decision runs inside ``BEGIN IMMEDIATE``, so two processes on the same file
never both win a shard: the second waits for the first's transaction and then sees its
lease.
"""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
import uuid
from collections.abc import Sequence
from typing import Any

from field_encrypt.backends.sqlite.db import Migration, SqliteDatabase
from field_encrypt.errors import LeaseHeldError, NotFoundError, RotationError
from field_encrypt.rotation.ledger import (
    BackupRecord,
    Counters,
    Failure,
    RunPlan,
    RunRecord,
    ShardState,
)

MIGRATIONS = (
    Migration(
        "0001_rotation_ledger",
        """
        CREATE TABLE rotation_runs (
            run_id TEXT PRIMARY KEY,
            product TEXT NOT NULL,
            mode TEXT NOT NULL,
            from_version TEXT,
            to_version TEXT,
            shards INTEGER NOT NULL,
            status TEXT NOT NULL,
            started_at REAL NOT NULL,
            finished_at REAL,
            estimated_total INTEGER NOT NULL,
            skipped_at_start INTEGER NOT NULL
        );
        CREATE INDEX rotation_runs_product ON rotation_runs (product, status, started_at);
        CREATE TABLE rotation_shards (
            run_id TEXT NOT NULL REFERENCES rotation_runs (run_id),
            shard INTEGER NOT NULL,
            status TEXT NOT NULL,
            cursor TEXT,
            pending TEXT NOT NULL DEFAULT '[]',
            matched INTEGER NOT NULL DEFAULT 0,
            changed INTEGER NOT NULL DEFAULT 0,
            skipped INTEGER NOT NULL DEFAULT 0,
            failed INTEGER NOT NULL DEFAULT 0,
            conflicts INTEGER NOT NULL DEFAULT 0,
            owner TEXT,
            lease_expires_at REAL,
            heartbeat_at REAL,
            PRIMARY KEY (run_id, shard)
        );
        CREATE TABLE rotation_failures (
            run_id TEXT NOT NULL REFERENCES rotation_runs (run_id),
            item TEXT NOT NULL,
            shard INTEGER NOT NULL,
            reason TEXT NOT NULL,
            at REAL NOT NULL,
            PRIMARY KEY (run_id, item)
        );
        CREATE TABLE rotation_backups (
            product TEXT NOT NULL,
            at REAL NOT NULL,
            path TEXT NOT NULL,
            count INTEGER NOT NULL,
            checksum TEXT NOT NULL
        )
        """,
    ),
)

_RUN_COLUMNS = (
    "run_id, product, mode, from_version, to_version, shards, status, started_at, "
    "finished_at, estimated_total, skipped_at_start"
)
_SHARD_COLUMNS = (
    "run_id, shard, status, cursor, pending, matched, changed, skipped, failed, conflicts, "
    "owner, lease_expires_at, heartbeat_at"
)


class SqliteRunLedger:
    """:class:`~field_encrypt.rotation.ledger.RunLedger` on a :class:`SqliteDatabase`."""

    def __init__(self, database: SqliteDatabase) -> None:
        self.database = database
        database.migrate(MIGRATIONS)

    def __repr__(self) -> str:
        return f"SqliteRunLedger({self.database.path!r})"

    # -- runs --------------------------------------------------------------------------

    def open_run(
        self,
        *,
        product: str,
        plan: RunPlan,
        now: float,
        estimated_total: int,
        skipped_at_start: int,
    ) -> tuple[RunRecord, bool]:
        with self.database.transaction() as tx:
            for run in self._open_runs(tx, product):
                if run.plan == plan:
                    return run, True
            for run in self._open_runs(tx, product):
                _refuse_if_busy(run, now)
                tx.execute(
                    "UPDATE rotation_runs SET status = 'abandoned', finished_at = ? "
                    "WHERE run_id = ?",
                    (now, run.run_id),
                )
            run_id = _new_run_id(now)
            tx.execute(
                f"INSERT INTO rotation_runs ({_RUN_COLUMNS}) "
                "VALUES (?, ?, ?, ?, ?, ?, 'running', ?, NULL, ?, ?)",
                (
                    run_id,
                    product,
                    plan.mode,
                    plan.from_version,
                    plan.to_version,
                    plan.shards,
                    now,
                    estimated_total,
                    skipped_at_start,
                ),
            )
            tx.executemany(
                "INSERT INTO rotation_shards (run_id, shard, status) VALUES (?, ?, 'pending')",
                [(run_id, i) for i in range(plan.shards)],
            )
            return self._load(tx, run_id), False

    def get_run(self, run_id: str) -> RunRecord:
        return self._load(self.database.connection(), run_id)

    def latest_runs(self, product: str, *, limit: int = 10) -> list[RunRecord]:
        conn = self.database.connection()
        rows = self.database.query(
            f"SELECT {_RUN_COLUMNS} FROM rotation_runs WHERE product = ? "
            "ORDER BY started_at DESC, rowid DESC LIMIT ?",
            (product, limit),
        )
        return [self._with_shards(conn, row) for row in rows]

    # -- leases ------------------------------------------------------------------------

    def acquire_shard(
        self, run_id: str, index: int, *, owner: str, now: float, ttl: float
    ) -> ShardState:
        with self.database.transaction() as tx:
            run = self._load(tx, run_id)
            if run.status == "abandoned":
                raise _abandoned(run)
            for other in self._open_runs(tx, run.product):
                if other.run_id != run_id:
                    _refuse_if_busy(other, now)
            shard = run.shard(index)
            if shard.leased(now) and shard.owner != owner:
                raise LeaseHeldError(
                    f"run {run_id} shard {index + 1}/{run.plan.shards} is held by "
                    f"{shard.owner} until {_iso(shard.lease_expires_at)}"
                )
            status = "done" if shard.status == "done" else "running"
            tx.execute(
                "UPDATE rotation_shards SET owner = ?, lease_expires_at = ?, heartbeat_at = ?, "
                "status = ? WHERE run_id = ? AND shard = ?",
                (owner, now + ttl, now, status, run_id, index),
            )
            return self._load(tx, run_id).shard(index)

    def renew_lease(self, run_id: str, index: int, *, owner: str, now: float, ttl: float) -> None:
        cur = self.database.execute(
            "UPDATE rotation_shards SET lease_expires_at = ?, heartbeat_at = ? "
            "WHERE run_id = ? AND shard = ? AND owner = ?",
            (now + ttl, now, run_id, index, owner),
        )
        if cur.rowcount != 1:
            raise LeaseHeldError(f"run {run_id} shard {index + 1}: lease lost to another worker")

    def checkpoint(
        self,
        run_id: str,
        index: int,
        *,
        owner: str,
        now: float,
        ttl: float,
        cursor: str | None,
        delta: Counters,
        failures: Sequence[Failure] = (),
        pending: Sequence[str] = (),
    ) -> None:
        with self.database.transaction() as tx:
            cur = tx.execute(
                "UPDATE rotation_shards SET cursor = ?, pending = ?, matched = matched + ?, "
                "changed = changed + ?, skipped = skipped + ?, failed = failed + ?, "
                "conflicts = conflicts + ?, lease_expires_at = ?, heartbeat_at = ? "
                "WHERE run_id = ? AND shard = ? AND owner = ?",
                (
                    cursor,
                    json.dumps(list(pending)),
                    delta.matched,
                    delta.changed,
                    delta.skipped,
                    delta.failed,
                    delta.conflicts,
                    now + ttl,
                    now,
                    run_id,
                    index,
                    owner,
                ),
            )
            if cur.rowcount != 1:
                raise LeaseHeldError(
                    f"run {run_id} shard {index + 1}: lease lost to another worker"
                )
            tx.executemany(
                "INSERT OR REPLACE INTO rotation_failures (run_id, item, shard, reason, at) "
                "VALUES (?, ?, ?, ?, ?)",
                [(run_id, f.item, f.shard, f.reason, now) for f in failures],
            )

    def release_shard(
        self, run_id: str, index: int, *, owner: str, now: float, done: bool
    ) -> RunRecord:
        with self.database.transaction() as tx:
            tx.execute(
                "UPDATE rotation_shards SET owner = NULL, lease_expires_at = NULL, status = ? "
                "WHERE run_id = ? AND shard = ? AND owner = ?",
                ("done" if done else "stopped", run_id, index, owner),
            )
            run = self._load(tx, run_id)
            if run.status == "running" and all(s.status == "done" for s in run.shards):
                status = "completed_with_failures" if run.counters.failed else "completed"
                tx.execute(
                    "UPDATE rotation_runs SET status = ?, finished_at = ? WHERE run_id = ?",
                    (status, now, run_id),
                )
                run = self._load(tx, run_id)
            return run

    def failures(self, run_id: str, *, limit: int = 10) -> tuple[list[Failure], int]:
        rows = self.database.query(
            "SELECT item, reason, shard FROM rotation_failures WHERE run_id = ? "
            "ORDER BY at, item LIMIT ?",
            (run_id, limit),
        )
        ((count,),) = self.database.query(
            "SELECT COUNT(*) FROM rotation_failures WHERE run_id = ?", (run_id,)
        )
        return [Failure(item=i, reason=r, shard=s) for i, r, s in rows], int(count)

    def live_leases(self, product: str, *, now: float) -> list[tuple[RunRecord, ShardState]]:
        conn = self.database.connection()
        return [(run, s) for run in self._open_runs(conn, product) for s in run.leases(now)]

    # -- backups -----------------------------------------------------------------------

    def record_backup(self, backup: BackupRecord) -> None:
        self.database.execute(
            "INSERT INTO rotation_backups (product, at, path, count, checksum) "
            "VALUES (?, ?, ?, ?, ?)",
            (backup.product, backup.at, backup.path, backup.count, backup.checksum),
        )

    def last_backup(self, product: str) -> BackupRecord | None:
        rows = self.database.query(
            "SELECT product, at, path, count, checksum FROM rotation_backups "
            "WHERE product = ? ORDER BY at DESC LIMIT 1",
            (product,),
        )
        if not rows:
            return None
        p, at, path, count, checksum = rows[0]
        return BackupRecord(product=p, at=at, path=path, count=count, checksum=checksum)

    # -- reading -----------------------------------------------------------------------

    def _open_runs(self, conn: sqlite3.Connection, product: str) -> list[RunRecord]:
        rows = conn.execute(
            f"SELECT {_RUN_COLUMNS} FROM rotation_runs WHERE product = ? AND status = 'running' "
            "ORDER BY started_at",
            (product,),
        ).fetchall()
        return [self._with_shards(conn, row) for row in rows]

    def _load(self, conn: sqlite3.Connection, run_id: str) -> RunRecord:
        row = conn.execute(
            f"SELECT {_RUN_COLUMNS} FROM rotation_runs WHERE run_id = ?", (run_id,)
        ).fetchone()
        if row is None:
            raise NotFoundError(f"no migration run {run_id}")
        return self._with_shards(conn, row)

    def _with_shards(self, conn: sqlite3.Connection, row: Any) -> RunRecord:
        run_id, product, mode, from_v, to_v, shards, status, started, finished, total, skip = row
        shard_rows = conn.execute(
            f"SELECT {_SHARD_COLUMNS} FROM rotation_shards WHERE run_id = ? ORDER BY shard",
            (run_id,),
        ).fetchall()
        return RunRecord(
            run_id=run_id,
            product=product,
            plan=RunPlan(mode=mode, from_version=from_v, to_version=to_v, shards=shards),
            status=status,
            started_at=started,
            finished_at=finished,
            estimated_total=total,
            skipped_at_start=skip,
            shards=tuple(_shard(r) for r in shard_rows),
        )


def _shard(row: Any) -> ShardState:
    (run_id, index, status, cursor, pending, matched, changed, skipped, failed, conflicts) = row[
        :10
    ]
    owner, expires, heartbeat = row[10:]
    return ShardState(
        run_id=run_id,
        index=index,
        status=status,
        cursor=cursor,
        pending=tuple(json.loads(pending)),
        counters=Counters(
            matched=matched, changed=changed, skipped=skipped, failed=failed, conflicts=conflicts
        ),
        owner=owner,
        lease_expires_at=expires,
        heartbeat_at=heartbeat,
    )


def _abandoned(run: RunRecord) -> LeaseHeldError:
    """Another run with a different plan was opened between this run's ``open_run`` and
    its ``acquire_shard``, and abandoned it: that run goes on, this one must not start."""
    return LeaseHeldError(
        f"migration run {run.run_id} ({run.plan.mode}) was abandoned: another run with a "
        "different plan took over the product; nothing was done"
    )


def _refuse_if_busy(run: RunRecord, now: float) -> None:
    """Refuse to start or join anything while ``run`` is live or has items to settle."""
    live = run.leases(now)
    if live:
        held = live[0]
        raise LeaseHeldError(
            f"migration run {run.run_id} ({run.plan.mode}) is in flight: shard "
            f"{held.index + 1}/{run.plan.shards} is held by {held.owner} until "
            f"{_iso(held.lease_expires_at)}; wait for it, or for its lease to expire"
        )
    if any(s.pending for s in run.shards):
        raise RotationError(
            f"migration run {run.run_id} ({run.plan.mode}) was interrupted with documents "
            "half-migrated; finish it first by re-running the same command"
        )


def _new_run_id(now: float) -> str:
    stamp = dt.datetime.fromtimestamp(now, dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    return f"run-{stamp}-{uuid.uuid4().hex[:8]}"


def _iso(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    return dt.datetime.fromtimestamp(seconds, dt.UTC).isoformat(timespec="seconds")
