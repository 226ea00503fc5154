"""The run ledger: what every migration run did, and the leases that keep runs apart.

A run is one execution plan (mode, from and to MEK versions, number of shards) against
one product. It is split into ``shards`` parts; each part has a cursor, counters, an
optional list of pending items (new DEKs a document migration made but has not yet
settled) and a lease: the worker that holds an unexpired lease on a shard is the only
one allowed to move it on. A run whose worker died keeps its cursor; once the lease
expires, running the same command again (or another worker of the same run) takes the
shard over and resumes where the cursor says.

:class:`RunLedger` is the protocol a store implements (SQLite here; PostgreSQL and
Cosmos DB follow the same contract). Every method that decides on a lease must be
atomic: check and write in one transaction (or one conditional write).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Literal, Protocol, runtime_checkable

Mode = Literal[
    "rewrap-deks", "re-encrypt", "encrypt", "decrypt", "to-kek", "to-direct", "rotate-kek",
    "reindex",
]  # fmt: skip
MODES: tuple[Mode, ...] = (
    "rewrap-deks", "re-encrypt", "encrypt", "decrypt", "to-kek", "to-direct", "rotate-kek",
    "reindex",
)  # fmt: skip

RunStatus = Literal["running", "completed", "completed_with_failures", "abandoned"]
"""``running`` until every shard is done (a stopped or killed run stays ``running``)."""

ShardStatus = Literal["pending", "running", "stopped", "done"]


def iso(seconds: float | None) -> str | None:
    """Epoch seconds as an ISO 8601 UTC time (``None`` stays ``None``), for the reports of
    runs and key versions (here, not in ``keys``: ``status`` reports runs without loading
    the key-version commands)."""
    if seconds is None:
        return None
    return dt.datetime.fromtimestamp(seconds, dt.UTC).isoformat(timespec="seconds")


@dataclass(frozen=True, slots=True, kw_only=True)
class RunPlan:
    """What a run does. Running the same plan again resumes the open run."""

    mode: Mode
    from_version: str | None
    """``--old-mek-version``: only items under this version (``None``: any other version)."""
    to_version: str | None
    """The target MEK version (``None`` for ``decrypt``)."""
    shards: int = 1


@dataclass(frozen=True, slots=True, kw_only=True)
class NewRun:
    """What :meth:`RunLedger.open_run` opens (or resumes): the product's run of ``plan``,
    with what was counted before it (``estimated_total`` items to migrate,
    ``skipped_at_start`` already on the target)."""

    product: str
    plan: RunPlan
    estimated_total: int
    skipped_at_start: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Counters:
    """What a shard (or a whole run) has done so far.

    ``matched``: items the run selected; ``changed``: items it rewrapped, re-encrypted,
    encrypted or decrypted; ``skipped``: items left alone (already on the target, or
    changed or deleted by someone else meanwhile); ``failed``: items recorded as failures;
    ``conflicts``: compare-and-swap writes lost to a concurrent writer and retried.
    """

    matched: int = 0
    changed: int = 0
    skipped: int = 0
    failed: int = 0
    conflicts: int = 0

    def __add__(self, other: Counters) -> Counters:
        return Counters(
            **{f.name: getattr(self, f.name) + getattr(other, f.name) for f in fields(self)}
        )

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


@dataclass(frozen=True, slots=True, kw_only=True)
class Failure:
    """One item the run could not migrate, and why (the error's class and message)."""

    item: str
    """A dekId, or ``collection/documentId`` for the document modes."""
    reason: str
    shard: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class Progress:
    """What one checkpoint of a shard records (:meth:`RunLedger.checkpoint`): its new
    cursor, the counters to add, the failures met and the items left pending."""

    cursor: str | None
    delta: Counters
    failures: Sequence[Failure] = ()
    pending: Sequence[str] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class ShardState:
    """One shard of a run, as the ledger holds it."""

    run_id: str
    index: int
    status: ShardStatus
    cursor: str | None
    pending: tuple[str, ...] = ()
    """Items to settle before moving on (a document migration's new DEKs, as JSON)."""
    counters: Counters = field(default_factory=Counters)
    owner: str | None = None
    lease_expires_at: float | None = None
    heartbeat_at: float | None = None

    def leased(self, now: float) -> bool:
        """Whether a worker holds an unexpired lease on this shard."""
        return self.owner is not None and (self.lease_expires_at or 0.0) > now


@dataclass(frozen=True, slots=True, kw_only=True)
class RunRecord:
    """One run and its shards; its counters are the sum of its shards'."""

    run_id: str
    product: str
    plan: RunPlan
    status: RunStatus
    started_at: float
    finished_at: float | None
    estimated_total: int
    """Items the run expected to match when it was created (for progress and ETA)."""
    skipped_at_start: int
    """Items already in the desired state when the run was created."""
    shards: tuple[ShardState, ...]

    @property
    def counters(self) -> Counters:
        total = Counters(skipped=self.skipped_at_start)
        for shard in self.shards:
            total = total + shard.counters
        return total

    @property
    def finished(self) -> bool:
        return self.status != "running"

    def shard(self, index: int) -> ShardState:
        return self.shards[index]

    def leases(self, now: float) -> list[ShardState]:
        """The shards a live worker holds now."""
        return [s for s in self.shards if s.leased(now)]

    def with_shard(self, state: ShardState) -> RunRecord:
        shards = list(self.shards)
        shards[state.index] = state
        return replace(self, shards=tuple(shards))


@dataclass(frozen=True, slots=True, kw_only=True)
class BackupRecord:
    """A backup of the dek_store that ``field-encrypt backup`` wrote."""

    product: str
    at: float
    path: str
    count: int
    checksum: str


@runtime_checkable
class RunLedger(Protocol):
    """Where migration runs, their cursors, failures and leases are kept.

    Times are seconds since the epoch (the caller passes ``now``, so tests inject a
    clock). A lease is held by ``owner`` on one shard until ``lease_expires_at``.
    """

    def open_run(self, *, new: NewRun, now: float) -> tuple[RunRecord, bool]:
        """The product's open run with ``new.plan`` (and ``True``: resumed), or a new one
        (``False``).

        Atomic. An open run with another plan is abandoned first when nobody holds a
        lease on it and it has nothing pending; otherwise :class:`LeaseHeldError`
        (a live lease) or :class:`RotationError` (pending items: finish that run first).
        """
        ...

    def get_run(self, run_id: str) -> RunRecord:
        """One run; ``NotFoundError`` if there is none."""
        ...

    def latest_runs(self, product: str, *, limit: int = 10) -> list[RunRecord]:
        """The product's most recent runs, newest first."""
        ...

    def acquire_shard(
        self, run_id: str, index: int, *, owner: str, now: float, ttl: float
    ) -> ShardState:
        """Take the lease on one shard for ``ttl`` seconds. Atomic.

        Raises :class:`LeaseHeldError` if another run of the product holds any live
        lease, another owner holds this shard's, or the run is no longer running (another
        run with a different plan abandoned it after it was opened).
        """
        ...

    def renew_lease(self, run_id: str, index: int, *, owner: str, now: float, ttl: float) -> None:
        """Extend ``owner``'s lease; :class:`LeaseHeldError` if it was lost meanwhile."""
        ...

    def checkpoint(
        self, run_id: str, index: int, *, owner: str, now: float, ttl: float, progress: Progress
    ) -> None:
        """Record ``progress`` (cursor, counters += delta, failures, pending) and renew the
        lease.

        One atomic write; :class:`LeaseHeldError` if ``owner`` no longer holds the shard.
        """
        ...

    def release_shard(
        self, run_id: str, index: int, *, owner: str, now: float, done: bool
    ) -> RunRecord:
        """Give the lease up (``done``: the shard is finished, else ``stopped``).

        When the last shard is done, the run ends ``completed`` (or
        ``completed_with_failures``). Returns the run as it now stands.
        """
        ...

    def failures(self, run_id: str, *, limit: int = 10) -> tuple[list[Failure], int]:
        """The first ``limit`` failures of a run and how many there are in all."""
        ...

    def live_leases(self, product: str, *, now: float) -> list[tuple[RunRecord, ShardState]]:
        """Every shard of the product's open runs that a worker holds now."""
        ...

    def record_backup(self, backup: BackupRecord) -> None:
        """Remember a dek_store backup (preflight reports the time since the last one)."""
        ...

    def last_backup(self, product: str) -> BackupRecord | None:
        """The most recent backup of the product's dek_store, if any."""
        ...
