"""Where each of a product's latest migration runs stands: what ``status`` and the console show.

One row per run, newest first, read from the run ledger only: mode, versions, state,
processed of the estimated total, the average rate since the run started, an ETA while it
runs, failures (count and first examples), conflicts, and each shard with the worker that
holds its lease now. Nothing here touches a key or a document.
"""

from __future__ import annotations

from typing import Any

from field_encrypt.products import ProductRuntime
from field_encrypt.rotation.ledger import RunLedger, RunRecord, iso

FAILURE_EXAMPLES = 3


def run_state(run: RunRecord, now: float) -> str:
    """``completed``, ``completed_with_failures``, ``abandoned``, ``in flight`` (a worker
    holds a lease) or ``interrupted (re-run the same command)``."""
    if run.finished:
        return run.status
    return "in flight" if run.leases(now) else "interrupted (re-run the same command)"


def run_row(ledger: RunLedger, run: RunRecord, *, now: float) -> dict[str, Any]:
    """One run as plain data (times ISO 8601, rate in items per second, ETA in seconds)."""
    failures, failure_count = ledger.failures(run.run_id, limit=FAILURE_EXAMPLES)
    counters = run.counters
    processed = counters.matched
    total = max(run.estimated_total, processed)
    end = run.finished_at if run.finished_at is not None else now
    elapsed = max(end - run.started_at, 0.0)
    rate = processed / elapsed if elapsed > 0 else 0.0
    eta = None
    if not run.finished and rate > 0:
        eta = round(max(total - processed, 0) / rate, 1)
    return {
        "run_id": run.run_id,
        "mode": run.plan.mode,
        "from_version": run.plan.from_version,
        "to_version": run.plan.to_version,
        "state": run_state(run, now),
        "started_at": iso(run.started_at),
        "finished_at": iso(run.finished_at),
        "estimated_total": run.estimated_total,
        "processed": processed,
        "total": total,
        "rate_per_second": round(rate, 1),
        "eta_seconds": eta,
        **counters.as_dict(),
        "failures": failure_count,
        "failure_examples": [f.item for f in failures],
        "shards": [
            {
                "shard": f"{s.index + 1}/{run.plan.shards}",
                "status": s.status,
                "owner": s.owner if s.leased(now) else None,
                "lease_expires_at": iso(s.lease_expires_at) if s.leased(now) else None,
                **s.counters.as_dict(),
            }
            for s in run.shards
        ],
    }


def run_rows(
    runtime: ProductRuntime, ledger: RunLedger, *, now: float, limit: int = 5
) -> list[dict[str, Any]]:
    """The product's latest ``limit`` runs, newest first, as :func:`run_row` shows them."""
    return [
        run_row(ledger, run, now=now)
        for run in ledger.latest_runs(runtime.encryptor.product, limit=limit)
    ]
