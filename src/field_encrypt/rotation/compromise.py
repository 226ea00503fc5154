"""Compromise mode: a MEK version (and maybe its DEKs) is known or suspected exposed.

:func:`respond_to_compromise` walks these steps; each is idempotent, so running the same
command again after a failure or a kill resumes where it stopped:

1. **record** the compromise in the version's note and the audit trail
   (``mek.version.compromised``), before anything else;
2. **stop new wraps** under it: if it is the current version, a new version is created,
   so new DEKs are wrapped under that one (other processes follow within their
   provider's refresh interval);
3. **rewrap its DEKs first**: a ``rewrap-deks`` run restricted to that version, the
   fastest way to end its use;
4. with ``dek_exposed`` (the DEKs themselves may be exposed): **re-encrypt** every
   document whose DEK was, or may have been, wrapped under the version: those whose DEK
   was created before the compromise was declared and before the version stopped being
   current (plus a margin for processes that cached it), or is still wrapped under it.
   Each gets a fresh DEK and its old DEK is deleted. With the KEK tier, a KEK that existed
   before that cutoff may have been unwrapped through the version, and a KEK's key does not
   change when it is rewrapped: every DEK under such a KEK is re-encrypted too, whenever
   it was created, and each partition whose active KEK is one of them gets a new KEK
   first, so no new DEK goes under an exposed KEK;
5. **retire** it through the retirement gate with the soak waived (no DEKs left, a
   sample decrypts without it), recording the retention deadline.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from field_encrypt.audit import MEK_VERSION_COMPROMISED
from field_encrypt.backends.base import KEK_PREFIX
from field_encrypt.documents import StoredDocument
from field_encrypt.errors import ConfigurationError
from field_encrypt.key_epoch import announce_key_change
from field_encrypt.products import ProductRuntime
from field_encrypt.providers.base import KeyProvider
from field_encrypt.rotation.keys import (
    DEFAULT_RETENTION_DAYS,
    create_version,
    iso,
    known_version,
    mek_event,
)
from field_encrypt.rotation.ledger import RunLedger, RunPlan
from field_encrypt.rotation.lifecycle import LifecycleStore, VersionNote
from field_encrypt.rotation.migrate import migrate
from field_encrypt.rotation.ratelimit import ThrottledProvider, TokenBucket
from field_encrypt.rotation.reencrypt import ReencryptJob
from field_encrypt.rotation.reports import report_dict
from field_encrypt.rotation.retire import RetireReport, retire
from field_encrypt.rotation.run import MigrationOptions, RunObserver, RunReport, run_job
from field_encrypt.rotation.verify import dek_counts

CACHE_MARGIN: Final = 3600.0
"""Seconds after a version stopped being current during which other processes may still
have wrapped new DEKs under it (their provider caches the current version)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class CompromiseReport:
    """What :func:`respond_to_compromise` did, step by step."""

    product: str
    version: str
    dek_exposed: bool
    recorded_now: bool
    created_version: str | None
    current_version: str
    rewrap: RunReport | None = None
    reencrypt: RunReport | None = None
    retire: RetireReport | None = None

    @property
    def stopped_at(self) -> str | None:
        """The step that did not finish (``None``: the version is retired)."""
        for name, report in (("rewrap", self.rewrap), ("re-encrypt", self.reencrypt)):
            if report is not None and (report.status == "stopped" or report.failure_count):
                return name
        if self.retire is None or not self.retire.retired:
            return "retire"
        return None

    def as_dict(self) -> dict[str, Any]:
        return report_dict(self, rename={"reencrypt": "re_encrypt"}, stopped_at=self.stopped_at)


