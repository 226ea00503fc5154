"""What each panel of the console shows, as plain data: read from the same functions as the CLI.

* **versions**: ``keys list`` (:func:`~field_encrypt.rotation.version_rows`, so DEKs are
  counted by :func:`~field_encrypt.usage.dek_counts`) and, with the KEK tier, ``status``'s
  KEKs (:func:`~field_encrypt.usage.kek_usage`);
* **runs**: ``status``'s ledger rows (:func:`~field_encrypt.rotation.run_rows`);
* **gate**: for each old version, :func:`~field_encrypt.rotation.retire_gate`, the check
  ``keys retire`` makes before it disables anything;
* **audit**: ``audit list`` and ``audit verify`` (the product's :class:`AuditTrail`);
* **rotation**: ``rotate --status`` (:func:`~field_encrypt.rotation.schedule_status`).

Nothing here unwraps a DEK to show it: the gate's document sample (off unless asked for
with ``--gate-sample``) decrypts in memory and reports only a count. No key material, DEK
or plaintext is in any panel; every value is a count, a version, an id, a time or a name.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from field_encrypt.audit import EVENT_TYPES, TYPE_PREFIX, full_type
from field_encrypt.errors import FieldEncryptError
from field_encrypt.products import ProductRuntime
from field_encrypt.rotation import (
    LifecycleStore,
    Policy,
    RetireReport,
    RunLedger,
    open_ledger,
    open_lifecycle,
    retire_gate,
    run_rows,
    schedule_status,
    version_rows,
)
from field_encrypt.rotation.keys import DAY, iso
from field_encrypt.rotation.retire import DEKS_GONE, SAMPLE_READS, SOAK_PASSED
from field_encrypt.usage import kek_usage

HOUR = 3600.0
RUNS_SHOWN = 10
AUDIT_SHOWN = 50
AUDIT_MOST = 500


@dataclass(frozen=True, slots=True, kw_only=True)
class PanelOptions:
    """How the gate and the schedule are judged (the ``keys retire`` and ``rotate`` flags)."""

    policy: Policy = field(default_factory=Policy)
    soak_hours: float | None = None
    """``keys retire --soak``; ``None``: the policy's ``soak_hours`` (24 by default)."""
    retention_days: float | None = None
    """``keys retire --retention-days``; ``None``: the policy's (30 by default)."""
    gate_sample: int = 0
    """Documents the gate decrypts (in memory) per version; 0, the default: none."""

    @property
    def soak(self) -> float:
        return self.policy.soak_hours if self.soak_hours is None else self.soak_hours

    @property
    def retention(self) -> float:
        return self.policy.retention_days if self.retention_days is None else self.retention_days


