"""Readiness: can this process serve encrypted notes right now?

Three checks, one line each: the database answers; the key provider wraps and unwraps a
canary DEK under the current MEK version; that version is enabled. A failing check says
only that it failed (the reason goes to the log): no vault URL, key name, connection
string or stack trace.
"""

from __future__ import annotations

import hmac
import logging
import os

from field_encrypt import FieldEncryptError, KeyProvider
from notelett.models import CheckOut, ReadinessOut
from notelett.repositories.base import NotesRepository

log = logging.getLogger("notelett.readiness")

CANARY_CONTEXT = b"notelett/readiness-canary/v1"


def check_readiness(*, notes: NotesRepository, provider: KeyProvider) -> ReadinessOut:
    """Run every check; ``status`` is ``fail`` when any fails."""
    checks = [_database(notes), *_key_provider(provider)]
    ok = all(c.status == "ok" for c in checks)
    return ReadinessOut(status="ok" if ok else "fail", checks=checks)


def _database(notes: NotesRepository) -> CheckOut:
    try:
        notes.ping()
    except FieldEncryptError as exc:
        log.warning("readiness: database check failed: %s", type(exc).__name__)
        return CheckOut(name="database", status="fail", detail="database did not answer")
    return CheckOut(name="database", status="ok", detail="database answers")


def _key_provider(provider: KeyProvider) -> list[CheckOut]:
    try:
        current = provider.current_version()
        enabled = any(v.version == current and v.enabled for v in provider.versions())
    except (FieldEncryptError, OSError) as exc:
        log.warning("readiness: key provider unreachable: %s", type(exc).__name__)
        return [
            CheckOut(name="key_provider", status="fail", detail="key provider did not answer"),
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
        ok = False
    wrap_check = CheckOut(
        name="key_provider",
        status="ok" if ok else "fail",
        detail=f"canary DEK {'wraps and unwraps' if ok else 'failed'} under version {current}",
    )
    return [wrap_check, version_check]
