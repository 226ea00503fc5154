"""Rules every backend's run ledger and lifecycle store apply alike (no database code)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import uuid
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from field_encrypt.errors import LeaseHeldError, RotationError
from field_encrypt.rotation.ledger import NewRun, RunPlan, RunRecord

if TYPE_CHECKING:  # imported where used: the ledger (``status``) needs no lifecycle
    from field_encrypt.rotation.lifecycle import RotationState


def abandoned(run: RunRecord) -> LeaseHeldError:
    """Another run with a different plan was opened between this run's ``open_run`` and
    its ``acquire_shard``, and abandoned it: that run goes on, this one must not start."""
    return LeaseHeldError(
        f"migration run {run.run_id} ({run.plan.mode}) was abandoned: another run with a "
        "different plan took over the product; nothing was done"
    )


def refuse_if_busy(run: RunRecord, now: float) -> None:
    """Refuse to start or join anything while ``run`` is live or has items to settle."""
    live = run.leases(now)
    if live:
        held = live[0]
        raise LeaseHeldError(
            f"migration run {run.run_id} ({run.plan.mode}) is in flight: shard "
            f"{held.index + 1}/{run.plan.shards} is held by {held.owner} until "
            f"{iso(held.lease_expires_at)}; wait for it, or for its lease to expire"
        )
    if any(s.pending for s in run.shards):
        raise RotationError(
            f"migration run {run.run_id} ({run.plan.mode}) was interrupted with documents "
            "half-migrated; finish it first by re-running the same command"
        )


def run_to_resume(open_runs: Sequence[RunRecord], plan: RunPlan, now: float) -> RunRecord | None:
    """``open_run``'s choice: the open run with the same plan (resumed), or ``None`` once
    none of the others is busy (:func:`refuse_if_busy`): they are abandoned for a new run."""
    for run in open_runs:
        if run.plan == plan:
            return run
    for run in open_runs:
        refuse_if_busy(run, now)
    return None


def new_run_fields(run_id: str, new: NewRun) -> dict[str, Any]:
    """What a store records of a new run beside its times, status and shards."""
    plan = new.plan
    return {
        "run_id": run_id,
        "product": new.product,
        "mode": plan.mode,
        "from_version": plan.from_version,
        "to_version": plan.to_version,
        "shards": plan.shards,
        "estimated_total": new.estimated_total,
        "skipped_at_start": new.skipped_at_start,
    }


def new_run_id(now: float) -> str:
    """A run id that sorts by its start: ``run-<UTC stamp>-<8 hex>``."""
    stamp = dt.datetime.fromtimestamp(now, dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    return f"run-{stamp}-{uuid.uuid4().hex[:8]}"


def iso(seconds: float | None) -> str:
    """Epoch seconds as an ISO 8601 UTC time for messages; ``-`` for none."""
    if seconds is None:
        return "-"
    return dt.datetime.fromtimestamp(seconds, dt.UTC).isoformat(timespec="seconds")


def rotation_state(body: dict[str, Any], revision: int) -> RotationState:
    """A stored rotation state (fields this build does not know are dropped)."""
    from field_encrypt.rotation.lifecycle import RotationState

    known = {f.name for f in dataclasses.fields(RotationState)}
    return RotationState(**{k: v for k, v in body.items() if k in known}, revision=revision)
