"""Holding a shard's lease while a worker runs: who we are, and when to renew.

A worker renews its lease whenever it checkpoints, and also between retries, so a run
that is waiting out a throttled key service does not lose its shard. A lease lost
anyway (the process stalled past the TTL and another worker took the shard over) stops
this worker at its next checkpoint with :class:`~field_encrypt.errors.LeaseHeldError`;
its writes so far were compare-and-swap, so nothing it did is lost or doubled.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from field_encrypt.rotation.ledger import RunLedger

DEFAULT_TTL = 60.0


def worker_id() -> str:
    """A name for this process in lease messages: host, pid and a random suffix."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


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
