"""The retirement gate: disable an old MEK version only when it is provably unneeded.

:func:`retire` disables ``version`` only when all three hold, and names each that fails:

1. **no DEK is wrapped under it**, counted as ``verify`` counts (:func:`dek_counts`), and
   none of another product of the same database under the same MEK either
   (:func:`~field_encrypt.usage.other_products_on`: they share the key); nor an active
   KEK of any product, even one that wraps no DEK yet
   (:func:`~field_encrypt.usage.keks_on`: the product's next DEKs go under it);
2. **a sample of documents decrypts end to end without it**: the sample is read through
   the product's provider with ``version`` refused, exactly as it will be once disabled;
3. **the soak period has passed** since the rotation off it completed (the last
   completed ``rewrap-deks`` or ``re-encrypt`` run that moved DEKs onto a newer version;
   without one, since the next version was created). A version declared compromised
   needs no soak: once its DEKs are gone, it is disabled at once.

Then it records the **retention deadline** (default 30 days) before which the version may
not be deleted, and emits ``mek.version.disabled`` and ``mek.version.retired``. The clock
is a parameter, so tests move time instead of waiting for it.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from field_encrypt.audit import MEK_VERSION_RETIRED
from field_encrypt.cache import DekCache
from field_encrypt.envelope import FieldEncryptor
from field_encrypt.errors import ConfigurationError, KeyVersionDisabledError, RotationError
from field_encrypt.products import ProductRuntime
from field_encrypt.providers.base import KeyProvider, KeyVersion, WrappedDek
from field_encrypt.rotation.keys import (
    DAY,
    DEFAULT_RETENTION_DAYS,
    disable_version,
    iso,
    known_version,
    mek_event,
)
from field_encrypt.rotation.ledger import RunLedger
from field_encrypt.rotation.lifecycle import LifecycleStore
from field_encrypt.rotation.preflight import Check
from field_encrypt.rotation.verify import dek_counts, verify
from field_encrypt.usage import kek_detail, keks_on, other_products_on, shared_detail

DEFAULT_SOAK_HOURS = 24.0
HOUR = 3600.0
RUNS_CONSIDERED = 200

DEKS_GONE = "no DEK wrapped under the version"
SAMPLE_READS = "sample decrypts without the version"
SOAK_PASSED = "soak period passed"


@dataclass(frozen=True, slots=True, kw_only=True)
class RetireReport:
    """What the gate found, and whether the version is retired now."""

    product: str
    version: str
    checks: tuple[Check, ...] = ()
    retired: bool = False
    already_retired: bool = False
    retain_until: float | None = None
    soak_started_at: float | None = None
    soak_until: float | None = None
    compromised: bool = False
    clock_override: bool = False
    deks_left: int = 0
    """DEKs still wrapped under the version (counted as ``verify`` counts), this product's
    and those of other products of the database on the same MEK."""
    refusals: tuple[Check, ...] = field(init=False, default=())

    def __post_init__(self) -> None:
        object.__setattr__(self, "refusals", tuple(c for c in self.checks if not c.ok))

    def as_dict(self) -> dict[str, Any]:
        return {
            "product": self.product,
            "version": self.version,
            "retired": self.retired,
            "already_retired": self.already_retired,
            "refused": [c.name for c in self.refusals],
            "checks": [c.as_dict() for c in self.checks],
            "retain_until": iso(self.retain_until),
            "soak_started_at": iso(self.soak_started_at),
            "soak_until": iso(self.soak_until),
            "compromised": self.compromised,
            "deks_left": self.deks_left,
        }


def retire_gate(
    runtime: ProductRuntime,
    ledger: RunLedger,
    lifecycle: LifecycleStore,
    version: str,
    *,
    soak_hours: float = DEFAULT_SOAK_HOURS,
    sample: int = 100,
    clock: Callable[[], float] = time.time,
    clock_override: bool = False,
) -> RetireReport:
    """The gate's verdict on ``version``, changing nothing: what :func:`retire` checks.

    ``keys retire`` and the console both ask this, so they cannot disagree. ``sample``
    documents are decrypted (in memory, never shown) with ``version`` refused; ``0``
    decrypts none and says so. :class:`ConfigurationError` for an unknown version,
    :class:`RotationError` for the current one.
    """
    if soak_hours < 0 or sample < 0:
        raise ConfigurationError("--soak and the sample must not be negative")
    found, versions = known_version(runtime, version)
    if found.current:
        raise RotationError(
            f"refusing to retire version {version}: it is the current version "
            "(create a new one and rewrap first)"
        )
    product = runtime.encryptor.product
    note = lifecycle.note(product, version)
    report = RetireReport(
        product=product,
        version=version,
        compromised=note.compromised,
        clock_override=clock_override,
    )
    if note.retired_at is not None and not found.enabled:
        return dataclasses.replace(report, already_retired=True, retain_until=note.retain_until)
    now = clock()
    started, origin = soak_started_at(runtime, ledger, version, versions)
    soak_until = started + soak_hours * HOUR
    still = dek_counts(runtime).get(version, 0)
    others = other_products_on(runtime, version)
    checks = (
        _deks_gone(version, still, others, keks_on(runtime, version)),
        _sample_reads(runtime, version, sample),
        _soak(now, started, soak_until, origin, compromised=note.compromised),
    )
    return dataclasses.replace(
        report,
        checks=checks,
        soak_started_at=started,
        soak_until=soak_until,
        deks_left=still + sum(others.values()),
    )


def retire(
    runtime: ProductRuntime,
    ledger: RunLedger,
    lifecycle: LifecycleStore,
    version: str,
    *,
    soak_hours: float = DEFAULT_SOAK_HOURS,
    retention_days: float = DEFAULT_RETENTION_DAYS,
    sample: int = 100,
    clock: Callable[[], float] = time.time,
    clock_override: bool = False,
    via: str = "keys retire",
) -> RetireReport:
    """Disable ``version`` if the gate passes; the report names every condition that failed.

    :class:`ConfigurationError` for an unknown version, :class:`RotationError` for the
    current one. Already retired (and still disabled): nothing to do, reported as such.
    ``clock_override`` is recorded in the event when the clock is not the real one.
    """
    if soak_hours < 0 or retention_days < 0 or sample < 0:
        raise ConfigurationError("--soak, --retention-days and the sample must not be negative")
    report = retire_gate(
        runtime,
        ledger,
        lifecycle,
        version,
        soak_hours=soak_hours,
        sample=sample,
        clock=clock,
        clock_override=clock_override,
    )
    if report.already_retired:
        return dataclasses.replace(report, retired=True)
    if report.refusals:
        return report
    assert report.soak_started_at is not None
    now = clock()
    disabled = disable_version(
        runtime, lifecycle, version, retention_days=retention_days, clock=clock, via=via
    )
    retain_until = max(disabled.retain_until, now + retention_days * DAY)
    product = report.product
    note = lifecycle.note(product, version)
    # The note and its event are one unit (an intent first on Cosmos DB, which audit
    # verify settles by reading the note back): a crash cannot keep one without the other.
    with mek_event(
        runtime,
        MEK_VERSION_RETIRED,
        version,
        intent=False,
        retainUntil=iso(retain_until),
        soakHours=soak_hours,
        soakStartedAt=iso(report.soak_started_at),
        soakWaived=note.compromised,
        compromised=note.compromised,
        checks=[c.name for c in report.checks],
        clockOverride=clock_override,
        via=via,
    ):
        lifecycle.save_note(
            product, dataclasses.replace(note, retired_at=now, retain_until=retain_until)
        )
    return dataclasses.replace(report, retired=True, retain_until=retain_until)


def soak_started_at(
    runtime: ProductRuntime, ledger: RunLedger, version: str, versions: list[KeyVersion]
) -> tuple[float, str]:
    """When the soak before retiring ``version`` began, and what began it."""
    order = [v.version for v in versions]
    newer = versions[order.index(version) + 1 :]
    if not newer:
        raise RotationError(f"version {version} is the newest version: nothing replaced it")
    newer_names = {v.version for v in newer}
    finished = [
        run.finished_at
        for run in ledger.latest_runs(runtime.encryptor.product, limit=RUNS_CONSIDERED)
        if run.plan.mode in ("rewrap-deks", "re-encrypt")
        and run.status in ("completed", "completed_with_failures")
        and run.finished_at is not None
        and run.plan.to_version in newer_names
        and run.plan.from_version in (None, version)
        and run.counters.changed > 0
    ]
    if finished:
        return max(finished), "the last run that moved DEKs off it completed"
    successor = newer[0]
    return (
        successor.created_at.timestamp(),
        f"version {successor.version} was created (no run had to move DEKs off it)",
    )


def _deks_gone(version: str, still: int, others: dict[str, int], keks: dict[str, int]) -> Check:
    if still:
        detail = (
            f"{still} DEKs still wrapped under version {version} "
            "(run field-encrypt migrate --mode rewrap-deks)"
        )
    elif others:
        detail = (
            f"{shared_detail(others)} still wrapped under version {version} (the same MEK, "
            "in the same database: rewrap them with --product PRODUCT)"
        )
    elif keks:
        detail = (
            f"0 DEKs, but {kek_detail(keks)} still wrapped under version {version} (new "
            "DEKs go under it: move it with field-encrypt migrate --product PRODUCT "
            "--mode rewrap-deks)"
        )
    else:
        detail = "0 DEKs"
    return Check(name=DEKS_GONE, ok=not still and not others and not keks, detail=detail)


def _sample_reads(runtime: ProductRuntime, version: str, sample: int) -> Check:
    if sample == 0:
        return Check(name=SAMPLE_READS, ok=True, detail="not sampled (sample size 0)")
    view = without_version(runtime, version)
    report = verify(view, mek_version=view.provider.current_version(), sample=sample)
    failed = report.undecryptable
    if failed:
        detail = f"{len(failed)} of {report.sampled} sampled documents do not decrypt: " + (
            ", ".join(failed[:3])
        )
    elif report.sampled:
        detail = f"{report.sampled} sampled documents decrypt with version {version} refused"
    else:
        detail = "no documents to sample"
    return Check(name=SAMPLE_READS, ok=not failed, detail=detail)


def _soak(now: float, started: float, until: float, origin: str, *, compromised: bool) -> Check:
    if compromised:
        return Check(name=SOAK_PASSED, ok=True, detail="waived: the version is compromised")
    if now >= until:
        return Check(name=SOAK_PASSED, ok=True, detail=f"since {iso(started)} ({origin})")
    left = (until - now) / HOUR
    return Check(
        name=SOAK_PASSED,
        ok=False,
        detail=f"{left:.1f} h left: soaking since {iso(started)} ({origin}) until {iso(until)}",
    )


def without_version(runtime: ProductRuntime, version: str) -> ProductRuntime:
    """A read-only view of ``runtime`` whose provider refuses ``version``, as once disabled."""
    provider = _Refusing(runtime.provider, version)
    encryptor = runtime.encryptor
    view = FieldEncryptor(
        product=encryptor.product,
        provider=provider,
        store=runtime.dek_store,
        collections=encryptor.collections,
        cache=DekCache(),
        enabled=encryptor.enabled,
        allow_plaintext=encryptor.allow_plaintext,
        token_form=encryptor.token_form,
    )
    return dataclasses.replace(runtime, provider=provider, encryptor=view, resources=[], audit=None)


class _Refusing:
    """A provider that treats one version as disabled; it never changes the key service."""

    def __init__(self, inner: KeyProvider, version: str) -> None:
        self.inner = inner
        self.version = version
        self.kind = inner.kind
        self.mek_name = inner.mek_name
        self.remote = inner.remote

    def __repr__(self) -> str:
        return f"_Refusing({self.inner!r}, {self.version!r})"

    def _refuse(self, *versions: str | None) -> None:
        if self.version in versions:
            raise KeyVersionDisabledError(f"version {self.version} is treated as disabled")

    def versions(self) -> list[KeyVersion]:
        return [
            dataclasses.replace(v, enabled=False) if v.version == self.version else v
            for v in self.inner.versions()
        ]

    def current_version(self) -> str:
        return self.inner.current_version()

    def create_version(self) -> KeyVersion:
        raise ConfigurationError("a read-only view cannot create versions")

    def set_enabled(self, version: str, enabled: bool) -> KeyVersion:
        raise ConfigurationError("a read-only view cannot change versions")

    def wrap(self, dek: bytes, *, context: bytes, version: str | None = None) -> WrappedDek:
        self._refuse(version or self.inner.current_version())
        return self.inner.wrap(dek, context=context, version=version)

    def unwrap(self, ciphertext: bytes, *, version: str, context: bytes) -> bytes:
        self._refuse(version)
        return self.inner.unwrap(ciphertext, version=version, context=context)

    def rewrap(
        self, ciphertext: bytes, *, from_version: str, context: bytes, to_version: str | None = None
    ) -> WrappedDek:
        self._refuse(from_version, to_version or self.inner.current_version())
        return self.inner.rewrap(
            ciphertext, from_version=from_version, context=context, to_version=to_version
        )
