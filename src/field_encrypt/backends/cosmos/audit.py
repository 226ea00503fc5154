"""The audit trail (``actiontrail``) in the product's Cosmos DB database.

Container ``actiontrail``, partition key ``/pk`` = the product: one logical partition per
product's trail, so every read and every query stays in one partition. Items:

- ``<seq>`` (20 digits, ``00000000000000000001`` ...): one event, written once with
  ``create_item``, never replaced. ``event`` holds its CloudEvent as JSON **text** (so the
  hash is checked over exactly what was written; a JSON number stored as such could come
  back rewritten), beside ``seq``, ``type``, ``subject`` and ``time`` for the filters.
- ``head``: ``{"seq": n, "hash": ...}``, the last event the writers know of: a hint that
  saves reading the whole trail, advanced with ``If-Match`` on its ETag.

**Append.** Read the head; read forward from it while the next event exists (a writer that
died between its event and its head update leaves the head behind); create the event at
``seq + 1`` linking to the hash found. ``create_item`` fails with 409 when that position is
taken, so of two concurrent writers exactly one gets it; the other reads forward and tries
the next position (with jitter, up to 50 times, then ``StoreUnavailableError``). The
chain cannot fork: each position holds one event, written once, linking to the one event
before it. Only then is the head advanced (compare-and-swap, only ever forward), so the
head never points at an event that does not exist. No transactional batch is needed (the
test server cannot run one).

The head also catches what a bare chain cannot: if the trail ends before the event the head
records, its tail was deleted, and :meth:`CosmosAuditTrail.verify` says so.

- ``pending-<id>``: an **intent**, the outbox's write-ahead record: an act about to happen
  and the event that will record it (``type``, ``subject``, ``data``, and what tells
  whether it happened, ``probe``). No transaction spans the act's container (the DEKs,
  the run ledger) and this one, and the emulator the tests run cannot run a transactional
  batch, so an act and its event are made inseparable this way instead: the intent is
  written before the act, the event (marked with the intent's id) after it, then the
  intent is deleted. An intent left by a crash is resolved by
  :func:`field_encrypt.audit_outbox.reconcile` (``audit verify``, ``audit deliver``): the
  event is stored if the act happened and not stored yet, the intent dropped otherwise.
- ``delivery-<sha256 of the destination, 32 hex>``: a delivery checkpoint
  ``{"destination", "seq", "hash", "updated_at"}``, moved forward only, by compare-and-swap.

One logical partition holds at most 20 GB: about ten million events of 2 KB. Forward the
trail to a sink for longer retention.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import random
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

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
from field_encrypt.audit_delivery import DeliveryCheckpoint
from field_encrypt.backends.cosmos.db import (
    ContainerStore,
    CosmosDatabase,
    translate_errors,
)
from field_encrypt.errors import (
    AlreadyExistsError,
    ConcurrentUpdateError,
    StoreUnavailableError,
)

CONTAINER = "actiontrail"
HEAD = "head"
PENDING = "pending-"
MAX_ATTEMPTS = 50


def event_id(seq: int) -> str:
    """The item id of the event at ``seq`` (zero-padded, so ids sort as positions do)."""
    return f"{seq:020d}"


class CosmosAuditTrail(StoredTrail[CosmosDatabase], ContainerStore):
    """:class:`~field_encrypt.audit.AuditTrail` on a :class:`CosmosDatabase`."""

    def _open(self, database: CosmosDatabase) -> None:
        self.database = database
        self.container = database.container(CONTAINER)

    def __repr__(self) -> str:
        return f"CosmosAuditTrail({self.database!r}, product={self.product!r})"

    # -- the outbox (field_encrypt.audit.recorded) ----------------------------------------

    atomic = False
    """No transaction spans the act's container and this one: every act is announced."""

    @contextmanager
    def within(self) -> Iterator[None]:
        """A unit of work in name only (each write commits on its own here): what makes an
        act and its event inseparable on Cosmos DB is the intent written before the act."""
        yield

    def _record_intent(self, intent: PendingIntent) -> None:
        with translate_errors():
            self.container.create_item(
                {"id": PENDING + intent.id, "pk": self.product, "kind": "pending"}
                | stored_intent(intent)
            )

    def emitted_for(self, intent: str) -> bool:
        """Whether the event of ``intent`` is stored (its settling was interrupted)."""
        return bool(
            self._query(
                "SELECT c.seq FROM c WHERE c.pk = @pk AND c.kind = 'event' AND c.intent = @intent",
                {"@pk": self.product, "@intent": intent},
            )
        )

    def settle(self, intent: str) -> None:
        """Forget an intent (its event is stored, or its act did not happen)."""
        self._delete_item(PENDING + intent, self.product)

    def pending(self) -> list[PendingIntent]:
        """The intents not settled yet, oldest first."""
        items = self._query(
            "SELECT * FROM c WHERE c.pk = @pk AND c.kind = 'pending'", {"@pk": self.product}
        )
        items.sort(key=lambda i: (str(i["created_at"]), str(i["id"])))
        return [
            PendingIntent(
                id=str(i["id"])[len(PENDING) :],
                type=str(i["type"]),
                subject=str(i["subject"]),
                data=json.loads(i["data"]),
                check=json.loads(i.get("probe") or "{}"),
                created_at=str(i["created_at"]),
            )
            for i in items
        ]

    def _append(
        self, type: str, subject: str, payload: Mapping[str, Any], *, intent: str | None
    ) -> AuditEvent:
        """The event's item is marked with the intent it settles (outside the hashed
        CloudEvent), so the reconciler never stores it a second time."""
        for attempt in range(MAX_ATTEMPTS):
            seq, prevhash = self._last()
            event = self._next_event(type, subject, payload, prevhash=prevhash)
            try:
                with translate_errors():
                    self.container.create_item(
                        {
                            "id": event_id(seq + 1),
                            "pk": self.product,
                            "kind": "event",
                            "seq": seq + 1,
                            "type": type,
                            "subject": subject,
                            "time": event["time"],
                            "event": stored_text(event),
                            "hash": event["hash"],
                            **({"intent": intent} if intent else {}),
                        }
                    )
            except AlreadyExistsError:  # another writer took this position
                time.sleep(random.uniform(0, 0.002 * (attempt + 1)))
                continue
            self._advance_head(seq + 1, event["hash"])
            self._forward(event)
            return stored_event(seq + 1, event)
        raise StoreUnavailableError(f"the audit trail of {self.product} kept moving; try again")

    def _select(self, query: EventQuery) -> list[AuditEvent]:
        where = ["c.pk = @pk", "c.kind = 'event'"]
        parameters: dict[str, Any] = {"@pk": self.product}
        for attribute, operator, values in query.conditions():
            names = [f"@p{len(parameters) + i}" for i in range(len(values))]
            parameters |= {
                n: v.isoformat() if isinstance(v, dt.datetime) else v
                for n, v in zip(names, values, strict=True)
            }
            where.append(f"c.{attribute} {operator} ({', '.join(names)})")
        top = ""
        if query.limit is not None:
            top = "TOP @limit "
            parameters["@limit"] = int(query.limit)
        query_text = f"SELECT {top}c.seq, c.event FROM c WHERE {' AND '.join(where)} ORDER BY c.seq"
        items = self._query(query_text, parameters)
        return [stored_event(int(i["seq"]), json.loads(i["event"])) for i in items]

    def verify(self) -> ChainReport:
        items = self._query(
            "SELECT c.seq, c.event, c.hash FROM c WHERE c.pk = @pk AND c.kind = 'event' "
            "ORDER BY c.seq",
            {"@pk": self.product},
        )
        report = verify_chain((int(i["seq"]), json.loads(i["event"]), i["hash"]) for i in items)
        last = int(items[-1]["seq"]) if items else 0
        head = self._read(HEAD)
        if report.intact and head is not None and int(head["seq"]) > last:
            return ChainReport(
                events=report.events,
                intact=False,
                first_broken_seq=last + 1,
                reason=f"the head records event {head['seq']}: the events after {last} "
                "were deleted",
            )
        return report

    # -- delivery (field_encrypt.audit_delivery) ------------------------------------------

    def read_after(self, seq: int, *, limit: int) -> list[AuditEvent]:
        items = self._query(
            "SELECT TOP @limit c.seq, c.event FROM c WHERE c.pk = @pk AND c.kind = 'event' "
            "AND c.seq > @after ORDER BY c.seq",
            {"@pk": self.product, "@after": int(seq), "@limit": int(limit)},
        )
        return [stored_event(int(i["seq"]), json.loads(i["event"])) for i in items]

    def delivered(self, destination: str) -> DeliveryCheckpoint | None:
        item = self._read(_delivery_id(destination))
        if item is None:
            return None
        return DeliveryCheckpoint(
            destination=destination,
            seq=int(item["seq"]),
            hash=str(item["hash"]),
            updated_at=str(item["updated_at"]),
        )

    def record_delivered(self, destination: str, *, seq: int, hash: str) -> None:
        fields = {"kind": "delivery", "destination": destination, "hash": hash}
        fields["updated_at"] = self._clock().isoformat()
        if not self._move_forward(_delivery_id(destination), seq, fields):
            raise StoreUnavailableError(
                f"the delivery checkpoint of {self.product} kept moving; try again"
            )

    # -- the append ----------------------------------------------------------------------

    def _last(self) -> tuple[int, str]:
        """The last event's position and hash: from the head, then reading forward."""
        head = self._read(HEAD)
        seq, last = (int(head["seq"]), str(head["hash"])) if head else (0, GENESIS)
        while (following := self._read(event_id(seq + 1))) is not None:
            seq, last = seq + 1, str(following["hash"])
        return seq, last

    def _advance_head(self, seq: int, hash: str) -> None:
        """Move the head forward to ``seq`` (never back), by compare-and-swap."""
        self._move_forward(HEAD, seq, {"kind": "head", "hash": hash})
        # If left behind: the next writer reads forward past it, so the event is not lost.

    def _move_forward(self, item_id: str, seq: int, fields: dict[str, Any]) -> bool:
        """Set the item to ``seq`` and ``fields`` unless it is at ``seq`` or past it
        already, by compare-and-swap; ``False`` if other writers kept winning."""
        for attempt in range(MAX_ATTEMPTS):
            current = self._read(item_id)
            if current is not None and int(current["seq"]) >= seq:
                return True
            try:
                self._write_over(current, {"id": item_id, "pk": self.product, "seq": seq, **fields})
            except (AlreadyExistsError, ConcurrentUpdateError):
                time.sleep(random.uniform(0, 0.002 * (attempt + 1)))
                continue
            return True
        return False

    def _read(self, item_id: str) -> dict[str, Any] | None:
        return self._read_item(item_id, self.product)

    def _query(self, query: str, parameters: Mapping[str, Any]) -> list[dict[str, Any]]:
        return self._query_items(query, parameters, partition_key=self.product)


def _delivery_id(destination: str) -> str:
    return "delivery-" + hashlib.sha256(destination.encode()).hexdigest()[:32]