class Panels:
    """The console's panels over one opened product runtime; safe to call from threads."""

    def __init__(
        self,
        runtime: ProductRuntime,
        *,
        options: PanelOptions | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.runtime = runtime
        self.options = options or PanelOptions()
        self.clock = clock
        self.ledger: RunLedger = open_ledger(runtime)
        self.lifecycle: LifecycleStore = open_lifecycle(runtime)
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"Panels(product={self.product!r})"

    @property
    def product(self) -> str:
        return self.runtime.encryptor.product

    def versions(self) -> dict[str, Any]:
        """Every MEK version: its state, when created, notes, DEKs it wraps; the KEK tier."""
        with self._lock:
            rows = version_rows(self.runtime, self.lifecycle)
            keks = kek_usage(self.runtime)
        versions = [{**row, "status": _status(row), "notes": _notes(row)} for row in rows]
        current = next((r["version"] for r in rows if r["current"]), None)
        data: dict[str, Any] = {
            "product": self.product,
            "current_version": current,
            "mek_name": self.runtime.provider.mek_name,
            "total_deks": sum(r["deks"] for r in rows),
            "versions": versions,
            "kek_tier": None,
        }
        if self.runtime.kek_tier is not None:
            data["kek_tier"] = {"layout": self.runtime.settings.key_layout, "keks": keks}
        return data

    def runs(self) -> dict[str, Any]:
        """The ledger's latest runs with their shards; ``live`` while a worker holds a lease."""
        now = self.clock()
        with self._lock:
            rows = run_rows(self.runtime, self.ledger, now=now, limit=RUNS_SHOWN)
        return {
            "product": self.product,
            "now": iso(now),
            "live": any(r["state"] == "in flight" for r in rows),
            "runs": rows,
        }

    def gate(self) -> dict[str, Any]:
        """Each old version: what the retirement gate says (the same check as ``keys retire``)."""
        options = self.options
        now = self.clock()
        with self._lock:
            versions = self.runtime.provider.versions()
            gates = [self._gate(v.version, now) for v in versions if not v.current]
        return {
            "product": self.product,
            "soak_hours": options.soak,
            "retention_days": options.retention,
            "sample": options.gate_sample,
            "versions": gates,
        }

    def _gate(self, version: str, now: float) -> dict[str, Any]:
        options = self.options
        try:
            report = retire_gate(
                self.runtime,
                self.ledger,
                self.lifecycle,
                version,
                soak_hours=options.soak,
                sample=options.gate_sample,
                clock=lambda: now,
            )
        except FieldEncryptError as exc:
            return {"version": version, "verdict": "unknown", "summary": str(exc), "checks": []}
        return gate_row(report, now=now, retention_days=options.retention)

    def audit(self, types: Sequence[str] = (), limit: int = AUDIT_SHOWN) -> dict[str, Any]:
        """The latest events (newest first, of ``types`` if any) and the chain's state."""
        trail = self.runtime.audit
        known = [t.removeprefix(TYPE_PREFIX) for t in EVENT_TYPES]
        if trail is None:
            return {"product": self.product, "enabled": False, "types": known, "events": []}
        wanted = [full_type(t) for t in types if t]
        with self._lock:
            chain = trail.verify()
            events = trail.events(types=wanted)
        shown = events[-max(1, min(limit, AUDIT_MOST)) :][::-1]
        return {
            "product": self.product,
            "enabled": True,
            "types": known,
            "filter": [t.removeprefix(TYPE_PREFIX) for t in wanted],
            "matching": len(events),
            "chain": {
                "intact": chain.intact,
                "events": chain.events,
                "head": chain.head,
                "first_broken_seq": chain.first_broken_seq,
                "reason": chain.reason,
            },
            "events": [
                {
                    "seq": e.seq,
                    "time": e.time,
                    "type": e.type.removeprefix(TYPE_PREFIX),
                    "subject": e.subject,
                    "data": dict(e.data),
                }
                for e in shown
            ],
        }

    def rotation(self) -> dict[str, Any]:
        """The scheduled rotation's state (``rotate --status``) under the console's policy."""
        now = self.clock()
        with self._lock:
            return schedule_status(self.runtime, self.lifecycle, self.options.policy, now=now)


def _status(row: dict[str, Any]) -> str:
    """current, enabled, disabled, retired or compromised (a version the provider lacks: unknown)."""
    if row["compromised_at"]:
        return "compromised"
    if row["current"]:
        return "current"
    if row["retired_at"] and row["state"] == "disabled":
        return "retired"
    return str(row["state"])


def _notes(row: dict[str, Any]) -> str:
    notes = []
    if row["retired_at"]:
        notes.append(f"retired {row['retired_at']}")
    if row["retain_until"]:
        notes.append(f"kept until {row['retain_until']}")
    if row["compromised_at"]:
        notes.append(f"compromised {row['compromised_at']}")
        if row["dek_exposed"]:
            notes.append("DEKs exposed")
    return "; ".join(notes)


def gate_row(report: RetireReport, *, now: float, retention_days: float) -> dict[str, Any]:
    """The gate's verdict on one version, in words and in numbers."""
    version = report.version
    if report.already_retired:
        kept = ""
        if report.retain_until is not None:
            days = max(report.retain_until - now, 0.0) / DAY
            kept = f"; kept (disabled) until {iso(report.retain_until)}, {days:.1f} days from now"
        return {
            "version": version,
            "verdict": "retired",
            "summary": f"version {version} is retired{kept}",
            "checks": [],
            "deks_left": 0,
            "soak_left_seconds": 0,
            "retain_until": iso(report.retain_until),
            "retention_days": retention_days,
        }
    soak_left = 0.0
    if report.soak_until is not None and not report.compromised:
        soak_left = max(report.soak_until - now, 0.0)
    ok = not report.refusals
    if ok:
        summary = (
            f"version {version} can be retired now: field-encrypt keys retire {version} "
            f"disables it and keeps it at least {retention_days:g} days"
        )
    else:
        refused = {c.name for c in report.refusals}
        reasons = []
        if DEKS_GONE in refused:
            reasons.append(f"{report.deks_left} DEKs still wrapped under it")
        if SAMPLE_READS in refused:
            reasons.append("sampled documents do not decrypt without it")
        if SOAK_PASSED in refused:
            reasons.append(f"{soak_left / HOUR:.1f} h of soak left")
        summary = (
            f"version {version} cannot be retired yet: {', '.join(reasons)} "
            "(field-encrypt keys retire would refuse)"
        )
    return {
        "version": version,
        "verdict": "ready" if ok else "blocked",
        "summary": summary,
        "checks": [c.as_dict() for c in report.checks],
        "refused": [c.name for c in report.refusals],
        "deks_left": report.deks_left,
        "soak_left_seconds": round(soak_left),
        "soak_until": iso(report.soak_until),
        "soak_started_at": iso(report.soak_started_at),
        "compromised": report.compromised,
        "retention_days": retention_days,
        "retain_until": None,
    }
