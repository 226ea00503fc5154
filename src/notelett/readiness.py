"""Readiness: can this process serve encrypted notes right now?

Four checks, one line each: the database answers; it takes a write (one tiny committed
write to a probe row, waiting at most a moment for a lock); the key provider wraps and
unwraps a canary DEK under the current MEK version; that version is enabled. A failing check says
only that it failed (the reason goes to the log): no vault URL, key name, connection
string or stack trace.

The key provider's checks cost two vault operations, and vault quotas are what a
rotation needs, so :class:`ProviderCheck` runs them at most once per
``NOTELETT_READINESS_INTERVAL_SECONDS`` per process (30 s; concurrent probes share one
call) and answers from its last result in between. When the provider does not answer but
the database does and the DEK cache still holds keys, readiness is ``degraded`` (200):
cached notes are still served, so a vault blip does not take every replica out. A
disabled current version, a failing database or an empty cache is ``fail`` (503). A
database that answers but takes no writes (read-only, locked, full) is ``degraded`` too:
reads still serve, writes answer 503, and the next probe after the fault clears is ``ok``.
"""

from __future__ import annotations

import hmac
import logging
import os
import threading
import time
from collections.abc import Callable

from field_encrypt import FieldEncryptError, KeyProvider
from notelett.models import CheckOut, ReadinessOut
from notelett.repositories.base import NotesRepository

log = logging.getLogger("notelett.readiness")

CANARY_CONTEXT = b"notelett/readiness-canary/v1"
UNREACHABLE = "key provider did not answer"


class ProviderCheck:
    """The key provider's readiness lines, computed at most once per ``interval_seconds``."""

    def __init__(
        self,
        provider: KeyProvider,
        *,
        interval_seconds: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.provider = provider
        self.interval_seconds = interval_seconds
        self.calls = 0
        """How many times the provider was asked (for tests and metrics)."""
        self._clock = clock
        self._lock = threading.Lock()
        self._checked_at = 0.0
        self._last: list[CheckOut] | None = None

    def __repr__(self) -> str:
        return f"ProviderCheck(interval_seconds={self.interval_seconds})"

    def checks(self) -> list[CheckOut]:
        """The last result, refreshed first if it is older than the interval."""
        with self._lock:  # one provider call at a time; the others wait for its result
            now = self._clock()
            if self._last is None or now - self._checked_at >= self.interval_seconds:
                self.calls += 1
                self._last = _key_provider(self.provider)
                self._checked_at = now
            return self._last


def check_readiness(
    *, notes: NotesRepository, provider: ProviderCheck, cached_deks: Callable[[], int]
) -> ReadinessOut:
    """Run every check: ``ok``; ``degraded`` when only the provider is unreachable and
    cached DEKs still serve; else ``fail``."""
    database = _database(notes)
    writable = (
        _writable(notes)
        if database.status == "ok"
        else CheckOut(name="database_writable", status="fail", detail="database did not answer")
    )
    key_checks = provider.checks()
    checks = [database, writable, *key_checks]
    if all(c.status == "ok" for c in checks):
        return ReadinessOut(status="ok", checks=checks)
    if database.status != "ok":
        return ReadinessOut(status="fail", checks=checks)
    if all(c.status == "ok" for c in key_checks):  # only writes fail: reads still serve
        return ReadinessOut(status="degraded", checks=checks)
    unreachable = any(c.name == "key_provider" and c.detail == UNREACHABLE for c in key_checks)
    cached = cached_deks()
    if unreachable and cached > 0:
        cache_line = CheckOut(
            name="dek_cache", status="ok", detail=f"{cached} DEKs cached: cached notes still serve"
        )
        return ReadinessOut(status="degraded", checks=[*checks, cache_line])
    return ReadinessOut(status="fail", checks=checks)


def _database(notes: NotesRepository) -> CheckOut:
    try:
        notes.ping()
    except FieldEncryptError as exc:
        log.warning("readiness: database check failed: %s", type(exc).__name__)
        return CheckOut(name="database", status="fail", detail="database did not answer")
    return CheckOut(name="database", status="ok", detail="database answers")


def _writable(notes: NotesRepository) -> CheckOut:
    try:
        notes.check_writable()
    except FieldEncryptError as exc:
        log.warning("readiness: database not writable: %s (%s)", type(exc).__name__, exc)
        return CheckOut(
            name="database_writable", status="fail", detail="database does not take writes"
        )
    return CheckOut(name="database_writable", status="ok", detail="database takes writes")


def _key_provider(provider: KeyProvider) -> list[CheckOut]:
    try:
        current = provider.current_version()
        enabled = any(v.version == current and v.enabled for v in provider.versions())
    except (FieldEncryptError, OSError) as exc:
        log.warning("readiness: key provider unreachable: %s", type(exc).__name__)
        return [
            CheckOut(name="key_provider", status="fail", detail=UNREACHABLE),
            CheckOut(name="mek_current_version", status="fail", detail="unknown"),
        ]
    version_check = CheckOut(
        name="mek_current_version",
        status="ok" if enabled else "fail",
        detail=f"version {current} {'enabled' if enabled else 'disabled'}",
    )
    try:
        canary = os.urandom(32)
        wrapped = provider.wrap(canary, context=CANARY_CONTEXT, version=current)
        back = provider.unwrap(wrapped.ciphertext, version=current, context=CANARY_CONTEXT)
        ok = hmac.compare_digest(back, canary)
    except (FieldEncryptError, OSError) as exc:
        log.warning("readiness: canary wrap/unwrap failed: %s", type(exc).__name__)
        if enabled:  # the version is fine: the provider failed to answer
            return [CheckOut(name="key_provider", status="fail", detail=UNREACHABLE), version_check]
        ok = False
    wrap_check = CheckOut(
        name="key_provider",
        status="ok" if ok else "fail",
        detail=f"canary DEK {'wraps and unwraps' if ok else 'failed'} under version {current}",
    )
    return [wrap_check, version_check]
