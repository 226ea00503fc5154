"""The run ledger in the product's PostgreSQL database (next to its dek_store).

The same tables as the SQLite ledger. Every lease decision (open a run, take a shard,
give it back) runs in one transaction that first takes a transaction-level advisory lock
on the product (``pg_advisory_xact_lock``), so two workers on two machines never both win
a shard or start two runs: the second waits for the first's commit and then sees its
lease. Renewals and checkpoints are single conditional UPDATEs (``... AND owner = me``),
so a worker whose lease was taken over cannot write progress any more.

Lease times are the workers' clocks (``now`` comes from the caller); keep the machines'
clocks in sync (NTP) to well under the lease TTL.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection, text

from field_encrypt.backends.postgres.db import Migration, PostgresDatabase
from field_encrypt.backends.sqlite.ledger import _abandoned, _iso, _new_run_id, _refuse_if_busy
from field_encrypt.errors import LeaseHeldError, NotFoundError
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
            run_id text PRIMARY KEY,
            product text NOT NULL,
            mode text NOT NULL,
            from_version text,
            to_version text,
            shards integer NOT NULL,
            status text NOT NULL,
            started_at double precision NOT NULL,
            finished_at double precision,
            estimated_total bigint NOT NULL,
            skipped_at_start bigint NOT NULL,
            seq bigint GENERATED ALWAYS AS IDENTITY
        );
        CREATE INDEX rotation_runs_product ON rotation_runs (product, status, started_at);
        CREATE TABLE rotation_shards (
            run_id text NOT NULL REFERENCES rotation_runs (run_id),
            shard integer NOT NULL,
            status text NOT NULL,
            cursor text,
            pending text NOT NULL DEFAULT '[]',
            matched bigint NOT NULL DEFAULT 0,
            changed bigint NOT NULL DEFAULT 0,
            skipped bigint NOT NULL DEFAULT 0,
            failed bigint NOT NULL DEFAULT 0,
            conflicts bigint NOT NULL DEFAULT 0,
            owner text,
            lease_expires_at double precision,
            heartbeat_at double precision,
            PRIMARY KEY (run_id, shard)
        );
        CREATE TABLE rotation_failures (
            run_id text NOT NULL REFERENCES rotation_runs (run_id),
            item text NOT NULL,
            shard integer NOT NULL,
            reason text NOT NULL,
            at double precision NOT NULL,
            PRIMARY KEY (run_id, item)
        );
        CREATE TABLE rotation_backups (
            product text NOT NULL,
            at double precision NOT NULL,
            path text NOT NULL,
            count bigint NOT NULL,
            checksum text NOT NULL
        );
        CREATE INDEX rotation_backups_product ON rotation_backups (product, at);
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


class PostgresRunLedger:
    """:class:`~field_encrypt.rotation.ledger.RunLedger` on a :class:`PostgresDatabase`."""

    def __init__(self, database: PostgresDatabase) -> None:
        self.database = database
        database.migrate(MIGRATIONS)

    def __repr__(self) -> str:
        return f"PostgresRunLedger({self.database!r})"

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
            _lock(tx, product)
            open_runs = self._open_runs(tx, product)
            for run in open_runs:
                if run.plan == plan:
                    return run, True
            for run in open_runs:
                _refuse_if_busy(run, now)
                tx.execute(
                    text(
                        "UPDATE rotation_runs SET status = 'abandoned', finished_at = :now "
                        "WHERE run_id = :run_id"
                    ),
                    {"now": now, "run_id": run.run_id},
                )
            run_id = _new_run_id(now)
            tx.execute(
                text(
                    f"INSERT INTO rotation_runs ({_RUN_COLUMNS}) VALUES (:run_id, :product, "
                    ":mode, :from_version, :to_version, :shards, 'running', :now, NULL, "
                    ":estimated_total, :skipped_at_start)"
                ),
                {
                    "run_id": run_id,
                    "product": product,
                    "mode": plan.mode,
                    "from_version": plan.from_version,
                    "to_version": plan.to_version,
                    "shards": plan.shards,
                    "now": now,
                    "estimated_total": estimated_total,
                    "skipped_at_start": skipped_at_start,
                },
            )
            tx.execute(
                text(
                    "INSERT INTO rotation_shards (run_id, shard, status) "
                    "SELECT :run_id, i, 'pending' FROM generate_series(0, :last) AS i"
                ),
                {"run_id": run_id, "last": plan.shards - 1},
            )
            return self._load(tx, run_id), False

    def get_run(self, run_id: str) -> RunRecord:
        with self.database.connection() as conn:
            return self._load(conn, run_id)

    def latest_runs(self, product: str, *, limit: int = 10) -> list[RunRecord]:
        with self.database.connection() as conn:
            rows = conn.execute(
                text(
                    f"SELECT {_RUN_COLUMNS} FROM rotation_runs WHERE product = :product "
                    "ORDER BY started_at DESC, seq DESC LIMIT :limit"
                ),
                {"product": product, "limit": limit},
            ).all()
            return [self._with_shards(conn, row) for row in rows]

    # -- leases ------------------------------------------------------------------------

    def acquire_shard(
        self, run_id: str, index: int, *, owner: str, now: float, ttl: float
    ) -> ShardState:
        with self.database.transaction() as tx:
            _lock(tx, self._product_of(tx, run_id))
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
            tx.execute(
                text(
                    "UPDATE rotation_shards SET owner = :owner, lease_expires_at = :expires, "
                    "heartbeat_at = :now, status = :status "
                    "WHERE run_id = :run_id AND shard = :shard"
                ),
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
        with self.database.transaction() as tx:
            renewed = tx.execute(
                text(
                    "UPDATE rotation_shards SET lease_expires_at = :expires, heartbeat_at = :now "
                    "WHERE run_id = :run_id AND shard = :shard AND owner = :owner"
                ),
                {
                    "expires": now + ttl,
                    "now": now,
                    "run_id": run_id,
                    "shard": index,
                    "owner": owner,
                },
            ).rowcount
        if renewed != 1:
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
            saved = tx.execute(
                text(
                    "UPDATE rotation_shards SET cursor = :cursor, pending = :pending, "
                    "matched = matched + :matched, changed = changed + :changed, "
                    "skipped = skipped + :skipped, failed = failed + :failed, "
                    "conflicts = conflicts + :conflicts, lease_expires_at = :expires, "
                    "heartbeat_at = :now WHERE run_id = :run_id AND shard = :shard "
                    "AND owner = :owner"
                ),
                {
                    "cursor": cursor,
                    "pending": json.dumps(list(pending)),
                    **delta.as_dict(),
                    "expires": now + ttl,
                    "now": now,
                    "run_id": run_id,
                    "shard": index,
                    "owner": owner,
                },
            ).rowcount
            if saved != 1:
                raise LeaseHeldError(
                    f"run {run_id} shard {index + 1}: lease lost to another worker"
                )
            if failures:
                tx.execute(
                    text(
                        "INSERT INTO rotation_failures (run_id, item, shard, reason, at) "
                        "VALUES (:run_id, :item, :shard, :reason, :at) "
                        "ON CONFLICT (run_id, item) DO UPDATE SET shard = EXCLUDED.shard, "
                        "reason = EXCLUDED.reason, at = EXCLUDED.at"
                    ),
                    [
                        {
                            "run_id": run_id,
                            "item": f.item,
                            "shard": f.shard,
                            "reason": f.reason,
                            "at": now,
                        }
                        for f in failures
                    ],
                )

    def release_shard(
        self, run_id: str, index: int, *, owner: str, now: float, done: bool
    ) -> RunRecord:
        with self.database.transaction() as tx:
            _lock(tx, self._product_of(tx, run_id))
            tx.execute(
                text(
                    "UPDATE rotation_shards SET owner = NULL, lease_expires_at = NULL, "
                    "status = :status WHERE run_id = :run_id AND shard = :shard "
                    "AND owner = :owner"
                ),
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
                tx.execute(
                    text(
                        "UPDATE rotation_runs SET status = :status, finished_at = :now "
                        "WHERE run_id = :run_id"
                    ),
                    {"status": status, "now": now, "run_id": run_id},
                )
                run = self._load(tx, run_id)
            return run

    def failures(self, run_id: str, *, limit: int = 10) -> tuple[list[Failure], int]:
        with self.database.connection() as conn:
            rows = conn.execute(
                text(
                    "SELECT item, reason, shard FROM rotation_failures WHERE run_id = :run_id "
                    "ORDER BY at, item LIMIT :limit"
                ),
                {"run_id": run_id, "limit": limit},
            ).all()
            count = conn.execute(
                text("SELECT count(*) FROM rotation_failures WHERE run_id = :run_id"),
                {"run_id": run_id},
            ).scalar_one()
        return [Failure(item=i, reason=r, shard=s) for i, r, s in rows], int(count)

    def live_leases(self, product: str, *, now: float) -> list[tuple[RunRecord, ShardState]]:
        with self.database.connection() as conn:
            runs = self._open_runs(conn, product)
        return [(run, s) for run in runs for s in run.leases(now)]

    # -- backups -----------------------------------------------------------------------

    def record_backup(self, backup: BackupRecord) -> None:
        with self.database.connection() as conn:
            conn.execute(
                text(
                    "INSERT INTO rotation_backups (product, at, path, count, checksum) "
                    "VALUES (:product, :at, :path, :count, :checksum)"
                ),
                {
                    "product": backup.product,
                    "at": backup.at,
                    "path": backup.path,
                    "count": backup.count,
                    "checksum": backup.checksum,
                },
            )

    def last_backup(self, product: str) -> BackupRecord | None:
        with self.database.connection() as conn:
            row = conn.execute(
                text(
                    "SELECT product, at, path, count, checksum FROM rotation_backups "
                    "WHERE product = :product ORDER BY at DESC LIMIT 1"
                ),
                {"product": product},
            ).first()
        if row is None:
            return None
        p, at, path, count, checksum = row
        return BackupRecord(product=p, at=at, path=path, count=count, checksum=checksum)

    # -- reading -----------------------------------------------------------------------

    def _product_of(self, conn: Connection, run_id: str) -> str:
        product = conn.execute(
            text("SELECT product FROM rotation_runs WHERE run_id = :run_id"), {"run_id": run_id}
        ).scalar()
        if product is None:
            raise NotFoundError(f"no migration run {run_id}")
        return str(product)

    def _open_runs(self, conn: Connection, product: str) -> list[RunRecord]:
        rows = conn.execute(
            text(
                f"SELECT {_RUN_COLUMNS} FROM rotation_runs WHERE product = :product "
                "AND status = 'running' ORDER BY started_at, seq"
            ),
            {"product": product},
        ).all()
        return [self._with_shards(conn, row) for row in rows]

    def _load(self, conn: Connection, run_id: str) -> RunRecord:
        row = conn.execute(
            text(f"SELECT {_RUN_COLUMNS} FROM rotation_runs WHERE run_id = :run_id"),
            {"run_id": run_id},
        ).first()
        if row is None:
            raise NotFoundError(f"no migration run {run_id}")
        return self._with_shards(conn, row)

    def _with_shards(self, conn: Connection, row: Any) -> RunRecord:
        run_id, product, mode, from_v, to_v, shards, status, started, finished, total, skip = row
        shard_rows = conn.execute(
            text(
                f"SELECT {_SHARD_COLUMNS} FROM rotation_shards WHERE run_id = :run_id "
                "ORDER BY shard"
            ),
            {"run_id": run_id},
        ).all()
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


def _lock(conn: Connection, product: str) -> None:
    """Serialize this product's lease decisions until the transaction ends."""
    digest = hashlib.sha256(f"field-encrypt/ledger/{product}".encode()).digest()
    conn.execute(
        text("SELECT pg_advisory_xact_lock(:key)"),
        {"key": int.from_bytes(digest[:8], "big", signed=True)},
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
