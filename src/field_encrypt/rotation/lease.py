"""Holding a shard's lease while a worker runs: who we are, and when to renew.

A worker renews its lease whenever it checkpoints, and also between retries, so a run
that is waiting out a throttled key service does not lose its shard. A lease lost
anyway (the process stalled past the TTL and another worker took the shard over) stops
this worker at its next checkpoint with :class:`~field_encrypt.errors.LeaseHeldError`;
its writes so far were compare-and-swap, so nothing it did is lost or doubled.

A lease whose holder is a process of this host that no longer exists (killed with
``kill -9``, the OOM killer, a crash) is taken over at once instead of after its TTL,
when a run starts and each time a worker finishes a shard:
:func:`dead_here` reads the holder's host and pid from its name (``HOST:PID:suffix``)
and asks the kernel whether that pid exists (an exited process its parent has not
reaped yet counts as gone). A holder on another host still holds its
lease until it expires: nothing here can tell whether it is alive. A wrong verdict costs
nothing worse than an expiry would (the pid reused by a live process: the lease is waited
out; another PID namespace under the same host name: the holder loses its lease at its
next checkpoint, its writes so far compare-and-swapped).
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from field_encrypt.audit import LEASE_RECLAIMED, AuditTrail, recorded
from field_encrypt.rotation.ledger import RunLedger, RunRecord, ShardState

DEFAULT_TTL = 60.0


def worker_id() -> str:
    """A name for this process in lease messages: host, pid and a random suffix."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


def dead_here(owner: str | None) -> bool:
    """Whether ``owner`` (a :func:`worker_id`) names a process of this host that is gone."""
    host, _, rest = (owner or "").partition(":")
    pid = rest.partition(":")[0]
    if host != socket.gethostname() or not pid.isdigit() or int(pid) == os.getpid():
        return False
    try:
        os.kill(int(pid), 0)  # signal 0: nothing is sent, only the pid's existence checked
    except ProcessLookupError:
        return True
    except OSError:  # PermissionError: alive, another user's
        return False
    return _zombie(int(pid))


def _zombie(pid: int) -> bool:
    """Whether ``pid`` has exited but its parent has not reaped it yet (state ``Z`` in
    ``/proc``; a supervisor busy with another child): it exists, and it will never run
    again. False where ``/proc`` cannot tell."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            # "pid (comm) state ...": comm may hold spaces and parentheses; the last ")" ends it
            return stat.read().rpartition(b")")[2].split()[:1] == [b"Z"]
    except OSError:
        return False


def reclaim_dead_leases(
    ledger: RunLedger, product: str, *, now: float, audit: AuditTrail | None = None
) -> list[tuple[RunRecord, ShardState]]:
    """Free the product's shards whose lease holder is a dead process of this host; the
    shards freed (as they were). Each release is conditional on the dead holder still
    being the owner, so a live worker that took the shard meanwhile keeps it. Each release
    is recorded as ``run.lease.reclaimed`` in ``audit``, in the same unit
    (:func:`~field_encrypt.audit.recorded`)."""
    freed = []
    for run, shard in ledger.live_leases(product, now=now):
        if dead_here(shard.owner):
            assert shard.owner is not None
            with recorded(
                audit,
                LEASE_RECLAIMED,
                subject=f"run/{run.run_id}",
                data={"runId": run.run_id, "shard": shard.index, "holder": shard.owner},
            ) as event:
                after = ledger.release_shard(
                    run.run_id, shard.index, owner=shard.owner, now=now, done=False
                )
                if after.shard(shard.index).owner is not None:  # a live worker took it
                    event.cancel()
            if not event.cancelled:
                freed.append((run, shard))
    return freed


@dataclass(slots=True)
class Lease:
    """``owner``'s lease on shard ``index`` of ``run_id``."""

    ledger: RunLedger
    run_id: str
    index: int
    owner: str
    ttl: float
    clock: Callable[[], float]
    renewed_at: float

    def renew_if_due(self) -> None:
        """Renew once a third of the TTL has passed since the last renewal."""
        now = self.clock()
        if now - self.renewed_at >= self.ttl / 3:
            self.ledger.renew_lease(
                self.run_id, self.index, owner=self.owner, now=now, ttl=self.ttl
            )
            self.renewed_at = now

    def renewed(self, now: float) -> None:
        """Note a renewal done by a checkpoint."""
        self.renewed_at = now