def respond_to_compromise(
    runtime: ProductRuntime,
    ledger: RunLedger,
    lifecycle: LifecycleStore,
    version: str,
    *,
    dek_exposed: bool = False,
    max_rps: float | None = None,
    batch_size: int = 1000,
    sample: int = 100,
    retention_days: float = DEFAULT_RETENTION_DAYS,
    clock: Callable[[], float] = time.time,
    observer: RunObserver | None = None,
) -> CompromiseReport:
    """Record, stop new wraps, rewrap, (re-encrypt,) retire: see the module docstring."""
    found, _ = known_version(runtime, version)
    product = runtime.encryptor.product
    note = lifecycle.note(product, version)
    now = clock()
    recorded_now = not note.compromised or (dek_exposed and not note.dek_exposed)
    if recorded_now:
        note = dataclasses.replace(
            note,
            compromised_at=note.compromised_at or now,
            dek_exposed=note.dek_exposed or dek_exposed,
        )
        # The note and its event are one unit (an intent first on Cosmos DB, which audit
        # verify settles by reading the note back).
        with mek_event(
            runtime,
            MEK_VERSION_COMPROMISED,
            version,
            intent=False,
            dekExposed=note.dek_exposed,
            wasCurrent=found.current,
            deksWrapped=dek_counts(runtime).get(version, 0),
            via="keys compromised",
        ):
            lifecycle.save_note(product, note)
        announce_key_change(runtime, [version], via="keys compromised")
    created = None
    if found.current:
        created = create_version(runtime, via="keys compromised").version
    target = runtime.provider.current_version()
    report = CompromiseReport(
        product=product,
        version=version,
        dek_exposed=note.dek_exposed,
        recorded_now=recorded_now,
        created_version=created,
        current_version=target,
    )
    options = MigrationOptions(
        mode="rewrap-deks",
        old_version=version,
        new_version=target,
        max_rps=max_rps,
        batch_size=batch_size,
    )
    rewrap = migrate(runtime, ledger, options, clock=clock, observer=observer)
    report = dataclasses.replace(report, rewrap=rewrap)
    if report.stopped_at == "rewrap":
        return report
    if note.dek_exposed:
        note = _with_exposure_cutoff(lifecycle, product, note, runtime)
        assert note.exposed_before is not None
        options = dataclasses.replace(options, mode="re-encrypt")
        provider: KeyProvider = runtime.provider
        if max_rps is not None:
            provider = ThrottledProvider(provider, TokenBucket(max_rps))
        _replace_exposed_keks(runtime, note.exposed_before)
        job = ExposedReencryptJob(
            runtime, options, provider=provider, created_before=note.exposed_before
        )
        reencrypt = run_job(job, runtime, ledger, options, clock=clock, observer=observer)
        report = dataclasses.replace(report, reencrypt=reencrypt)
        if runtime.kek_tier is not None and reencrypt.status == "completed":
            runtime.kek_tier.delete_unreferenced(  # the exposed KEKs no DEK names any more
                runtime.dek_store.count_by_version(),
                grace_seconds=runtime.settings.kek_retire_grace_seconds,
            )
        if report.stopped_at == "re-encrypt":
            return report
    gate = retire(
        runtime,
        ledger,
        lifecycle,
        version,
        sample=sample,
        retention_days=retention_days,
        clock=clock,
        via="keys compromised",
    )
    return dataclasses.replace(report, retire=gate)


def _with_exposure_cutoff(
    lifecycle: LifecycleStore, product: str, note: VersionNote, runtime: ProductRuntime
) -> VersionNote:
    """Fix (once) the creation time before which a DEK may have been wrapped under the version."""
    if note.exposed_before is not None:
        return note
    assert note.compromised_at is not None
    versions = runtime.provider.versions()
    order = [v.version for v in versions]
    later = versions[order.index(note.version) + 1 :]
    cutoff = note.compromised_at
    if later:
        cutoff = min(cutoff, later[0].created_at.timestamp() + CACHE_MARGIN)
    note = dataclasses.replace(note, exposed_before=cutoff)
    lifecycle.save_note(product, note)
    return note


def _exposed_keks(runtime: ProductRuntime, created_before: float) -> set[str]:
    """``kek:<id>`` of every KEK created before the cutoff (it may be exposed); none if no tier."""
    tier = runtime.kek_tier
    if tier is None:
        return set()
    return {
        KEK_PREFIX + k.kek_id for k in tier.keks.all() if k.created_at.timestamp() < created_before
    }


def _replace_exposed_keks(runtime: ProductRuntime, created_before: float) -> None:
    """Each partition whose active KEK may be exposed gets a new KEK (idempotent)."""
    tier = runtime.kek_tier
    if tier is None:
        return
    for record in tier.keks.all():
        if record.active and record.created_at.timestamp() < created_before:
            tier.new_kek(record.partition)


class ExposedReencryptJob(ReencryptJob):
    """``re-encrypt`` for the documents whose DEK may be exposed through ``version``.

    A document is selected when its DEK was created before ``created_before``, is still
    wrapped under the compromised version, or is under a KEK created before the cutoff (or
    is missing, so the failure is named).
    Its fresh DEK is created now, after the cutoff, so a re-run selects it no more.
    """

    def __init__(
        self,
        runtime: ProductRuntime,
        options: MigrationOptions,
        *,
        provider: KeyProvider,
        created_before: float,
    ) -> None:
        if options.old_version is None:
            raise ConfigurationError("the compromised version is required")
        super().__init__(runtime, options, provider=provider)
        self.created_before = dt.datetime.fromtimestamp(created_before, dt.UTC)
        self.exposed_keks = _exposed_keks(runtime, created_before)
        self.estimated_total = sum(self.counts.values())  # an upper bound: creation times
        self.plan = RunPlan(
            mode=self.mode,
            from_version=options.old_version,
            to_version=self.target,
            shards=options.worker[1],
        )

    def __repr__(self) -> str:
        return f"ExposedReencryptJob(version={self.only!r}, before={iso(self.created_before.timestamp())})"

    def select(self, collection: str, documents: list[StoredDocument]) -> list[StoredDocument]:
        records = self.store.get_many([d.dek_id for d in documents if d.dek_id])
        selected = []
        for document in documents:
            if document.dek_id is None:
                continue
            record = records.get(document.dek_id)
            if (
                record is None
                or self.effective_version(record.mek_version) == self.only
                or record.created_at < self.created_before
                or record.mek_version in self.exposed_keks
            ):
                selected.append(document)
        return selected
