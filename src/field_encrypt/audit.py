"""The audit trail (``actiontrail``): tamper-evident domain events for everything that touches keys.

Events are CloudEvents 1.0 shaped (``specversion``, ``type``, ``source``, ``id``, ``time``,
``subject``, ``datacontenttype``, ``data``) with two extension attributes that chain them:
``prevhash`` (the ``hash`` of the event before, or 64 zeros for the first) and ``hash``
(SHA-256 over the canonical JSON of the event without ``hash``). Any edit, deletion,
insertion or reordering of stored events breaks the chain, and :meth:`AuditTrail.verify`
names the first broken link.

Events never hold key material: ``data`` takes only text, numbers, booleans, ``None`` and
lists/dicts of them, and refuses ``bytes`` outright.

How the trail reaches the code that emits: a product's runtime builds one trail in its own
database (:func:`field_encrypt.backends.registry.open_audit_trail`) and hands it to its
:class:`~field_encrypt.envelope.FieldEncryptor` (shred, decrypt denied) and to
:class:`~field_encrypt.products.ProductRuntime` (the rotation engine and the CLI). Where
no trail is given, nothing is emitted. ``docs/audit.md`` lists every event and its data.

The trail is also the **outbox**: an act and its event are stored together or not at all
(:func:`recorded`, :class:`Outbox`): in one transaction on SQLite and PostgreSQL, through a
write-ahead intent where the act is outside that transaction (the key service; every act
on Cosmos DB), resolved after a crash by :func:`field_encrypt.audit_outbox.reconcile`.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, Protocol, TextIO, TypeVar

from field_encrypt.errors import ConfigurationError, RotationError, StoreError

GENESIS = "0" * 64
D = TypeVar("D")
"""The database type of a :class:`StoredTrail`."""
TYPE_PREFIX = "io.field-encrypt."

# Every event type the library and CLI emit, so documentation and tests can list them.
MEK_VERSION_CREATED = "io.field-encrypt.mek.version.created"
MEK_VERSION_ENABLED = "io.field-encrypt.mek.version.enabled"
MEK_VERSION_DISABLED = "io.field-encrypt.mek.version.disabled"
MEK_VERSION_RETIRED = "io.field-encrypt.mek.version.retired"
MEK_VERSION_COMPROMISED = "io.field-encrypt.mek.version.compromised"
RUN_STARTED = "io.field-encrypt.run.started"
RUN_PROGRESS = "io.field-encrypt.run.progress"
RUN_COMPLETED = "io.field-encrypt.run.completed"
RUN_FAILED = "io.field-encrypt.run.failed"
DEK_REWRAP_FAILED = "io.field-encrypt.dek.rewrap.failed"
DEK_SHREDDED = "io.field-encrypt.dek.shredded"
DEK_REWRAPPED_LAZILY = "io.field-encrypt.dek.rewrapped.lazily"
DOCUMENT_REENCRYPTED = "io.field-encrypt.document.reencrypted"
DOCUMENT_BACKFILLED = "io.field-encrypt.document.backfilled"
DECRYPT_DENIED = "io.field-encrypt.decrypt.denied"
ROTATION_STAGE = "io.field-encrypt.rotation.stage"
KEK_CREATED = "io.field-encrypt.kek.created"
KEK_REWRAPPED = "io.field-encrypt.kek.rewrapped"
KEK_DELETED = "io.field-encrypt.kek.deleted"
DEK_RESTORED = "io.field-encrypt.dek.restored"
LEASE_RECLAIMED = "io.field-encrypt.run.lease.reclaimed"
DEK_COLLECTED = "io.field-encrypt.dek.collected"
INDEX_KEY_CREATED = "io.field-encrypt.index-key.created"
INDEX_KEY_RETIRED = "io.field-encrypt.index-key.retired"
DOCUMENT_REINDEXED = "io.field-encrypt.document.reindexed"

EVENT_TYPES = (
    MEK_VERSION_CREATED, MEK_VERSION_ENABLED, MEK_VERSION_DISABLED, MEK_VERSION_RETIRED,
    MEK_VERSION_COMPROMISED, RUN_STARTED, RUN_PROGRESS, RUN_COMPLETED, RUN_FAILED,
    DEK_REWRAP_FAILED, DEK_SHREDDED, DOCUMENT_REENCRYPTED, DOCUMENT_BACKFILLED,
    DECRYPT_DENIED, ROTATION_STAGE, KEK_CREATED, KEK_REWRAPPED, KEK_DELETED,
    DEK_REWRAPPED_LAZILY, DEK_RESTORED, LEASE_RECLAIMED, DEK_COLLECTED, INDEX_KEY_CREATED,
    INDEX_KEY_RETIRED, DOCUMENT_REINDEXED,
)  # fmt: skip
KEK_EVENT_TYPES = (KEK_CREATED, KEK_REWRAPPED, KEK_DELETED)
"""Emitted only by a product with the KEK tier (``FIELD_ENCRYPT_KEY_LAYOUT=kek``)."""
LAZY_EVENT_TYPES = (DEK_REWRAPPED_LAZILY,)
"""Emitted only by a process with lazy rewrap on (``FIELD_ENCRYPT_LAZY_REWRAP=true``)."""
RECOVERY_EVENT_TYPES = (DEK_RESTORED, LEASE_RECLAIMED, DEK_COLLECTED)
"""Emitted only in recovery: a damaged dek_store repaired (``restore``), the lease of a
run killed on this host taken over, orphaned DEKs deleted (``collect-orphans``)."""
INDEX_EVENT_TYPES = (INDEX_KEY_CREATED, INDEX_KEY_RETIRED, DOCUMENT_REINDEXED)
"""Emitted only for a product with blind indexes (``field_encrypt.blind_index``)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class AuditEvent:
    """One stored event. ``seq`` is its position in the product's trail."""

    seq: int
    id: str
    type: str
    source: str
    subject: str
    time: str
    data: Mapping[str, Any] = field(default_factory=dict)
    prevhash: str
    hash: str

    def cloudevent(self) -> dict[str, Any]:
        """The event as a CloudEvents 1.0 JSON object (``prevhash``/``hash`` as extensions)."""
        return {
            "specversion": "1.0",
            "id": self.id,
            "type": self.type,
            "source": self.source,
            "subject": self.subject,
            "time": self.time,
            "datacontenttype": "application/json",
            "data": dict(self.data),
            "prevhash": self.prevhash,
            "hash": self.hash,
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class ChainReport:
    """What :meth:`AuditTrail.verify` found."""

    events: int
    intact: bool
    first_broken_seq: int | None = None
    reason: str | None = None
    head: str | None = None
    """The ``hash`` of the last event (of an intact chain): record it elsewhere, and a
    later truncation of the trail's tail shows as a head that is no longer there."""


def event_hash(event: Mapping[str, Any]) -> str:
    """SHA-256 over the canonical JSON of a CloudEvent without its ``hash`` attribute."""
    body = {k: v for k, v in event.items() if k != "hash"}
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


def checked_data(type: str, data: Mapping[str, Any] | None) -> dict[str, Any]:
    """An event's ``data`` as a new dict, after checking the type's namespace and the values.

    Every trail calls this before any I/O, so a refused event leaves nothing stored.
    """
    if not type.startswith(TYPE_PREFIX):
        raise ConfigurationError(f"audit event type must start with {TYPE_PREFIX!r}")
    payload = dict(data or {})
    _check_data(payload)
    return payload


def new_event(
    *,
    product: str,
    type: str,
    subject: str,
    data: Mapping[str, Any],
    time: dt.datetime,
    prevhash: str,
) -> dict[str, Any]:
    """The CloudEvent that follows ``prevhash`` in ``product``'s trail, with its ``hash``."""
    event: dict[str, Any] = {
        "specversion": "1.0",
        "id": uuid.uuid4().hex,
        "type": type,
        "source": f"field-encrypt/{product}",
        "subject": subject,
        "time": time.isoformat(),
        "datacontenttype": "application/json",
        "data": dict(data),
        "prevhash": prevhash,
    }
    event["hash"] = event_hash(event)
    return event


def stored_text(event: Mapping[str, Any]) -> str:
    """The JSON text a store keeps for an event (text, so numbers come back as written)."""
    return json.dumps(event, sort_keys=True, ensure_ascii=False)


def _check_data(value: object, path: str = "data") -> None:
    if isinstance(value, bytes | bytearray | memoryview):
        raise ConfigurationError(f"audit {path} must not hold bytes (key material is never logged)")
    if isinstance(value, Mapping):
        for k, v in value.items():
            if not isinstance(k, str):
                raise ConfigurationError(f"audit {path} keys must be strings")
            _check_data(v, f"{path}.{k}")
    elif isinstance(value, list | tuple):
        for i, v in enumerate(value):
            _check_data(v, f"{path}[{i}]")
    elif not isinstance(value, str | int | float | bool | type(None)):
        raise ConfigurationError(f"audit {path} has an unsupported type {type(value).__name__}")


class AuditSink(Protocol):
    """Somewhere events are forwarded after they are stored (a file, stdout, a bus)."""

    def send(self, event: Mapping[str, Any]) -> None: ...


class JsonLinesSink:
    """Appends each event as one JSON line to a file, or to a stream such as stdout."""

    def __init__(self, target: str | Path | TextIO) -> None:
        self._target = target

    def __repr__(self) -> str:
        return f"JsonLinesSink({getattr(self._target, 'name', self._target)!r})"

    def send(self, event: Mapping[str, Any]) -> None:
        line = json.dumps(event, sort_keys=True, ensure_ascii=False) + "\n"
        if isinstance(self._target, str | Path):
            with open(self._target, "a", encoding="utf-8") as out:
                out.write(line)
        else:
            self._target.write(line)
            self._target.flush()


def sink_from_setting(value: str | None) -> AuditSink | None:
    """``FIELD_ENCRYPT_AUDIT_SINK``: empty for none, ``stdout``, or a JSON-lines file path."""
    if not value:
        return None
    if value == "stdout":
        return JsonLinesSink(sys.stdout)
    return JsonLinesSink(Path(value))


class AuditTrail(Protocol):
    """A product's append-only, hash-chained event log."""

    def emit(self, type: str, *, subject: str, data: Mapping[str, Any] | None = None) -> AuditEvent:
        """Append an event (and forward it to the sinks)."""
        ...

    def events(
        self,
        *,
        types: Sequence[str] = (),
        subject: str | None = None,
        since: dt.datetime | None = None,
        until: dt.datetime | None = None,
        limit: int | None = None,
    ) -> list[AuditEvent]:
        """Stored events in order, filtered."""
        ...

    def verify(self) -> ChainReport:
        """Walk the chain and say whether it is intact, and where it first breaks."""
        ...


@dataclass(frozen=True, slots=True, kw_only=True)
class PendingIntent:
    """An act announced (:meth:`Outbox.intend`) whose event was not stored yet."""

    id: str
    type: str
    subject: str
    data: Mapping[str, Any]
    created_at: str
    check: Mapping[str, Any] = field(default_factory=dict)
    """What :func:`field_encrypt.audit_outbox.reconcile` needs to tell whether the act
    happened (a run id and shard, a DEK id), beside ``data``."""


class Outbox(Protocol):
    """A trail that records acts atomically with their events (the transactional outbox).

    :meth:`within` is a unit of work. Where :attr:`atomic` (SQLite, PostgreSQL) it is one
    database transaction that the act's own writes join, so its events are stored with
    the act's rows or not at all. An act with a part outside that transaction (a key
    service's enable/disable; on Cosmos DB every act, see ``docs/audit.md``) is announced
    first with :meth:`intend`, and the unit stores its event (:meth:`emit_for`) and
    settles the intent; an intent still pending after a crash is resolved by
    :func:`field_encrypt.audit_outbox.reconcile`. Call sites use :func:`recorded`.
    """

    atomic: bool

    def within(self) -> AbstractContextManager[None]: ...

    def intend(
        self,
        type: str,
        *,
        subject: str,
        data: Mapping[str, Any] | None = None,
        check: Mapping[str, Any] | None = None,
    ) -> str: ...

    def emit_for(
        self, intent: str | None, type: str, *, subject: str, data: Mapping[str, Any]
    ) -> AuditEvent:
        """:meth:`AuditTrail.emit` of the event an intent announced (marked with it where the
        settling is not in the same transaction, so the reconciler does not store it twice)."""
        ...

    def settle(self, intent: str) -> None: ...

    def pending(self) -> list[PendingIntent]: ...


def unit_of_work(trail: AuditTrail | None) -> AbstractContextManager[None]:
    """The trail's unit of work (:meth:`Outbox.within`), or nothing for a trail without one."""
    within = getattr(trail, "within", None)
    return within() if within is not None else nullcontext()


@dataclass(slots=True)
class Recording:
    """The event an act in :func:`recorded` will be recorded by: its ``data`` may still be
    added to, its ``subject`` named once the act knows it (a MEK version's number), or the
    event dropped (:meth:`cancel`: the act turned out not to need one)."""

    data: dict[str, Any]
    cancelled: bool = False
    subject: str = ""

    def cancel(self) -> None:
        self.cancelled = True


@contextmanager
def recorded(
    trail: AuditTrail | None,
    type: str,
    *,
    subject: str,
    data: Mapping[str, Any] | None = None,
    external: bool = False,
    check: Mapping[str, Any] | None = None,
    refusals: tuple[type[BaseException], ...] = (ConfigurationError, RotationError),
) -> Iterator[Recording]:
    """An act (the block) and its event, stored together or not at all.

    On a trail whose units are database transactions, the act's writes and the event are
    one transaction. When the act is ``external`` (not only rows in the product's
    database), or the trail has no such transactions (Cosmos DB), the event is first
    announced as an intent (``data`` as given, and ``check`` for the reconciler),
    committed before the act; the event then is stored and the intent settled after it.
    A crash anywhere in between leaves the intent, which
    :func:`field_encrypt.audit_outbox.reconcile` resolves. An error in the block leaves it
    too (the act may have happened before the error), except a refusal
    (``refusals``: ``ConfigurationError``, ``RotationError`` such as a lease held by another
    worker), which the act raises before acting; a block that may raise one after acting
    (a page of documents written, then its checkpoint refused) passes ``refusals=()``.
    """
    recording = Recording(dict(data or {}), subject=subject)
    if trail is None:
        yield recording
        return
    if not hasattr(trail, "intend"):  # a trail without an outbox: the event after the act
        yield recording
        if not recording.cancelled:
            trail.emit(type, subject=recording.subject, data=recording.data)
        return
    outbox: Any = trail
    intent = None
    if external or not outbox.atomic:
        intent = outbox.intend(type, subject=subject, data=recording.data, check=check)
    refused = False
    try:
        with outbox.within():
            try:
                yield recording
            except refusals:
                refused = True  # a refusal: raised before the act, by design
                raise
            if not recording.cancelled:
                outbox.emit_for(intent, type, subject=recording.subject, data=recording.data)
            if intent is not None:
                outbox.settle(intent)
    except BaseException:
        if refused and intent is not None:
            with suppress(StoreError):  # left pending otherwise: reconciled later
                outbox.settle(intent)
        raise


def verify_chain(rows: Iterable[tuple[int, dict[str, Any], str]]) -> ChainReport:
    """Check a sequence of ``(seq, event, stored hash)`` links; shared by every store."""
    previous = GENESIS
    count = 0
    for seq, event, stored in rows:
        count += 1
        if event.get("prevhash") != previous:
            return ChainReport(
                events=count, intact=False, first_broken_seq=seq,
                reason="prevhash does not match the event before (deleted, inserted or reordered)",
            )  # fmt: skip
        if event.get("hash") != stored or event_hash(event) != stored:
            return ChainReport(
                events=count, intact=False, first_broken_seq=seq,
                reason="hash does not match the event's content (edited)",
            )  # fmt: skip
        previous = stored
    return ChainReport(events=count, intact=True, head=previous if count else None)


def stored_event(seq: int, event: Mapping[str, Any]) -> AuditEvent:
    """The :class:`AuditEvent` at ``seq`` of a stored CloudEvent."""
    return AuditEvent(
        seq=seq,
        id=event["id"],
        type=event["type"],
        source=event["source"],
        subject=event["subject"],
        time=event["time"],
        data=event.get("data", {}),
        prevhash=event["prevhash"],
        hash=event["hash"],
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class EventQuery:
    """The filters of :meth:`AuditTrail.events`, as a stored trail's :meth:`StoredTrail._select`
    gets them."""

    types: tuple[str, ...] = ()
    subject: str | None = None
    since: dt.datetime | None = None
    until: dt.datetime | None = None
    limit: int | None = None

    def conditions(self) -> list[tuple[str, str, list[Any]]]:
        """``(attribute, operator, values)`` for each filter given, in this order: ``type IN``
        (the values), ``subject =``, ``time >=`` (since), ``time <`` (until)."""
        given: list[tuple[str, str, list[Any]]] = [
            ("type", "IN", list(self.types)),
            ("subject", "=", [] if self.subject is None else [self.subject]),
            ("time", ">=", [] if self.since is None else [self.since]),
            ("time", "<", [] if self.until is None else [self.until]),
        ]
        return [condition for condition in given if condition[2]]


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class StoredTrail(Generic[D]):
    """What every trail kept in a database shares (SQL, Cosmos DB): the product, the sinks
    and the clock; the event that follows the chain head; :meth:`events`' filters; an
    intent's record. A backend stores and reads: it implements :meth:`_open` (its place in
    the database ``D``), :meth:`_select`, :meth:`_record_intent`, and ``emit`` (reading the
    chain head, appending after it)."""

    def __init__(
        self,
        database: D,
        *,
        product: str,
        sinks: Iterable[AuditSink] = (),
        clock: Callable[[], dt.datetime] = _now,
    ) -> None:
        self.product = product
        self.sinks = list(sinks)
        self._clock = clock
        self._open(database)

    def _open(self, database: D) -> None:
        raise NotImplementedError

    def _next_event(
        self,
        type: str,
        subject: str,
        payload: Mapping[str, Any],
        *,
        prevhash: str,
        time: dt.datetime | None = None,
    ) -> dict[str, Any]:
        """The event after the chain head whose hash is ``prevhash``, hashed (now, unless
        ``time``)."""
        return new_event(
            product=self.product,
            type=type,
            subject=subject,
            data=payload,
            time=self._clock() if time is None else time,
            prevhash=prevhash,
        )

    def _forward(self, event: Mapping[str, Any]) -> None:
        for sink in self.sinks:
            sink.send(event)

    def emit(self, type: str, *, subject: str, data: Mapping[str, Any] | None = None) -> AuditEvent:
        """Append an event after the chain head (and forward it to the sinks)."""
        return self._append(type, subject, checked_data(type, data), intent=None)

    def emit_for(
        self, intent: str | None, type: str, *, subject: str, data: Mapping[str, Any]
    ) -> AuditEvent:
        """:meth:`emit` of the event ``intent`` announced (:meth:`Outbox.emit_for`)."""
        return self._append(type, subject, checked_data(type, data), intent=intent)

    def _append(
        self, type: str, subject: str, payload: Mapping[str, Any], *, intent: str | None
    ) -> AuditEvent:
        """Store the event after the chain head (:meth:`_next_event`), checked ``payload``
        its data; the backend marks it with ``intent`` where settling it is a later write."""
        raise NotImplementedError

    def events(
        self,
        *,
        types: Sequence[str] = (),
        subject: str | None = None,
        since: dt.datetime | None = None,
        until: dt.datetime | None = None,
        limit: int | None = None,
    ) -> list[AuditEvent]:
        """Stored events in order, filtered."""
        query = EventQuery(
            types=tuple(types), subject=subject, since=since, until=until, limit=limit
        )
        return self._select(query)

    def _select(self, query: EventQuery) -> list[AuditEvent]:
        raise NotImplementedError

    def intend(
        self,
        type: str,
        *,
        subject: str,
        data: Mapping[str, Any] | None = None,
        check: Mapping[str, Any] | None = None,
    ) -> str:
        """Record (and commit) that an act is about to happen; the intent's id."""
        intent = PendingIntent(
            id=uuid.uuid4().hex,
            type=type,
            subject=subject,
            data=checked_data(type, data),
            check=dict(check or {}),
            created_at=self._clock().isoformat(),
        )
        self._record_intent(intent)
        return intent.id

    def _record_intent(self, intent: PendingIntent) -> None:
        raise NotImplementedError


def stored_intent(intent: PendingIntent) -> dict[str, str]:
    """What a store keeps of an intent besides its id (``data`` and ``probe`` as JSON text)."""
    return {
        "type": intent.type,
        "subject": intent.subject,
        "data": json.dumps(dict(intent.data), sort_keys=True),
        "probe": json.dumps(dict(intent.check), sort_keys=True),
        "created_at": intent.created_at,
    }


def full_type(name: str) -> str:
    """``mek.version.created`` or the full ``io.field-encrypt.mek.version.created``: the full type."""
    return name if name.startswith(TYPE_PREFIX) else TYPE_PREFIX + name


class DenialRecorder:
    """Emits ``decrypt.denied`` without letting a hot loop flood the trail.

    One event per ``(dekId, mekVersion)`` per ``window`` seconds, and at most ``burst``
    events per window in all; what was held back is counted in the next event
    (``suppressed``). A trail that cannot be written (the database is locked, say) never
    hides the denial itself: the failure is counted (``auditWritesFailed``) and reported
    with the next event that is written.
    """

    def __init__(
        self,
        trail: AuditTrail,
        *,
        window: float = 300.0,
        burst: int = 20,
        max_keys: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.trail = trail
        self.window = window
        self.burst = burst
        self.max_keys = max_keys
        self._clock = clock
        self._lock = threading.Lock()
        self._last: dict[tuple[str, str], float] = {}
        self._window_start = float("-inf")
        self._in_window = 0
        self._suppressed = 0
        self._failed = 0

    def __repr__(self) -> str:
        return f"DenialRecorder(window={self.window}, burst={self.burst})"

    def record(self, *, dek_id: str, mek_version: str, mek_name: str) -> None:
        """Note one denied unwrap; emit an event unless it repeats one just emitted."""
        now = self._clock()
        key = (dek_id, mek_version)
        with self._lock:
            if now - self._window_start >= self.window:
                self._window_start, self._in_window = now, 0
                self._last = {k: t for k, t in self._last.items() if now - t < self.window}
            last = self._last.get(key)
            if (last is not None and now - last < self.window) or self._in_window >= self.burst:
                self._suppressed += 1
                return
            if len(self._last) >= self.max_keys:
                self._last.pop(next(iter(self._last)))
            self._last[key] = now
            self._in_window += 1
            suppressed, self._suppressed = self._suppressed, 0
            failed, self._failed = self._failed, 0
        data: dict[str, Any] = {
            "dekId": dek_id,
            "mekName": mek_name,
            "mekVersion": mek_version,
            "reason": "KeyVersionDisabledError",
            "suppressed": suppressed,
        }
        if failed:
            data["auditWritesFailed"] = failed
        try:
            self.trail.emit(DECRYPT_DENIED, subject=f"dek/{dek_id}", data=data)
        except StoreError:
            with self._lock:
                self._failed += 1 + failed
                self._suppressed += suppressed
