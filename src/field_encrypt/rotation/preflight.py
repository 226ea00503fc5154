"""``preflight``: the runbook's pre-flight checklist, run instead of ticked.

Each check passes or fails with a one-line detail; none of them writes anything except
the canary round trip, which wraps and unwraps a throwaway DEK in memory (nothing is
stored).
"""

from __future__ import annotations

import datetime as dt
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from field_encrypt.errors import FieldEncryptError
from field_encrypt.products import ProductRuntime
from field_encrypt.providers.base import dek_context
from field_encrypt.rotation.lease import dead_here
from field_encrypt.rotation.ledger import RunLedger
from field_encrypt.usage import dek_counts

DEFAULT_MAX_BACKUP_AGE = 24 * 3600.0
CANARY_DEK_ID = "00000000000000000000000000000000"


@dataclass(frozen=True, slots=True, kw_only=True)
class Check:
    """One line of the checklist."""

    name: str
    ok: bool
    detail: str

    def as_dict(self) -> dict[str, Any]:
        return {"check": self.name, "ok": self.ok, "detail": self.detail}


def preflight(
    runtime: ProductRuntime,
    ledger: RunLedger,
    *,
    target_version: str | None = None,
    max_backup_age: float = DEFAULT_MAX_BACKUP_AGE,
    clock: Callable[[], float] = time.time,
) -> list[Check]:
    """Every check, in the runbook's order."""
    settings = runtime.settings
    provider = runtime.provider
    product = runtime.encryptor.product
    checks = [
        Check(
            name="encryption enabled",
            ok=settings.enabled,
            detail="FIELD_ENCRYPT_ENABLED=true"
            if settings.enabled
            else "FIELD_ENCRYPT_ENABLED=false",
        )
    ]
    try:
        versions = {v.version: v for v in provider.versions()}
        current = provider.current_version()
    except FieldEncryptError as exc:
        checks.append(Check(name="key provider configured", ok=False, detail=_why(exc)))
        return checks
    note = " (rehearsal only, not for production)" if provider.kind in ("local", "env") else ""
    checks.append(
        Check(
            name="key provider configured",
            ok=True,
            detail=f"{provider.kind} provider{note}, MEK {provider.mek_name!r}, "
            f"current version {current}",
        )
    )
    targets = [current] if target_version in (None, current) else [current, target_version]
    for version in targets:
        checks.append(_round_trip(runtime, version, versions.get(version) is not None))
    counts = dek_counts(runtime)
    blocked = [
        f"{v} ({n} DEKs, {'disabled' if v in versions else 'unknown'})"
        for v, n in sorted(counts.items())
        if n and not (v in versions and versions[v].enabled)
    ]
    checks.append(
        Check(
            name="versions in use are enabled",
            ok=not blocked,
            detail="not enabled: " + ", ".join(blocked)
            if blocked
            else "DEKs per version: "
            + (", ".join(f"{v}={n}" for v, n in sorted(counts.items())) or "none"),
        )
    )
    now = clock()
    live = [(r, s) for r, s in ledger.live_leases(product, now=now) if not dead_here(s.owner)]
    if live:
        run, shard = live[0]
        detail = (
            f"run {run.run_id} ({run.plan.mode}) is in flight: shard {shard.index + 1}/"
            f"{run.plan.shards} held by {shard.owner}"
        )
    else:
        detail = "no lease held"
    checks.append(Check(name="no migration in flight", ok=not live, detail=detail))
    last = ledger.last_backup(product)
    if last is None:
        checks.append(
            Check(
                name="recent dek_store backup",
                ok=False,
                detail="no backup recorded: run field-encrypt backup",
            )
        )
    else:
        age = now - last.at
        checks.append(
            Check(
                name="recent dek_store backup",
                ok=age <= max_backup_age,
                detail=f"last backup {_age(age)} ago ({last.count} DEKs, {last.path}); "
                f"limit {_age(max_backup_age)}",
            )
        )
    return checks


def _round_trip(runtime: ProductRuntime, version: str, known: bool) -> Check:
    name = f"wrap and unwrap permitted on version {version}"
    if not known:
        return Check(name=name, ok=False, detail=f"the provider has no version {version!r}")
    provider = runtime.provider
    context = dek_context(runtime.encryptor.product, CANARY_DEK_ID)
    canary = os.urandom(32)
    try:
        wrapped = provider.wrap(canary, context=context, version=version)
        ok = provider.unwrap(wrapped.ciphertext, version=version, context=context) == canary
    except FieldEncryptError as exc:
        return Check(name=name, ok=False, detail=_why(exc))
    return Check(
        name=name,
        ok=ok,
        detail="canary DEK round trip" if ok else "canary DEK came back different",
    )


def _why(exc: FieldEncryptError) -> str:
    return f"{type(exc).__name__}: {exc}"


def _age(seconds: float) -> str:
    return str(dt.timedelta(seconds=int(seconds)))
