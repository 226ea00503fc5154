"""A migration run's audit events: started, progress, completed or failed, and per item.

:class:`RunTrail` is what the run loop (``run.py``) tells about a run; it turns that into
events in the product's audit trail, and stays quiet when there is none. Progress is one
event per :data:`PROGRESS_BATCHES` checkpoints or per :data:`PROGRESS_SECONDS`, whichever
comes first, never one per DEK. Items that fail get an event each (``dek.rewrap.failed``
for a DEK: its dekId and the error's class, never a message that could quote a value),
up to :data:`MAX_ITEM_EVENTS` per process; the rest are counted in the final event.
Documents re-encrypted, backfilled or reindexed are recorded one event per page, listing
them, in one unit with the page's writes (:meth:`RunTrail.documents_recorded`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from typing import Any, Final

from field_encrypt.audit import (
    DEK_REWRAP_FAILED,
    DOCUMENT_BACKFILLED,
    DOCUMENT_REENCRYPTED,
    DOCUMENT_REINDEXED,
    RUN_COMPLETED,
    RUN_FAILED,
    RUN_PROGRESS,
    RUN_STARTED,
    AuditTrail,
    Recording,
    recorded,
)
from field_encrypt.errors import StoreError
from field_encrypt.rotation.ledger import Counters, Failure, RunRecord

PROGRESS_BATCHES: Final = 50
PROGRESS_SECONDS: Final = 60.0
MAX_ITEM_EVENTS: Final = 1000


def reason_class(reason: str) -> str:
    """The error class a :class:`Failure` reason starts with (``"DecryptionError: ..."``)."""
    head = reason.split(":", 1)[0].strip()
    return head if head.isidentifier() else "Error"


class RunTrail:
    """The events of one worker's part in one run (one ``migrate`` invocation)."""

    def __init__(
        self,
        trail: AuditTrail | None,
        run: RunRecord,
        *,
        worker: tuple[int, int],
        clock: Callable[[], float],
    ) -> None:
        self.trail = trail
        self.run = run
        self.worker = f"{worker[0] + 1}/{worker[1]}"
        self.clock = clock
        self.subject = f"run/{run.run_id}"
        self.started_emitted = False
        self.done = Counters()
        self._batches = 0
        self._last_progress = 0.0
        self._item_events = 0
        self._items_held_back = 0

    def __repr__(self) -> str:
        return f"RunTrail({self.subject!r})"

    def _emit(self, type: str, data: Mapping[str, Any], *, subject: str | None = None) -> None:
        if self.trail is not None:
            self.trail.emit(type, subject=subject or self.subject, data=data)

    def base(self) -> dict[str, Any]:
        """What every event of the run holds (its id, mode, versions, this worker)."""
        return self._base()

    def _base(self) -> dict[str, Any]:
        plan = self.run.plan
        return {
            "runId": self.run.run_id,
            "mode": plan.mode,
            "fromVersion": plan.from_version,
            "toVersion": plan.to_version,
            "worker": self.worker,
        }

    # -- what the run loop calls ---------------------------------------------------------

    def started(self, *, resumed: bool, emitted: bool = False) -> None:
        """Once per invocation, when this worker first takes a shard with work left
        (``emitted``: the event was already stored with the lease, see ``run._acquire``)."""
        if self.started_emitted:
            return
        self.started_emitted = True
        self._last_progress = self.clock()
        if not emitted:
            self._emit(RUN_STARTED, self.started_data(resumed=resumed))

    def started_data(self, *, resumed: bool) -> dict[str, Any]:
        """The data of ``run.started``."""
        return {
            **self._base(),
            "shards": self.run.plan.shards,
            "resumed": resumed,
            "estimatedTotal": self.run.estimated_total,
            "skippedAtStart": self.run.skipped_at_start,
        }

    def checkpoint(self, delta: Counters, failures: Sequence[Failure]) -> None:
        """After each checkpoint: per-item failure events, and progress when due."""
        self.done = self.done + delta
        if self.run.plan.mode in ("rewrap-deks", "to-kek", "to-direct", "rotate-kek"):
            for failure in failures:
                if self._item_events >= MAX_ITEM_EVENTS:
                    self._items_held_back += 1
                    continue
                self._item_events += 1
                self._emit(
                    DEK_REWRAP_FAILED,
                    {
                        "dekId": failure.item,
                        "reason": reason_class(failure.reason),
                        "runId": self.run.run_id,
                        "toVersion": self.run.plan.to_version,
                    },
                    subject=f"dek/{failure.item}",
                )
        if not (delta.matched or delta.failed or delta.changed):
            return
        self._batches += 1
        now = self.clock()
        if self._batches >= PROGRESS_BATCHES or now - self._last_progress >= PROGRESS_SECONDS:
            self.progress()

    def progress(self, *, worker_done: bool = False) -> None:
        """Counters so far for this worker (``workerDone``: its part is finished)."""
        self._batches = 0
        self._last_progress = self.clock()
        self._emit(RUN_PROGRESS, {**self._base(), **self.done.as_dict(), "workerDone": worker_done})

    def _documents_type(self) -> str:
        mode = self.run.plan.mode
        return {"re-encrypt": DOCUMENT_REENCRYPTED, "reindex": DOCUMENT_REINDEXED}.get(
            mode, DOCUMENT_BACKFILLED
        )

    def _documents_data(
        self, collection: str, items: Sequence[Mapping[str, Any]], *, settled: bool
    ) -> dict[str, Any]:
        return {
            **self._base(),
            "collection": collection,
            "count": len(items),
            "settled": settled,
            "documents": [dict(item) for item in items],
        }

    def documents(
        self, collection: str, items: Sequence[Mapping[str, Any]], *, settled: bool = False
    ) -> None:
        """One page of documents migrated (``settled``: finished on resume after a crash).

        Settled steps are recorded only where the trail is not an outbox: on an outbox
        their page's unit (:meth:`documents_recorded`) recorded them with their writes, or
        left an intent that ``audit verify`` resolves, and a second event would name them
        twice.
        """
        if not items or (settled and hasattr(self.trail, "intend")):
            return
        self._emit(self._documents_type(), self._documents_data(collection, items, settled=settled))

    def documents_recorded(
        self, collection: str, announced: Sequence[Mapping[str, Any]], *, shard: int
    ) -> AbstractContextManager[Recording]:
        """The unit of one page's document writes and its event
        (:func:`~field_encrypt.audit.recorded`): the block migrates the page and sets the
        event's ``documents`` and ``count`` to those migrated (or cancels it when none
        were). On Cosmos DB the page is announced first, ``announced`` listing every
        document the page may migrate; ``audit verify`` keeps those whose write took effect.
        """
        return recorded(
            self.trail if announced else None,
            self._documents_type(),
            subject=self.subject,
            data=self._documents_data(collection, announced, settled=False),
            check={"shard": shard},
            refusals=(),  # the checkpoint may lose the lease after the writes: keep the intent
        )

    def completed(
        self,
        run: RunRecord,
        *,
        failure_count: int,
        remaining: int | None,
        duration_seconds: float,
    ) -> None:
        """The run is finished (every shard done): its totals."""
        self._emit(
            RUN_COMPLETED,
            self.completed_data(
                run,
                failure_count=failure_count,
                remaining=remaining,
                duration_seconds=duration_seconds,
            ),
        )

    def completed_data(
        self,
        run: RunRecord,
        *,
        failure_count: int,
        remaining: int | None,
        duration_seconds: float,
    ) -> dict[str, Any]:
        """The data of ``run.completed``."""
        return {
            **self._base(),
            "status": run.status,
            **run.counters.as_dict(),
            "failures": failure_count,
            "failureEventsHeldBack": self._items_held_back,
            "remaining": remaining,
            "durationSeconds": round(duration_seconds, 3),
        }

    def failed(self, error: BaseException, *, cursor: str | None) -> None:
        """This worker stopped before its part was done; the error's class, never key material.

        An audit write that fails here (the database being what failed, say) is noted on
        ``error`` instead of replacing it.
        """
        try:
            self._emit(
                RUN_FAILED,
                {
                    **self._base(),
                    "reason": type(error).__name__,
                    **self.done.as_dict(),
                    "failureEventsHeldBack": self._items_held_back,
                    "cursorSaved": cursor is not None,
                },
            )
        except StoreError as exc:
            error.add_note(f"the run.failed audit event could not be written: {exc}")
