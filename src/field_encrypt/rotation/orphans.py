"""``collect-orphans``: delete the DEKs no document refers to, safely.

A DEK is created before the document that uses it is written, so a process killed in
between (or a document insert that failed) leaves a DEK no document refers to: harmless
(it protects nothing), but ``verify`` reports it for ever. :func:`collect_orphans` finds
them the way ``verify`` does (every document's dekId, then every DEK row) and, unless it
is a dry run, deletes them. Never touched:

* a DEK created within the grace period (``older_than``, one hour by default): its
  document may still be on its way (a create in flight);
* a DEK named by an unfinished migration run (its pending steps): the run settles it when
  it resumes.

Documents are read before DEKs, so a DEK created after its document was read is new, and
so within the grace period. Each deletion is recorded as ``dek.collected`` in the audit
trail. DEKs that ``migrate --mode decrypt`` kept on purpose are orphans too (no document
refers to them any more): collecting them makes a restored backup of the encrypted
documents unreadable, so read the dry run first.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from field_encrypt.audit import DEK_COLLECTED, recorded
from field_encrypt.index_keys import is_index_key_id
from field_encrypt.products import ProductRuntime
from field_encrypt.rotation.docwalk import Pending
from field_encrypt.rotation.ledger import RunLedger

EXAMPLES = 5
DEFAULT_GRACE_SECONDS = 3600.0


@dataclass(frozen=True, slots=True, kw_only=True)
class OrphanReport:
    """What ``collect-orphans`` found and did."""

    product: str
    dry_run: bool
    older_than_seconds: float
    orphans: int
    """DEKs no document refers to, older than the grace period: deleted unless a dry run."""
    deleted: int
    too_new: int
    """Unreferenced DEKs within the grace period (left: a create may be in flight)."""
    pending: int
    """Unreferenced DEKs an unfinished migration run names (left: it settles them)."""
    examples: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def collect_orphans(
    runtime: ProductRuntime,
    ledger: RunLedger,
    *,
    older_than: float = DEFAULT_GRACE_SECONDS,
    dry_run: bool = True,
    clock: Callable[[], float] = time.time,
) -> OrphanReport:
    """Find (and unless ``dry_run``, delete) the product's orphaned DEKs."""
    if older_than < 0:
        raise ValueError("the grace period must not be negative")
    product = runtime.encryptor.product
    cutoff = clock() - older_than
    referenced = _referenced(runtime)
    held = _pending(ledger, product)
    orphans: list[str] = []
    too_new = pending = 0
    cursor: str | None = None
    while True:
        page = runtime.dek_store.scan(cursor=cursor, limit=2000)
        for record in page.records:
            if record.dek_id in referenced or is_index_key_id(record.dek_id):
                continue  # an index root key is referenced by index values, not documents
            if record.dek_id in held:
                pending += 1
            elif record.created_at.timestamp() > cutoff:
                too_new += 1
            else:
                orphans.append(record.dek_id)
        if page.cursor is None:
            break
        cursor = page.cursor
    deleted = 0
    if not dry_run:
        for dek_id in orphans:
            deleted += _delete(runtime, dek_id)
    return OrphanReport(
        product=product,
        dry_run=dry_run,
        older_than_seconds=older_than,
        orphans=len(orphans),
        deleted=deleted,
        too_new=too_new,
        pending=pending,
        examples=orphans[:EXAMPLES],
    )


def _referenced(runtime: ProductRuntime) -> set[str]:
    """Every dekId a document of the product refers to."""
    referenced: set[str] = set()
    for docs in runtime.documents.values():
        cursor: str | None = None
        while True:
            page = docs.scan(cursor=cursor, limit=1000)
            referenced.update(d.dek_id for d in page.documents if d.dek_id)
            if page.cursor is None:
                break
            cursor = page.cursor
    return referenced


def _pending(ledger: RunLedger, product: str) -> set[str]:
    """The DEKs (new and old) named by the pending steps of the product's unfinished runs."""
    held: set[str] = set()
    for run in ledger.latest_runs(product, limit=100):
        if run.status != "running":
            continue
        for shard in run.shards:
            for text in shard.pending:
                step = Pending.decode(text)
                held.update(d for d in (step.new, step.old) if d)
    return held


def _delete(runtime: ProductRuntime, dek_id: str) -> int:
    with contextlib.suppress(ValueError):  # not a hex id: never cached
        runtime.encryptor.cache.invalidate(bytes.fromhex(dek_id))
    # The delete and its event are stored together or not at all (the audit outbox).
    with recorded(
        runtime.audit,
        DEK_COLLECTED,
        subject=f"dek/{dek_id}",
        data={"dekId": dek_id},
        check={"dekId": dek_id},
    ) as event:
        if not runtime.dek_store.delete(dek_id):
            event.cancel()
            return 0  # gone meanwhile
    return 1
