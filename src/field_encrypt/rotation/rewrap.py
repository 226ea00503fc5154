"""``rewrap-deks``: the same DEKs, wrapped under a new MEK version. Documents are not touched.

One straight path per batch: the store yields DEKs not yet on the target version, the
provider rewraps each one (and the new wrap is checked to unwrap to the same DEK), the
store swaps the new wraps in with compare-and-swap, the cache forgets those DEKs, and
the ledger records the cursor. Rows a concurrent writer changed meanwhile are read again
and, if still off target, rewrapped again (a few rounds at most); nothing a concurrent
writer wrote is ever overwritten.

How each DEK is rewrapped and checked before its new wrap is committed:

* Remote providers (``provider.remote``: Key Vault, KMS, PKCS#11 over the network) get
  ``provider.rewrap``, server-side where the service can (KMS ``ReEncrypt``: the DEK
  never reaches this process for the rewrap itself). The check then unwraps the new
  wrap and the old one and compares them in constant time: two more requests per DEK,
  run concurrently, and the one moment the DEK enters this process (dropped at once).
* In-process providers (``local``, ``env``: their ``rewrap`` *is* unwrap then wrap, in
  this process) are driven as unwrap, wrap, then unwrap of the new wrap compared with
  the DEK in hand: the same check with one AES operation fewer than the remote path.
  Those that offer ``rewrap_many`` (``BatchRewrapper``) do this for a whole batch in one
  call, with each MEK version's cipher looked up once.
"""

from __future__ import annotations

import hmac
from concurrent.futures import ThreadPoolExecutor
from typing import Final

from field_encrypt.errors import (
    TRANSIENT_ERRORS,
    ConfigurationError,
    DecryptionError,
    KeyProviderError,
    RotationError,
    UnsupportedFormatError,
)
from field_encrypt.products import ProductRuntime
from field_encrypt.providers.base import BatchRewrapper, KeyProvider, WrappedDek, dek_context
from field_encrypt.rotation.ledger import Counters, Failure, RunPlan
from field_encrypt.rotation.run import DryRun, MigrationOptions, ShardWork
from field_encrypt.stores.base import DekRecord, WrapUpdate

MAX_CONFLICT_ROUNDS: Final = 3
CALLS_PER_DEK: Final = 3
"""Remote: rewrap, then unwrap of the new and of the old wrap. In-process: unwrap, wrap, unwrap."""

_ITEM_ERRORS = (DecryptionError, UnsupportedFormatError, KeyProviderError)
"""Errors that fail one DEK and let the run go on (transient ones are retried first)."""


