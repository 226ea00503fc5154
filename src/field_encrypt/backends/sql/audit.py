"""The audit trail (``actiontrail``) in the product's SQL database, for both dialects: the outbox.

An append reads the product's chain head (its last ``seq`` and ``hash``) and inserts the
next event after it, in one transaction that serialises the product's appends: SQLite's
``BEGIN IMMEDIATE`` holds the file's write lock, PostgreSQL's takes a transaction-level
advisory lock on the product (``pg_advisory_xact_lock``) held until the commit. So two
writers on two machines are serialised and the second links to the first, and events
commit in ``seq`` order (what delivery's "resume after the last acknowledged ``seq``"
relies on). PostgreSQL's primary key ``(product, seq)`` is the second guard: a second event
at the same position fails with ``AlreadyExistsError``, so the chain cannot fork.

**The outbox.** :meth:`SqlAuditTrail.within` is a unit of work: the database transaction
the act's own writes join (both databases join a transaction already open on the thread),
so the events emitted inside it commit with the act's rows or not at all. Sinks hear of
them only after the commit. An act that is not only rows in this database (a key service's
enable/disable) first writes an **intent** (:meth:`intend`, committed on its own in
``actiontrail_pending``); the unit that records the act deletes it in the same
transaction as its event (:meth:`settle`). An intent still pending was interrupted
between the two: :func:`field_encrypt.audit_outbox.reconcile` (run by ``audit verify`` and
``audit deliver``) asks whether the act took effect, appends its event if it did (marked
``recovered``) and drops the intent either way.

The event is kept as JSON **text** (not ``jsonb``, which would rewrite it), so its hash is
checked over exactly what was written. The two dialects keep the schemas earlier releases
created: SQLite numbers events across the file (``seq INTEGER PRIMARY KEY``), PostgreSQL
per product, with ``time`` also a ``timestamptz`` column for the time filters.
"""

from __future__ import annotations

import datetime as dt
import json
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, TypeVar

from field_encrypt.audit import (
    GENESIS,
    AuditEvent,
    ChainReport,
    EventQuery,
    PendingIntent,
    StoredTrail,
    stored_event,
    stored_intent,
    stored_text,
    verify_chain,
)
from field_encrypt.backends.sql.dialect import Dialect, Session

if TYPE_CHECKING:  # imported where used: a command that delivers nothing does not load it
    from field_encrypt.audit_delivery import DeliveryCheckpoint

D = TypeVar("D")
"""The database type of a dialect's trail."""

PENDING_SCHEMA = """
    CREATE TABLE actiontrail_pending (
        product {text} NOT NULL,
        id {text} NOT NULL,
        type {text} NOT NULL,
        subject {text} NOT NULL,
        data {text} NOT NULL,
        probe {text} NOT NULL,
        created_at {text} NOT NULL,
        PRIMARY KEY (product, id)
    )
"""


