"""The audit trail in the product's SQLite database (the ``actiontrail`` table)."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from field_encrypt.audit import (
    GENESIS,
    AuditEvent,
    AuditSink,
    ChainReport,
    checked_data,
    new_event,
    stored_event,
    stored_text,
    verify_chain,
)
from field_encrypt.audit_delivery import DeliveryCheckpoint
from field_encrypt.backends.sqlite.db import Migration, SqliteDatabase

MIGRATIONS = (
    Migration(
        "0001_actiontrail",
        """
        CREATE TABLE actiontrail (
            seq INTEGER PRIMARY KEY,
            product TEXT NOT NULL,
            id TEXT NOT NULL UNIQUE,
            type TEXT NOT NULL,
            subject TEXT NOT NULL,
            time TEXT NOT NULL,
            event TEXT NOT NULL,
            hash TEXT NOT NULL
        );
        CREATE INDEX actiontrail_type ON actiontrail (product, type)
        """,
    ),
    Migration(
        "0002_actiontrail_delivery",
        """
        CREATE TABLE actiontrail_delivery (
            product TEXT NOT NULL,
            destination TEXT NOT NULL,
            seq INTEGER NOT NULL,
            hash TEXT NOT NULL,
            updated_at TEXT NOT NULL,
            PRIMARY KEY (product, destination)
        )
        """,
    ),
)


class SqliteAuditTrail:
    """The actiontrail table in the product's SQLite database."""

    def __init__(
        self,
        database: SqliteDatabase,
        *,
        product: str,
        sinks: Iterable[AuditSink] = (),
        clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
    ) -> None:
        self.database = database
        self.product = product
        self.sinks = list(sinks)
        self._clock = clock
        database.migrate(MIGRATIONS)

    def __repr__(self) -> str:
        return f"SqliteAuditTrail({self.database.path!r}, product={self.product!r})"

    def emit(self, type: str, *, subject: str, data: Mapping[str, Any] | None = None) -> AuditEvent:
        payload = checked_data(type, data)
        with self.database.transaction() as tx:
            last = tx.execute(
                "SELECT hash FROM actiontrail WHERE product = ? ORDER BY seq DESC LIMIT 1",
                (self.product,),
            ).fetchone()
            event = new_event(
                product=self.product,
                type=type,
                subject=subject,
                data=payload,
                time=self._clock(),
                prevhash=last[0] if last else GENESIS,
            )
            cur = tx.execute(
                "INSERT INTO actiontrail (product, id, type, subject, time, event, hash) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    self.product,
                    event["id"],
                    type,
                    subject,
                    event["time"],
                    stored_text(event),
                    event["hash"],
                ),
            )
        for sink in self.sinks:
            sink.send(event)
        return stored_event(int(cur.lastrowid or 0), event)

    def events(
        self,
        *,
        types: Sequence[str] = (),
        subject: str | None = None,
        since: dt.datetime | None = None,
        until: dt.datetime | None = None,
        limit: int | None = None,
    ) -> list[AuditEvent]:
        where, params = ["product = ?"], [self.product]
        if types:
            where.append(f"type IN ({','.join('?' * len(types))})")
            params += list(types)
        if subject is not None:
            where.append("subject = ?")
            params.append(subject)
        if since is not None:
            where.append("time >= ?")
            params.append(since.isoformat())
        if until is not None:
            where.append("time < ?")
            params.append(until.isoformat())
        sql = f"SELECT seq, event FROM actiontrail WHERE {' AND '.join(where)} ORDER BY seq"
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        rows = self.database.query(sql, params)
        return [stored_event(seq, json.loads(text)) for seq, text in rows]

    def verify(self) -> ChainReport:
        rows = self.database.query(
            "SELECT seq, event, hash FROM actiontrail WHERE product = ? ORDER BY seq",
            (self.product,),
        )
        return verify_chain((seq, json.loads(text), stored) for seq, text, stored in rows)

    # -- delivery (field_encrypt.audit_delivery) ------------------------------------------

    def read_after(self, seq: int, *, limit: int) -> list[AuditEvent]:
        rows = self.database.query(
            "SELECT seq, event FROM actiontrail WHERE product = ? AND seq > ? ORDER BY seq LIMIT ?",
            (self.product, seq, int(limit)),
        )
        return [stored_event(s, json.loads(text)) for s, text in rows]

    def delivered(self, destination: str) -> DeliveryCheckpoint | None:
        rows = self.database.query(
            "SELECT seq, hash, updated_at FROM actiontrail_delivery "
            "WHERE product = ? AND destination = ?",
            (self.product, destination),
        )
        if not rows:
            return None
        seq, hash, updated_at = rows[0]
        return DeliveryCheckpoint(
            destination=destination, seq=seq, hash=hash, updated_at=updated_at
        )

    def record_delivered(self, destination: str, *, seq: int, hash: str) -> None:
        with self.database.transaction() as tx:
            tx.execute(
                "INSERT INTO actiontrail_delivery (product, destination, seq, hash, updated_at) "
                "VALUES (?, ?, ?, ?, ?) ON CONFLICT (product, destination) DO UPDATE SET "
                "seq = excluded.seq, hash = excluded.hash, updated_at = excluded.updated_at "
                "WHERE excluded.seq > actiontrail_delivery.seq",
                (self.product, destination, seq, hash, self._clock().isoformat()),
            )
