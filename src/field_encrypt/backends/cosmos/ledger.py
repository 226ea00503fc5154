"""The run ledger in the product's Cosmos DB database: one container, ETag compare-and-swap.

Cosmos DB has no multi-item transactions outside one partition's batch (which the test
server cannot run), so every lease decision is one conditional write of one item: the
product's **head** item holds all of its open runs with their shards (a few runs of a few
shards: small). A decision reads the head, decides, and replaces it with ``If-Match`` on
the ETag it read; if another worker wrote in between (412) it reads again and decides
again. Two workers can therefore never both win a shard, and a worker whose lease was
taken over cannot checkpoint.

Container ``rotation_ledger``, partition key ``/pk`` = ``"ledger"`` for every item: the
ledger is tiny, and one logical partition lets a run be found by its id alone. Items:

- ``head:<product>``: ``{"runs": [run, ...]}``, the product's open runs (and runs that
  finished since the last decision, until their snapshot is written);
- ``run:<runId>``: the run's product and start time (for ``get_run`` and ``latest_runs``)
  and, once it finished, its final state;
- ``failure:<runId>:<digest>``: one failed item; ``backup:<product>:<uuid>``: one backup.

Failures are written before the checkpoint that counts them (idempotent: a re-run of
the same batch writes the same items). A finished run's snapshot is written before the
head drops it, so its final state is never lost.

Lease times are the workers' clocks (``now`` comes from the caller); keep the machines'
clocks in sync (NTP) to well under the lease TTL.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import random
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from field_encrypt.backends.common import abandoned as _abandoned
from field_encrypt.backends.common import iso as _iso
from field_encrypt.backends.common import new_run_fields, run_to_resume
from field_encrypt.backends.common import new_run_id as _new_run_id
from field_encrypt.backends.common import refuse_if_busy as _refuse_if_busy
from field_encrypt.backends.cosmos.db import (
    ContainerStore,
    CosmosDatabase,
    translate_errors,
)
from field_encrypt.errors import (
    AlreadyExistsError,
    ConcurrentUpdateError,
    LeaseHeldError,
    NotFoundError,
    StoreUnavailableError,
)
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

CONTAINER = "rotation_ledger"
PARTITION = "ledger"
MAX_ATTEMPTS = 50
T = TypeVar("T")


class _RunFinished(Exception):
    """The run has ended and left the head; ``run`` is its final state."""

    def __init__(self, run: RunRecord) -> None:
        super().__init__(run.run_id)
        self.run = run


@dataclass(slots=True)
class _Unchanged:
    """What a decision returns when it wrote nothing (the head need not be replaced)."""

    value: Any


class CosmosRunLedger(ContainerStore):
    """:class:`~field_encrypt.rotation.ledger.RunLedger` on a :class:`CosmosDatabase`."""

    container_name = CONTAINER

    def __init__(self, database: CosmosDatabase) -> None:
        super().__init__(database)
        self._products: dict[str, str] = {}  # run id -> product (never changes)

    # -- runs --------------------------------------------------------------------------

    def open_run(self, *, new: NewRun, now: float) -> tuple[RunRecord, bool]:
        run_id = _new_run_id(now)

        def decide(runs: list[dict[str, Any]]) -> Any:
            open_runs = [r for r in runs if r["status"] == "running"]
            resumed = run_to_resume([_run(r) for r in open_runs], new.plan, now)
            if resumed is not None:
                return _Unchanged((resumed, True))
            for run in open_runs:
                run["status"], run["finished_at"] = "abandoned", now
            fields = new_run_fields(run_id, new) | {
                "status": "running",
                "started_at": now,
                "finished_at": None,
                "states": [_new_shard(i) for i in range(new.plan.shards)],
            }
            runs.append(fields)
            return (_run(fields), False)

        # The index item comes first, so a run in the head can always be found by its id;
        # when the open run is resumed instead, the unused index item is removed again.
        self._write(
            {
                "id": f"run:{run_id}",
                "pk": PARTITION,
                "kind": "run",
                "product": new.product,
                "startedAt": now,
                "final": None,
            }
        )
        record, resumed = self._decide(new.product, decide)
        if resumed:
            self._delete(f"run:{run_id}")
        return record, resumed

    def get_run(self, run_id: str) -> RunRecord:
        index = self._read(f"run:{run_id}")
        if index is None:
            raise NotFoundError(f"no migration run {run_id}")
        head = self._read(_head_id(index["product"]))
        for run in head["runs"] if head else []:
            if run["run_id"] == run_id:
                return _run(run)
        if index["final"] is None:
            raise NotFoundError(f"no migration run {run_id}")
        return _run(index["final"])

    def latest_runs(self, product: str, *, limit: int = 10) -> list[RunRecord]:
        index = self._query_items(
            "SELECT TOP @n * FROM c WHERE c.pk = @pk AND c.kind = 'run' "
            "AND c.product = @product ORDER BY c.startedAt DESC",
            {"@n": 2 * limit + 10, "@pk": PARTITION, "@product": product},  # room for orphans
            partition_key=PARTITION,
        )
        head = self._read(_head_id(product))
        live = {r["run_id"]: r for r in (head["runs"] if head else [])}
        runs = []
        for item in index:
            run_id = item["id"].removeprefix("run:")
            if run_id in live:
                runs.append(_run(live[run_id]))
            elif item["final"] is not None:
                runs.append(_run(item["final"]))
            # else: an index item whose run never reached the head (a crash in open_run)
        return runs[:limit]

    # -- leases ------------------------------------------------------------------------

    def acquire_shard(
        self, run_id: str, index: int, *, owner: str, now: float, ttl: float
    ) -> ShardState:
        def decide(runs: list[dict[str, Any]]) -> ShardState:
            run = _find(runs, run_id)
            for other in runs:
                if other["status"] == "running" and other["run_id"] != run_id:
                    _refuse_if_busy(_run(other), now)
            state = run["states"][index]
            shard = _shard(run_id, state)
            if shard.leased(now) and shard.owner != owner:
                raise LeaseHeldError(
                    f"run {run_id} shard {index + 1}/{run['shards']} is held by "
                    f"{shard.owner} until {_iso(shard.lease_expires_at)}"
                )
            state.update(
                owner=owner,
                lease_expires_at=now + ttl,
                heartbeat_at=now,
                status="done" if state["status"] == "done" else "running",
            )
            return _shard(run_id, state)

        try:
            return self._decide_for_run(run_id, decide)
        except _RunFinished as finished:  # nothing left to lease
            if finished.run.status == "abandoned":
                raise _abandoned(finished.run) from None
            return finished.run.shard(index)

    def renew_lease(self, run_id: str, index: int, *, owner: str, now: float, ttl: float) -> None:
        def decide(runs: list[dict[str, Any]]) -> None:
            state = _find(runs, run_id)["states"][index]
            if state["owner"] != owner:
                raise LeaseHeldError(
                    f"run {run_id} shard {index + 1}: lease lost to another worker"
                )
            state.update(lease_expires_at=now + ttl, heartbeat_at=now)

        try:
            self._decide_for_run(run_id, decide)
        except _RunFinished:
            raise LeaseHeldError(f"run {run_id} shard {index + 1}: the run has ended") from None

    def checkpoint(
        self, run_id: str, index: int, *, owner: str, now: float, ttl: float, progress: Progress
    ) -> None:
        self.database.each(
            self._write,
            [
                {
                    "id": f"failure:{run_id}:{_digest(f.item)}",
                    "pk": PARTITION,
                    "kind": "failure",
                    "runId": run_id,
                    "item": f.item,
                    "shard": f.shard,
                    "reason": f.reason,
                    "at": now,
                }
                for f in progress.failures
            ],
        )

        def decide(runs: list[dict[str, Any]]) -> None:
            state = _find(runs, run_id)["states"][index]
            if state["owner"] != owner:
                raise LeaseHeldError(
                    f"run {run_id} shard {index + 1}: lease lost to another worker"
                )
            counters = state["counters"]
            for name, value in progress.delta.as_dict().items():
                counters[name] = counters.get(name, 0) + value
            state.update(
                cursor=progress.cursor,
                pending=list(progress.pending),
                lease_expires_at=now + ttl,
                heartbeat_at=now,
            )

        try:
            self._decide_for_run(run_id, decide)
        except _RunFinished:
            raise LeaseHeldError(f"run {run_id} shard {index + 1}: the run has ended") from None

    def release_shard(
        self, run_id: str, index: int, *, owner: str, now: float, done: bool
    ) -> RunRecord:
        def decide(runs: list[dict[str, Any]]) -> RunRecord:
            run = _find(runs, run_id)
            state = run["states"][index]
            if state["owner"] == owner:
                state.update(
                    owner=None, lease_expires_at=None, status="done" if done else "stopped"
                )
            record = _run(run)
            if record.status == "running" and all(s.status == "done" for s in record.shards):
                run["status"] = "completed_with_failures" if record.counters.failed else "completed"
                run["finished_at"] = now
            return _run(run)

        try:
            return self._decide_for_run(run_id, decide)
        except _RunFinished as finished:
            return finished.run

    def failures(self, run_id: str, *, limit: int = 10) -> tuple[list[Failure], int]:
        parameters = {"@pk": PARTITION, "@run": run_id}
        where = "c.pk = @pk AND c.kind = 'failure' AND c.runId = @run"
        items = self._query_items(
            f"SELECT TOP @n * FROM c WHERE {where} ORDER BY c.at",
            {**parameters, "@n": limit},
            partition_key=PARTITION,
        )
        (count,) = self._query_items(
            f"SELECT VALUE COUNT(1) FROM c WHERE {where}",
            parameters,
            partition_key=PARTITION,
        )
        failures = [Failure(item=i["item"], reason=i["reason"], shard=i["shard"]) for i in items]
        return failures, int(count)

    def live_leases(self, product: str, *, now: float) -> list[tuple[RunRecord, ShardState]]:
        head = self._read(_head_id(product))
        runs = [_run(r) for r in (head["runs"] if head else []) if r["status"] == "running"]
        return [(run, s) for run in runs for s in run.leases(now)]

    # -- backups -----------------------------------------------------------------------

    def record_backup(self, backup: BackupRecord) -> None:
        self._write(
            {
                "id": f"backup:{_digest(backup.product)}:{uuid.uuid4().hex}",
                "pk": PARTITION,
                "kind": "backup",
                **dataclasses.asdict(backup),
            }
        )

    def last_backup(self, product: str) -> BackupRecord | None:
        items = self._query_items(
            "SELECT TOP 1 * FROM c WHERE c.pk = @pk AND c.kind = 'backup' "
            "AND c.product = @product ORDER BY c.at DESC",
            {"@pk": PARTITION, "@product": product},
            partition_key=PARTITION,
        )
        if not items:
            return None
        return BackupRecord(**{f.name: items[0][f.name] for f in dataclasses.fields(BackupRecord)})

    # -- the compare-and-swap loop -------------------------------------------------------

    def _decide_for_run(self, run_id: str, decide: Callable[[list[dict[str, Any]]], T]) -> T:
        """``decide`` on the head holding ``run_id``; ``_RunFinished`` if it left the head."""
        product = self._products.get(run_id)
        if product is None:
            index = self._read(f"run:{run_id}")
            if index is None:
                raise NotFoundError(f"no migration run {run_id}")
            product = self._products[run_id] = index["product"]

        def decide_on_run(runs: list[dict[str, Any]]) -> T:
            if not any(r["run_id"] == run_id for r in runs):
                raise _RunFinished(self.get_run(run_id))
            return decide(runs)

        result: T = self._decide(product, decide_on_run)
        return result

    def _decide(self, product: str, decide: Callable[[list[dict[str, Any]]], Any]) -> Any:
        """Read the head, apply ``decide`` to its runs, write it back if nobody wrote since."""
        for attempt in range(MAX_ATTEMPTS):
            head = self._read(_head_id(product))
            if head is None:
                head = {"id": _head_id(product), "pk": PARTITION, "kind": "head", "runs": []}
            self._settle(head)
            runs = copy.deepcopy(head["runs"])
            outcome = decide(runs)
            if isinstance(outcome, _Unchanged):
                return outcome.value
            try:
                self._write_over(head if "_etag" in head else None, {**_body(head), "runs": runs})
            except (ConcurrentUpdateError, AlreadyExistsError):
                time.sleep(random.uniform(0, 0.002 * (attempt + 1)))  # another worker wrote
                continue
            return outcome
        raise StoreUnavailableError(f"the ledger head of {product} kept changing; try again")

    def _settle(self, head: dict[str, Any]) -> None:
        """Snapshot the finished runs still in ``head`` and drop them from it (in memory)."""
        finished = [r for r in head["runs"] if r["status"] != "running"]
        for run in finished:
            self._write(
                {
                    "id": f"run:{run['run_id']}",
                    "pk": PARTITION,
                    "kind": "run",
                    "product": run["product"],
                    "startedAt": run["started_at"],
                    "final": run,
                }
            )
        head["runs"] = [r for r in head["runs"] if r["status"] == "running"]

    def _delete(self, item_id: str) -> None:
        self._delete_item(item_id, PARTITION)

    def _read(self, item_id: str) -> dict[str, Any] | None:
        return self._read_item(item_id, PARTITION)

    def _write(self, item: dict[str, Any]) -> None:
        with translate_errors():
            self.container.upsert_item(item)


def _head_id(product: str) -> str:
    return f"head:{_digest(product)}"


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def _body(item: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in item.items() if not k.startswith("_")}


def _find(runs: list[dict[str, Any]], run_id: str) -> dict[str, Any]:
    for run in runs:
        if run["run_id"] == run_id:
            return run
    raise NotFoundError(f"no open migration run {run_id}")


def _new_shard(index: int) -> dict[str, Any]:
    return {
        "index": index,
        "status": "pending",
        "cursor": None,
        "pending": [],
        "counters": {},
        "owner": None,
        "lease_expires_at": None,
        "heartbeat_at": None,
    }


def _shard(run_id: str, state: dict[str, Any]) -> ShardState:
    counters = state["counters"]
    return ShardState(
        run_id=run_id,
        index=state["index"],
        status=state["status"],
        cursor=state["cursor"],
        pending=tuple(state["pending"]),
        counters=Counters(**{k: int(v) for k, v in counters.items()}),
        owner=state["owner"],
        lease_expires_at=state["lease_expires_at"],
        heartbeat_at=state["heartbeat_at"],
    )


def _run(run: dict[str, Any]) -> RunRecord:
    return RunRecord(
        run_id=run["run_id"],
        product=run["product"],
        plan=RunPlan(
            mode=run["mode"],
            from_version=run["from_version"],
            to_version=run["to_version"],
            shards=run["shards"],
        ),
        status=run["status"],
        started_at=run["started_at"],
        finished_at=run["finished_at"],
        estimated_total=run["estimated_total"],
        skipped_at_start=run["skipped_at_start"],
        shards=tuple(_shard(run["run_id"], s) for s in run["states"]),
    )