class SqlAuditTrail(StoredTrail[D]):
    """:class:`~field_encrypt.audit.AuditTrail` (and its outbox) on a SQL :class:`Dialect`."""

    migrations: Sequence[Any] = ()
    """The dialect's schema steps (``actiontrail``, ``actiontrail_delivery``), as earlier
    releases named them; the pending intents' table is added after them."""

    def _dialect(self, database: D) -> Dialect:
        """The dialect of ``database``."""
        raise NotImplementedError

    def _open(self, database: D) -> None:
        self.dialect = dialect = self._dialect(database)
        self.database = dialect.database
        self._local = threading.local()
        self.database.migrate(
            [*self.migrations, dialect.schema("0003_actiontrail_pending", PENDING_SCHEMA)]
        )

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.dialect.label}, product={self.product!r})"

    # -- dialect differences ----------------------------------------------------------

    def _time(self, value: dt.datetime) -> Any:
        """A time as its column keeps it (ISO text in SQLite, ``timestamptz`` in PostgreSQL)."""
        return value.isoformat() if self.dialect.name == "sqlite" else value

    def _next_seq(self, session: Session) -> tuple[int, str]:
        """The ``seq`` the next event takes and the hash it links to (the chain head)."""
        self.dialect.lock(session, f"field-encrypt/actiontrail/{self.product}")
        head = session.first(
            "SELECT seq, hash FROM actiontrail WHERE product = :product ORDER BY seq DESC LIMIT 1",
            {"product": self.product},
        )
        prevhash = str(head[1]) if head else GENESIS
        if self.dialect.name == "sqlite":  # numbered across the file, as rowids are
            top = session.rows("SELECT MAX(seq) FROM actiontrail")[0][0]
            return int(top or 0) + 1, prevhash
        return (int(head[0]) + 1 if head else 1), prevhash

    # -- the unit of work -------------------------------------------------------------

    @contextmanager
    def within(self) -> Iterator[None]:
        """One transaction for an act and its events: they commit together or not at all.

        The act's writes to this database on this thread join it; events emitted inside
        are appended in it, and reach the sinks after the commit. Nested units join the
        outermost one.
        """
        held: list[dict[str, Any]] | None = getattr(self._local, "held", None)
        if held is not None:
            with self.dialect.transaction():
                yield
            return
        self._local.held = held = []
        try:
            with self.dialect.transaction():
                yield
        finally:
            self._local.held = None
        for event in held:
            self._forward(event)

    def _append(
        self, type: str, subject: str, payload: Mapping[str, Any], *, intent: str | None
    ) -> AuditEvent:
        """The intent (if any) is settled in the same transaction: the event needs no mark."""
        with self.dialect.transaction() as tx:
            seq, event = self._insert(tx, type, subject, payload)
        held: list[dict[str, Any]] | None = getattr(self._local, "held", None)
        if held is not None:
            held.append(event)  # forwarded once the unit commits
        else:
            self._forward(event)
        return stored_event(seq, event)

    def _insert(
        self, tx: Session, type: str, subject: str, payload: Mapping[str, Any]
    ) -> tuple[int, dict[str, Any]]:
        seq, prevhash = self._next_seq(tx)
        now = self._clock()
        event = self._next_event(type, subject, payload, prevhash=prevhash, time=now)
        tx.run(
            "INSERT INTO actiontrail (product, seq, id, type, subject, time, event, hash) "
            "VALUES (:product, :seq, :id, :type, :subject, :time, :event, :hash)",
            {
                "product": self.product,
                "seq": seq,
                "id": event["id"],
                "type": type,
                "subject": subject,
                "time": self._time(now),
                "event": stored_text(event),
                "hash": event["hash"],
            },
        )
        return seq, event

    # -- intents: acts outside this database ------------------------------------------

    atomic = True
    """A unit (:meth:`within`) is one transaction: acts in this database need no intent."""

    def _record_intent(self, intent: PendingIntent) -> None:
        self.dialect.execute(
            "INSERT INTO actiontrail_pending (product, id, type, subject, data, probe, "
            "created_at) VALUES (:product, :id, :type, :subject, :data, :probe, :created_at)",
            {"product": self.product, "id": intent.id, **stored_intent(intent)},
        )

    def settle(self, intent: str) -> None:
        """Forget an intent (inside the unit that records its act, or once reconciled)."""
        self.dialect.execute(
            "DELETE FROM actiontrail_pending WHERE product = :product AND id = :id",
            {"product": self.product, "id": intent},
        )

    def pending(self) -> list[PendingIntent]:
        """The intents not settled yet (an act interrupted before its event), oldest first."""
        rows = self.dialect.query(
            "SELECT id, type, subject, data, probe, created_at FROM actiontrail_pending "
            "WHERE product = :product ORDER BY created_at, id",
            {"product": self.product},
        )
        return [
            PendingIntent(
                id=i, type=t, subject=s, data=json.loads(d), check=json.loads(k), created_at=c
            )
            for i, t, s, d, k, c in rows
        ]

    # -- reading ----------------------------------------------------------------------

    def _select(self, query: EventQuery) -> list[AuditEvent]:
        where = ["product = :product"]
        params: dict[str, Any] = {"product": self.product}
        for column, operator, values in query.conditions():
            names = [f"p{len(params) + i}" for i in range(len(values))]
            params |= {
                n: self._time(v) if isinstance(v, dt.datetime) else v
                for n, v in zip(names, values, strict=True)
            }
            operand = ", ".join(":" + n for n in names)
            where.append(f"{column} {operator} ({operand})")
        sql = f"SELECT seq, event FROM actiontrail WHERE {' AND '.join(where)} ORDER BY seq"
        if query.limit is not None:
            sql += f" LIMIT {int(query.limit)}"
        return [
            stored_event(int(seq), json.loads(raw)) for seq, raw in self.dialect.query(sql, params)
        ]

    def verify(self) -> ChainReport:
        rows = self.dialect.query(
            "SELECT seq, event, hash FROM actiontrail WHERE product = :product ORDER BY seq",
            {"product": self.product},
        )
        return verify_chain((int(seq), json.loads(raw), stored) for seq, raw, stored in rows)

    # -- delivery (field_encrypt.audit_delivery) ----------------------------------------

    def read_after(self, seq: int, *, limit: int) -> list[AuditEvent]:
        rows = self.dialect.query(
            "SELECT seq, event FROM actiontrail WHERE product = :product AND seq > :seq "
            "ORDER BY seq LIMIT :limit",
            {"product": self.product, "seq": seq, "limit": int(limit)},
        )
        return [stored_event(int(s), json.loads(raw)) for s, raw in rows]

    def delivered(self, destination: str) -> DeliveryCheckpoint | None:
        from field_encrypt.audit_delivery import DeliveryCheckpoint

        row = self.dialect.query(
            "SELECT seq, hash, updated_at FROM actiontrail_delivery "
            "WHERE product = :product AND destination = :destination",
            {"product": self.product, "destination": destination},
        )
        if not row:
            return None
        seq, hash, updated_at = row[0]
        if isinstance(updated_at, dt.datetime):
            updated_at = updated_at.isoformat()
        return DeliveryCheckpoint(
            destination=destination, seq=int(seq), hash=hash, updated_at=updated_at
        )

    def record_delivered(self, destination: str, *, seq: int, hash: str) -> None:
        self.dialect.execute(
            "INSERT INTO actiontrail_delivery (product, destination, seq, hash, updated_at) "
            "VALUES (:product, :destination, :seq, :hash, :now) "
            "ON CONFLICT (product, destination) DO UPDATE SET seq = excluded.seq, "
            "hash = excluded.hash, updated_at = excluded.updated_at "
            "WHERE excluded.seq > actiontrail_delivery.seq",
            {
                "product": self.product,
                "destination": destination,
                "seq": seq,
                "hash": hash,
                "now": self._time(self._clock()),
            },
        )
