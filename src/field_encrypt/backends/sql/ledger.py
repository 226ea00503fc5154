"""The run ledger in the product's SQL database (next to its dek_store), for both dialects.

Every lease decision (open a run, take a shard, give it back) runs in one transaction that
serialises the product's decisions: SQLite's ``BEGIN IMMEDIATE`` holds the file's write
lock, PostgreSQL's takes a transaction-level advisory lock on the product
(``pg_advisory_xact_lock``). So two workers never both win a shard or start two runs: the
second waits for the first's commit and then sees its lease. Renewals and checkpoints are
single conditional UPDATEs (``... AND owner = me``), so a worker whose lease was taken over
cannot write progress any more.

Lease times are the workers' clocks (``now`` comes from the caller); keep the machines'
clocks in sync (NTP) to well under the lease TTL.
"""

from __future__ import annotations

import json
from typing import Any

from field_encrypt.backends.common import (
    abandoned,
    iso,
    new_run_fields,
    new_run_id,
    refuse_if_busy,
    run_to_resume,
)
from field_encrypt.backends.sql.dialect import Dialect, Session, SqlStore
from field_encrypt.errors import LeaseHeldError, NotFoundError
from field_encrypt.rotation.ledger import (
    BackupRecord,
    Counters,
    Failure,
    NewRun,
    Progress,
    RunPlan,
    RunRecord,
    ShardState,
)

SCHEMA = """
    CREATE TABLE rotation_runs (
        run_id {text} PRIMARY KEY,
        product {text} NOT NULL,
        mode {text} NOT NULL,
        from_version {text},
        to_version {text},
        shards {int} NOT NULL,
        status {text} NOT NULL,
        started_at {real} NOT NULL,
        finished_at {real},
        estimated_total {bigint} NOT NULL,
        skipped_at_start {bigint} NOT NULL{run_seq}
    );
    CREATE INDEX rotation_runs_product ON rotation_runs (product, status, started_at);
    CREATE TABLE rotation_shards (
        run_id {text} NOT NULL REFERENCES rotation_runs (run_id),
        shard {int} NOT NULL,
        status {text} NOT NULL,
        cursor {text},
        pending {text} NOT NULL DEFAULT '[]',
        matched {bigint} NOT NULL DEFAULT 0,
        changed {bigint} NOT NULL DEFAULT 0,
        skipped {bigint} NOT NULL DEFAULT 0,
        failed {bigint} NOT NULL DEFAULT 0,
        conflicts {bigint} NOT NULL DEFAULT 0,
        owner {text},
        lease_expires_at {real},
        heartbeat_at {real},
        PRIMARY KEY (run_id, shard)
    );
    CREATE TABLE rotation_failures (
        run_id {text} NOT NULL REFERENCES rotation_runs (run_id),
        item {text} NOT NULL,
        shard {int} NOT NULL,
        reason {text} NOT NULL,
        at {real} NOT NULL,
        PRIMARY KEY (run_id, item)
    );
    CREATE TABLE rotation_backups (
        product {text} NOT NULL,
        at {real} NOT NULL,
        path {text} NOT NULL,
        count {bigint} NOT NULL,
        checksum {text} NOT NULL
    ){backups_index}
"""
"""The ledger's tables; SQLite orders runs by ``rowid``, PostgreSQL by a ``seq`` column."""


def migrations(dialect: Dialect) -> tuple[Any, ...]:
    """The ledger's schema steps in ``dialect``."""
    return (
        dialect.schema(
            "0001_rotation_ledger",
            SCHEMA,
            run_seq={"postgres": ",\n        seq bigint GENERATED ALWAYS AS IDENTITY"},
            backups_index={
                "postgres": ";\n    CREATE INDEX rotation_backups_product "
                "ON rotation_backups (product, at)"
            },
        ),
    )


RUN_COLUMNS = (
    "run_id, product, mode, from_version, to_version, shards, status, started_at, "
    "finished_at, estimated_total, skipped_at_start"
)
SHARD_COLUMNS = (
    "run_id, shard, status, cursor, pending, matched, changed, skipped, failed, conflicts, "
    "owner, lease_expires_at, heartbeat_at"
)


