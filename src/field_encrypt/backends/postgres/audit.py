"""The audit trail (``actiontrail``) in the product's PostgreSQL database.

The same events and chain as :class:`~field_encrypt.backends.sqlite.audit.SqliteAuditTrail`. An append is
one transaction that first takes a transaction-level advisory lock on the product
(``pg_advisory_xact_lock``, as the run ledger does), then reads the product's last
``(seq, hash)`` and inserts the next event at ``seq + 1``: two writers on two machines are
serialized, and the second links to the first. The primary key ``(product, seq)`` is the
second guard: even a writer that skipped the lock could not insert a second event at the
same position (it would fail with ``AlreadyExistsError``), so the chain cannot fork.

``seq`` counts from 1 per product. The event is kept as JSON **text** (not ``jsonb``,
which would rewrite it), so its hash is checked over exactly what was written; ``time`` is
also a ``timestamptz`` column for the time filters.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from sqlalchemy import Connection, text

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
from field_encrypt.backends.postgres.db import Migration, PostgresDatabase

MIGRATIONS = (
    Migration(
        "0001_actiontrail",
        """
        CREATE TABLE actiontrail (
            product text NOT NULL,
            seq bigint NOT NULL,
            id text NOT NULL UNIQUE,
            type text NOT NULL,
            subject text NOT NULL,
            time timestamptz NOT NULL,
            event text NOT NULL,
            hash text NOT NULL,
            PRIMARY KEY (product, seq)
        );
        CREATE INDEX actiontrail_type ON actiontrail (product, type, seq);
        CREATE INDEX actiontrail_subject ON actiontrail (product, subject, seq);
        """,
    ),
    Migration(
        "0002_actiontrail_delivery",
        """
        CREATE TABLE actiontrail_delivery (
            product text NOT NULL,
            destination text NOT NULL,
            seq bigint NOT NULL,
            hash text NOT NULL,
            updated_at timestamptz NOT NULL,
            PRIMARY KEY (product, destination)
        );
        """,
    ),
)


class PostgresAuditTrail:
    """:class:`~field_encrypt.audit.AuditTrail` on a :class:`PostgresDatabase`."""

    def __init__(
        self,
        database: PostgresDatabase,
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
        return f"PostgresAuditTrail({self.database!r}, product={self.product!r})"

    def emit(self, type: str, *, subject: str, data: Mapping[str, Any] | None = None) -> AuditEvent:
        payload = checked_data(type, data)
        with self.database.transaction() as tx:
            _lock(tx, self.product)
            last = tx.execute(
                text(
                    "SELECT seq, hash FROM actiontrail WHERE product = :product "
                    "ORDER BY seq DESC LIMIT 1"
                ),
                {"product": self.product},
            ).first()
            seq = int(last[0]) + 1 if last else 1
            now = self._clock()
            event = new_event(
                product=self.product,
                type=type,
                subject=subject,
                data=payload,
                time=now,
                prevhash=str(last[1]) if last else GENESIS,
            )
            tx.execute(
                text(
                    "INSERT INTO actiontrail (product, seq, id, type, subject, time, event, hash) "
                    "VALUES (:product, :seq, :id, :type, :subject, :time, :event, :hash)"
                ),
                {
                    "product": self.product,
                    "seq": seq,
                    "id": event["id"],
                    "type": type,
                    "subject": subject,
                    "time": now,
                    "event": stored_text(event),
                    "hash": event["hash"],
                },
            )
        for sink in self.sinks:
            sink.send(event)
        return stored_event(seq, event)

    def events(
        self,
        *,
        types: Sequence[str] = (),
        subject: str | None = None,
        since: dt.datetime | None = None,
        until: dt.datetime | None = None,
        limit: int | None = None,
    ) -> list[AuditEvent]:
        where = ["product = %s"]
        params: list[object] = [self.product]
        if types:
            where.append("type = ANY(%s)")
            params.append(list(types))
        if subject is not None:
            where.append("subject = %s")
            params.append(subject)
        if since is not None:
            where.append("time >= %s")
            params.append(since)
        if until is not None:
            where.append("time < %s")
            params.append(until)
        sql = f"SELECT seq, event FROM actiontrail WHERE {' AND '.join(where)} ORDER BY seq"
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        return [
            stored_event(int(seq), json.loads(raw)) for seq, raw in self.database.query(sql, params)
        ]

    def verify(self) -> ChainReport:
        rows = self.database.query(
            "SELECT seq, event, hash FROM actiontrail WHERE product = %s ORDER BY seq",
            [self.product],
        )
        return verify_chain((int(seq), json.loads(raw), stored) for seq, raw, stored in rows)

    # -- delivery (field_encrypt.audit_delivery) ------------------------------------------

    def read_after(self, seq: int, *, limit: int) -> list[AuditEvent]:
        rows = self.database.query(
            "SELECT seq, event FROM actiontrail WHERE product = %s AND seq > %s "
            "ORDER BY seq LIMIT %s",
            [self.product, seq, int(limit)],
        )
        return [stored_event(int(s), json.loads(raw)) for s, raw in rows]

    def delivered(self, destination: str) -> DeliveryCheckpoint | None:
        rows = self.database.query(
            "SELECT seq, hash, updated_at FROM actiontrail_delivery "
            "WHERE product = %s AND destination = %s",
            [self.product, destination],
        )
        if not rows:
            return None
        seq, hash, updated_at = rows[0]
        return DeliveryCheckpoint(
            destination=destination, seq=int(seq), hash=hash, updated_at=updated_at.isoformat()
        )

    def record_delivered(self, destination: str, *, seq: int, hash: str) -> None:
        self.database.execute(
            text(
                "INSERT INTO actiontrail_delivery (product, destination, seq, hash, updated_at) "
                "VALUES (:product, :destination, :seq, :hash, :now) "
                "ON CONFLICT (product, destination) DO UPDATE SET seq = excluded.seq, "
                "hash = excluded.hash, updated_at = excluded.updated_at "
                "WHERE excluded.seq > actiontrail_delivery.seq"
            ),
            {
                "product": self.product,
                "destination": destination,
                "seq": seq,
                "hash": hash,
                "now": self._clock(),
            },
        )


def _lock(conn: Connection, product: str) -> None:
    """Serialize this product's appends until the transaction ends."""
    digest = hashlib.sha256(f"field-encrypt/actiontrail/{product}".encode()).digest()
    conn.execute(
        text("SELECT pg_advisory_xact_lock(:key)"),
        {"key": int.from_bytes(digest[:8], "big", signed=True)},
    )