class RewrapJob:
    """Rewrap a product's DEKs onto ``to_version`` (the provider's current by default)."""

    mode: Final = "rewrap-deks"

    def __init__(
        self, runtime: ProductRuntime, options: MigrationOptions, *, provider: KeyProvider
    ) -> None:
        self.store = runtime.dek_store
        self.cache = runtime.encryptor.cache
        self.product = runtime.encryptor.product
        self.provider = provider
        self.only = options.old_version
        self.target = options.new_version or provider.current_version()
        if self.only == self.target:
            raise ConfigurationError("--old-mek-version is already the target version")
        self.concurrency = options.concurrency if provider.remote else 1
        self._rewrap_one = self._rewrap_remote if provider.remote else self._rewrap_in_process
        self._batch = (
            provider.rewrap_many
            if not provider.remote and isinstance(provider, BatchRewrapper)
            else None
        )
        self.counts = self.store.count_by_version()
        if self.only is not None:
            self.estimated_total = self.counts.get(self.only, 0)
        else:
            self.estimated_total = sum(n for v, n in self.counts.items() if v != self.target)
        self.skipped_at_start = sum(self.counts.values()) - self.estimated_total
        self.plan = RunPlan(
            mode=self.mode,
            from_version=self.only,
            to_version=self.target,
            shards=options.worker[1],
        )

    def dry_run(self, max_rps: float | None) -> DryRun:
        calls = self.estimated_total * CALLS_PER_DEK
        return DryRun(
            by_version=dict(self.counts),
            matched=self.estimated_total,
            skipped=self.skipped_at_start,
            provider_calls=calls,
            estimated_seconds=calls / max_rps if max_rps else None,
        )

    def check_ready(self) -> None:
        states = {v.version: v.enabled for v in self.provider.versions()}
        if not states.get(self.target, False):
            raise ConfigurationError(
                f"target MEK version {self.target!r} is "
                f"{'disabled' if self.target in states else 'unknown'}"
            )
        sources = [self.only] if self.only else [v for v in self.counts if v != self.target]
        disabled = [v for v in sources if states.get(v) is False and self.counts.get(v)]
        if disabled:
            raise RotationError(
                f"MEK version(s) {', '.join(disabled)} still wrap "
                f"{sum(self.counts[v] for v in disabled)} DEKs but are disabled: "
                "enable them (field-encrypt keys enable VERSION) until the rewrap is done"
            )

    def remaining(self) -> int:
        if self.only is not None:
            return self.store.count_by_version().get(self.only, 0)
        return self.store.count_not_on(self.target)

    # -- the straight path ---------------------------------------------------------------

    def run_shard(self, work: ShardWork) -> None:
        pool = ThreadPoolExecutor(self.concurrency) if self.concurrency > 1 else None
        try:
            cursor = work.cursor
            while True:
                page = work.retry.call(
                    self.store.scan,
                    cursor=cursor,
                    limit=work.batch_size,
                    exclude_version=self.target,
                    only_version=self.only,
                    shard=work.sharding,
                )
                updates, failures = self._rewrap(work, page.records, pool)
                delta, more_failures = self._swap_in(work, updates, pool)
                failures += more_failures
                work.checkpoint(
                    cursor=page.cursor or cursor,
                    delta=delta + Counters(matched=len(page.records), failed=len(failures)),
                    failures=failures,
                )
                if page.cursor is None:
                    return
                cursor = page.cursor
        finally:
            if pool is not None:
                pool.shutdown()

    def _rewrap(
        self, work: ShardWork, records: list[DekRecord], pool: ThreadPoolExecutor | None
    ) -> tuple[list[WrapUpdate], list[Failure]]:
        """Each record rewrapped and checked, or the reason it could not be."""
        if self._batch is not None:
            return self._rewrap_batch(work, records)
        shard = work.shard[0]
        rewrap_one = self._rewrap_one

        def attempt(record: DekRecord) -> WrapUpdate | Failure:
            try:
                try:
                    return rewrap_one(record)
                except TRANSIENT_ERRORS:
                    return work.retry.call(rewrap_one, record)
            except _ITEM_ERRORS as exc:
                return Failure(item=record.dek_id, reason=_reason(exc), shard=shard)

        results = list(pool.map(attempt, records)) if pool else [attempt(r) for r in records]
        updates = [r for r in results if r.__class__ is WrapUpdate]
        failures = [r for r in results if r.__class__ is Failure]
        return updates, failures

    def _rewrap_batch(
        self, work: ShardWork, records: list[DekRecord]
    ) -> tuple[list[WrapUpdate], list[Failure]]:
        """An in-process provider's ``rewrap_many``: keys looked up once per batch."""
        assert self._batch is not None
        product, target, shard = self.product, self.target, work.shard[0]
        items = [(r.wrapped, r.mek_version, dek_context(product, r.dek_id)) for r in records]
        results = work.retry.call(self._batch, items, to_version=target)
        updates: list[WrapUpdate] = []
        failures: list[Failure] = []
        for record, result in zip(records, results, strict=True):
            if isinstance(result, WrappedDek) and result.mek_version == target:
                updates.append(
                    WrapUpdate(
                        record=record,
                        mek_version=target,
                        wrapped=result.ciphertext,
                        algorithm=result.algorithm,
                    )
                )
            elif isinstance(result, Exception):
                failures.append(Failure(item=record.dek_id, reason=_reason(result), shard=shard))
            else:
                failures.append(
                    Failure(
                        item=record.dek_id, reason="wrapped under the wrong version", shard=shard
                    )
                )
        return updates, failures

    def _rewrap_remote(self, record: DekRecord) -> WrapUpdate:
        """``provider.rewrap`` (server-side where the service can), then the check."""
        provider = self.provider
        context = dek_context(self.product, record.dek_id)
        new = provider.rewrap(
            record.wrapped,
            from_version=record.mek_version,
            context=context,
            to_version=self.target,
        )
        if new.mek_version != self.target or not hmac.compare_digest(
            provider.unwrap(new.ciphertext, version=self.target, context=context),
            provider.unwrap(record.wrapped, version=record.mek_version, context=context),
        ):
            raise KeyProviderError("the new wrap does not unwrap to the same DEK")
        return WrapUpdate(
            record=record, mek_version=self.target, wrapped=new.ciphertext, algorithm=new.algorithm
        )

    def _rewrap_in_process(self, record: DekRecord) -> WrapUpdate:
        """What ``rewrap`` is for an in-process provider (unwrap, wrap), then the check."""
        provider = self.provider
        context = dek_context(self.product, record.dek_id)
        dek = provider.unwrap(record.wrapped, version=record.mek_version, context=context)
        new = provider.wrap(dek, context=context, version=self.target)
        if new.mek_version != self.target or not hmac.compare_digest(
            provider.unwrap(new.ciphertext, version=self.target, context=context), dek
        ):
            raise KeyProviderError("the new wrap does not unwrap to the same DEK")
        return WrapUpdate(
            record=record, mek_version=self.target, wrapped=new.ciphertext, algorithm=new.algorithm
        )

    def _swap_in(
        self, work: ShardWork, updates: list[WrapUpdate], pool: ThreadPoolExecutor | None
    ) -> tuple[Counters, list[Failure]]:
        """Write the new wraps with compare-and-swap; rows that lost are read and redone."""
        changed = skipped = conflicts = 0
        failures: list[Failure] = []
        for round_ in range(MAX_CONFLICT_ROUNDS + 1):
            lost = set(work.retry.call(self.store.replace_wraps, updates))
            if self.cache.stats().size:  # an empty cache (the CLI's own) has nothing to forget
                for u in updates:
                    if u.record.dek_id not in lost:
                        self.cache.invalidate(bytes.fromhex(u.record.dek_id))
            changed += len(updates) - len(lost)
            if not lost:
                break
            conflicts += len(lost)
            work.note("conflict", count=len(lost))
            ids = sorted(lost)
            current = work.retry.call(self.store.get_many, ids)
            again = [r for i in ids if (r := current.get(i)) is not None and self._selects(r)]
            skipped += len(lost) - len(again)  # deleted, or moved to the target by someone else
            if round_ == MAX_CONFLICT_ROUNDS:
                failures += [
                    Failure(
                        item=r.dek_id,
                        reason="ConcurrentUpdateError: the row kept changing during the rewrap",
                        shard=work.shard[0],
                    )
                    for r in again
                ]
                break
            updates, more = self._rewrap(work, again, pool)
            failures += more
        return Counters(changed=changed, skipped=skipped, conflicts=conflicts), failures

    def _selects(self, record: DekRecord) -> bool:
        if record.mek_version == self.target:
            return False
        return self.only is None or record.mek_version == self.only


def _reason(exc: Exception) -> str:
    return f"{type(exc).__name__}: {exc}"