class SqlRunLedger(SqlStore):
    """:class:`~field_encrypt.rotation.ledger.RunLedger` in the tables of :data:`SCHEMA`."""

    def __init__(self, dialect: Dialect) -> None:
        super().__init__(dialect, migrations(dialect))

    # -- runs --------------------------------------------------------------------------

    def open_run(self, *, new: NewRun, now: float) -> tuple[RunRecord, bool]:
        with self.dialect.transaction() as tx:
            self._lock(tx, new.product)
            open_runs = self._open_runs(tx, new.product)
            resumed = run_to_resume(open_runs, new.plan, now)
            if resumed is not None:
                return resumed, True
            for run in open_runs:
                tx.run(
                    "UPDATE rotation_runs SET status = 'abandoned', finished_at = :now "
                    "WHERE run_id = :run_id",
                    {"now": now, "run_id": run.run_id},
                )
            run_id = new_run_id(now)
            tx.run(
                f"INSERT INTO rotation_runs ({RUN_COLUMNS}) VALUES (:run_id, :product, "
                ":mode, :from_version, :to_version, :shards, 'running', :now, NULL, "
                ":estimated_total, :skipped_at_start)",
                new_run_fields(run_id, new) | {"now": now},
            )
            tx.run_many(
                "INSERT INTO rotation_shards (run_id, shard, status) "
                "VALUES (:run_id, :shard, 'pending')",
                [{"run_id": run_id, "shard": i} for i in range(new.plan.shards)],
            )
            return self._load(tx, run_id), False

    def get_run(self, run_id: str) -> RunRecord:
        with self.dialect.connection() as conn:
            return self._load(conn, run_id)

    def latest_runs(self, product: str, *, limit: int = 10) -> list[RunRecord]:
        with self.dialect.connection() as conn:
            rows = conn.rows(
                f"SELECT {RUN_COLUMNS} FROM rotation_runs WHERE product = :product "
                f"ORDER BY started_at DESC, {self.dialect.order_column} DESC LIMIT :limit",
                {"product": product, "limit": limit},
            )
            return [self._with_shards(conn, row) for row in rows]

    # -- leases ------------------------------------------------------------------------

    def acquire_shard(
        self, run_id: str, index: int, *, owner: str, now: float, ttl: float
    ) -> ShardState:
        with self.dialect.transaction() as tx:
            self._lock_run(tx, run_id)
            run = self._load(tx, run_id)
            if run.status == "abandoned":
                raise abandoned(run)
            for other in self._open_runs(tx, run.product):
                if other.run_id != run_id:
                    refuse_if_busy(other, now)
            shard = run.shard(index)
            if shard.leased(now) and shard.owner != owner:
                raise LeaseHeldError(
                    f"run {run_id} shard {index + 1}/{run.plan.shards} is held by "
                    f"{shard.owner} until {iso(shard.lease_expires_at)}"
                )
            tx.run(
                "UPDATE rotation_shards SET owner = :owner, lease_expires_at = :expires, "
                "heartbeat_at = :now, status = :status "
                "WHERE run_id = :run_id AND shard = :shard",
                {
                    "owner": owner,
                    "expires": now + ttl,
                    "now": now,
                    "status": "done" if shard.status == "done" else "running",
                    "run_id": run_id,
                    "shard": index,
                },
            )
            return self._load(tx, run_id).shard(index)

    def renew_lease(self, run_id: str, index: int, *, owner: str, now: float, ttl: float) -> None:
        renewed = self.dialect.execute(
            "UPDATE rotation_shards SET lease_expires_at = :expires, heartbeat_at = :now "
            "WHERE run_id = :run_id AND shard = :shard AND owner = :owner",
            {"expires": now + ttl, "now": now, "run_id": run_id, "shard": index, "owner": owner},
        )
        if renewed != 1:
            raise LeaseHeldError(f"run {run_id} shard {index + 1}: lease lost to another worker")

    def checkpoint(
        self, run_id: str, index: int, *, owner: str, now: float, ttl: float, progress: Progress
    ) -> None:
        with self.dialect.transaction() as tx:
            saved = tx.run(
                "UPDATE rotation_shards SET cursor = :cursor, pending = :pending, "
                "matched = matched + :matched, changed = changed + :changed, "
                "skipped = skipped + :skipped, failed = failed + :failed, "
                "conflicts = conflicts + :conflicts, lease_expires_at = :expires, "
                "heartbeat_at = :now WHERE run_id = :run_id AND shard = :shard "
                "AND owner = :owner",
                {
                    "cursor": progress.cursor,
                    "pending": json.dumps(list(progress.pending)),
                    **progress.delta.as_dict(),
                    "expires": now + ttl,
                    "now": now,
                    "run_id": run_id,
                    "shard": index,
                    "owner": owner,
                },
            )
            if saved != 1:
                raise LeaseHeldError(
                    f"run {run_id} shard {index + 1}: lease lost to another worker"
                )
            tx.run_many(
                "INSERT INTO rotation_failures (run_id, item, shard, reason, at) "
                "VALUES (:run_id, :item, :shard, :reason, :at) "
                "ON CONFLICT (run_id, item) DO UPDATE SET shard = excluded.shard, "
                "reason = excluded.reason, at = excluded.at",
                [
                    {"run_id": run_id, "item": f.item, "shard": f.shard, "reason": f.reason,
                     "at": now}
                    for f in progress.failures
                ],
            )  # fmt: skip

    def release_shard(
        self, run_id: str, index: int, *, owner: str, now: float, done: bool
    ) -> RunRecord:
        with self.dialect.transaction() as tx:
            self._lock_run(tx, run_id)
            tx.run(
                "UPDATE rotation_shards SET owner = NULL, lease_expires_at = NULL, "
                "status = :status WHERE run_id = :run_id AND shard = :shard AND owner = :owner",
                {
                    "status": "done" if done else "stopped",
                    "run_id": run_id,
                    "shard": index,
                    "owner": owner,
                },
            )
            run = self._load(tx, run_id)
            if run.status == "running" and all(s.status == "done" for s in run.shards):
                status = "completed_with_failures" if run.counters.failed else "completed"
                tx.run(
                    "UPDATE rotation_runs SET status = :status, finished_at = :now "
                    "WHERE run_id = :run_id",
                    {"status": status, "now": now, "run_id": run_id},
                )
                run = self._load(tx, run_id)
            return run

    def failures(self, run_id: str, *, limit: int = 10) -> tuple[list[Failure], int]:
        with self.dialect.connection() as conn:
            rows = conn.rows(
                "SELECT item, reason, shard FROM rotation_failures WHERE run_id = :run_id "
                "ORDER BY at, item LIMIT :limit",
                {"run_id": run_id, "limit": limit},
            )
            ((count,),) = conn.rows(
                "SELECT count(*) FROM rotation_failures WHERE run_id = :run_id",
                {"run_id": run_id},
            )
        return [Failure(item=i, reason=r, shard=s) for i, r, s in rows], int(count)

    def live_leases(self, product: str, *, now: float) -> list[tuple[RunRecord, ShardState]]:
        with self.dialect.connection() as conn:
            runs = self._open_runs(conn, product)
        return [(run, s) for run in runs for s in run.leases(now)]

    # -- backups -----------------------------------------------------------------------

    def record_backup(self, backup: BackupRecord) -> None:
        self.dialect.execute(
            "INSERT INTO rotation_backups (product, at, path, count, checksum) "
            "VALUES (:product, :at, :path, :count, :checksum)",
            {
                "product": backup.product,
                "at": backup.at,
                "path": backup.path,
                "count": backup.count,
                "checksum": backup.checksum,
            },
        )

    def last_backup(self, product: str) -> BackupRecord | None:
        rows = self.dialect.query(
            "SELECT product, at, path, count, checksum FROM rotation_backups "
            "WHERE product = :product ORDER BY at DESC LIMIT 1",
            {"product": product},
        )
        if not rows:
            return None
        p, at, path, count, checksum = rows[0]
        return BackupRecord(product=p, at=at, path=path, count=int(count), checksum=checksum)

    # -- reading -----------------------------------------------------------------------

    def _lock(self, tx: Session, product: str) -> None:
        """Serialise this product's lease decisions until the transaction ends."""
        self.dialect.lock(tx, f"field-encrypt/ledger/{product}")

    def _lock_run(self, tx: Session, run_id: str) -> None:
        if not self.dialect.locks:
            return
        row = tx.first(
            "SELECT product FROM rotation_runs WHERE run_id = :run_id", {"run_id": run_id}
        )
        if row is None:
            raise NotFoundError(f"no migration run {run_id}")
        self._lock(tx, str(row[0]))

    def _open_runs(self, conn: Session, product: str) -> list[RunRecord]:
        rows = conn.rows(
            f"SELECT {RUN_COLUMNS} FROM rotation_runs WHERE product = :product "
            f"AND status = 'running' ORDER BY started_at, {self.dialect.order_column}",
            {"product": product},
        )
        return [self._with_shards(conn, row) for row in rows]

    def _load(self, conn: Session, run_id: str) -> RunRecord:
        row = conn.first(
            f"SELECT {RUN_COLUMNS} FROM rotation_runs WHERE run_id = :run_id", {"run_id": run_id}
        )
        if row is None:
            raise NotFoundError(f"no migration run {run_id}")
        return self._with_shards(conn, row)

    def _with_shards(self, conn: Session, row: Any) -> RunRecord:
        run_id, product, mode, from_v, to_v, shards, status, started, finished, total, skip = row
        shard_rows = conn.rows(
            f"SELECT {SHARD_COLUMNS} FROM rotation_shards WHERE run_id = :run_id ORDER BY shard",
            {"run_id": run_id},
        )
        return RunRecord(
            run_id=run_id,
            product=product,
            plan=RunPlan(mode=mode, from_version=from_v, to_version=to_v, shards=shards),
            status=status,
            started_at=started,
            finished_at=finished,
            estimated_total=int(total),
            skipped_at_start=int(skip),
            shards=tuple(_shard(r) for r in shard_rows),
        )


def _shard(row: Any) -> ShardState:
    run_id, index, status, cursor, pending, matched, changed, skipped, failed, conflicts = row[:10]
    owner, expires, heartbeat = row[10:]
    return ShardState(
        run_id=run_id,
        index=index,
        status=status,
        cursor=cursor,
        pending=tuple(json.loads(pending)),
        counters=Counters(
            matched=int(matched),
            changed=int(changed),
            skipped=int(skipped),
            failed=int(failed),
            conflicts=int(conflicts),
        ),
        owner=owner,
        lease_expires_at=expires,
        heartbeat_at=heartbeat,
    )
