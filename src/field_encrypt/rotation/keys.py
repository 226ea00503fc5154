"""MEK version operations, each recorded in the audit trail: create, enable, disable, list.

What ``field-encrypt keys`` calls, and what ``retire``, ``compromise`` and the scheduled
rotation build on, so an operator's command and the automation leave the same events.
``via`` in each event names the command that acted (``keys disable``, ``rotate``...).
Nothing here deletes a MEK version: there is no such operation in field-encrypt.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

from field_encrypt.audit import (
    MEK_VERSION_CREATED,
    MEK_VERSION_DISABLED,
    MEK_VERSION_ENABLED,
    recorded,
    unit_of_work,
)
from field_encrypt.errors import ConfigurationError, KeyVersionNotFoundError, RotationError
from field_encrypt.key_epoch import announce_key_change
from field_encrypt.products import ProductRuntime
from field_encrypt.providers.base import KeyVersion
from field_encrypt.rotation.ledger import iso as iso  # re-exported: the key commands use it
from field_encrypt.rotation.lifecycle import LifecycleStore, VersionNote
from field_encrypt.rotation.verify import dek_counts
from field_encrypt.usage import kek_detail, keks_on, other_products_on, shared_detail

DEFAULT_RETENTION_DAYS = 30.0
DAY = 86_400.0


def emit_mek_event(runtime: ProductRuntime, type: str, version: str, **data: Any) -> None:
    """One MEK version event (subject ``mek/<name>/<version>``), if the product has a trail."""
    if runtime.audit is None:
        return
    name = runtime.provider.mek_name
    runtime.audit.emit(
        type,
        subject=f"mek/{name}/{version}",
        data={"mekName": name, "version": version, **data},
    )


def mek_event(
    runtime: ProductRuntime, type: str, version: str, *, intent: bool = True, **data: Any
) -> AbstractContextManager[Any]:
    """The unit of a MEK version act and its event (subject ``mek/<name>/<version>``).

    With ``intent`` the act changes the key service, outside the database: the event is
    announced before the act (:func:`~field_encrypt.audit.recorded`, ``external``);
    without, the act's rows and the event are one unit.
    """
    name = runtime.provider.mek_name
    return recorded(
        runtime.audit,
        type,
        subject=f"mek/{name}/{version}",
        data={"mekName": name, "version": version, **data},
        external=intent,
        check={"version": version},
    )


def known_version(runtime: ProductRuntime, version: str) -> tuple[KeyVersion, list[KeyVersion]]:
    """The provider's record of ``version`` and every version; ``ConfigurationError`` if unknown."""
    versions = runtime.provider.versions()
    for v in versions:
        if v.version == version:
            return v, versions
    raise ConfigurationError(f"MEK {runtime.provider.mek_name!r} has no version {version!r}")


def create_version(runtime: ProductRuntime, *, via: str = "keys create") -> KeyVersion:
    """A new MEK version, now current (new DEKs are wrapped under it).

    On a key service whose MEK has no version yet (a new Key Vault key name, KMS alias or
    token label), this makes the first one; its event has no ``previousVersion``.
    """
    try:
        previous: str | None = runtime.provider.current_version()
    except KeyVersionNotFoundError:  # an empty MEK: the providers say so this way only
        previous = None
    # The key service's act is announced first (an intent naming the versions there are
    # before it), so a crash after the call leaves the intent for audit verify to settle:
    # recorded if a version not among those exists, dropped if none does.
    name = runtime.provider.mek_name
    known = [v.version for v in runtime.provider.versions()] if runtime.audit else []
    with recorded(
        runtime.audit,
        MEK_VERSION_CREATED,
        subject=f"mek/{name}",
        data={"mekName": name, "previousVersion": previous, "via": via},
        external=True,
        check={"knownVersions": known},
    ) as recording:
        version = runtime.provider.create_version()
        recording.subject = f"mek/{name}/{version.version}"
        recording.data["version"] = version.version
    return version


def enable_version(
    runtime: ProductRuntime, lifecycle: LifecycleStore, version: str, *, via: str = "keys enable"
) -> KeyVersion:
    """Enable ``version`` again (a rollback, or to restore old backups).

    A retired version stops being retired (its retention deadline stays); a compromised
    one stays marked compromised, and the event says so.
    """
    known_version(runtime, version)
    product = runtime.encryptor.product
    note = lifecycle.note(product, version)
    # The key service's change is announced first (an intent), then recorded with the
    # note in one unit: a crash in between leaves the intent for audit verify to settle.
    with mek_event(runtime, MEK_VERSION_ENABLED, version, compromised=note.compromised, via=via):
        enabled = runtime.provider.set_enabled(version, True)
        if note.retired_at is not None or note.disabled_at is not None:
            lifecycle.save_note(
                product, dataclasses.replace(note, retired_at=None, disabled_at=None)
            )
    announce_key_change(runtime, [version], via=via)  # other processes see it within a poll
    return enabled


@dataclass(frozen=True, slots=True, kw_only=True)
class Disabled:
    """What :func:`disable_version` did."""

    version: str
    retain_until: float
    cache_evicted: int
    was_enabled: bool
    forced: bool = False
    deks_wrapped: int = 0
    """DEKs still wrapped under the version (only a forced disable leaves any): their
    documents are unreadable until they are rewrapped (after ``keys enable``) or restored."""


def disable_version(
    runtime: ProductRuntime,
    lifecycle: LifecycleStore,
    version: str,
    *,
    retention_days: float = DEFAULT_RETENTION_DAYS,
    clock: Callable[[], float] = time.time,
    via: str = "keys disable",
    force: bool = False,
    reason: str | None = None,
) -> Disabled:
    """Disable ``version`` and record its retention deadline; never deletes it.

    Refused (:class:`RotationError`) for the current version, while another product of
    the database has DEKs or an active KEK under it, and while any DEK or active KEK of
    this product is under it (DEKs counted as ``verify`` counts), unless ``force``: the emergency
    override, which needs a ``reason`` and disables it anyway, accepting that the reads of
    those DEKs fail until they are rewrapped or restored; the audit event records the
    override, the reason and how many DEKs it cut off. A deadline already recorded is only
    ever moved later. Every running process drops the version's cached DEKs within its
    key-state poll interval (:func:`~field_encrypt.key_epoch.announce_key_change`).
    """
    if retention_days < 0:
        raise ConfigurationError("the retention period must not be negative")
    reason = (reason or "").strip() or None
    if force and reason is None:
        raise ConfigurationError(
            "--force needs --reason: say why the version is disabled while DEKs still use "
            "it (it is recorded in the audit trail)"
        )
    found, _ = known_version(runtime, version)
    if found.current:
        raise RotationError(
            f"refusing to disable version {version}: it is the current version "
            "(create a new one first: field-encrypt keys create, or respond with "
            "field-encrypt keys compromised)"
        )
    still = dek_counts(runtime).get(version, 0)
    if still and not force:
        raise RotationError(
            f"refusing to disable version {version}: {still} DEKs are still wrapped under "
            f"it (run field-encrypt migrate --mode rewrap-deks first; in an emergency, "
            f'field-encrypt keys disable {version} --force --reason "..." disables it now '
            "and their documents become unreadable until rewrapped or restored)"
        )
    others = other_products_on(runtime, version)
    if others:
        raise RotationError(
            f"refusing to disable version {version}: {shared_detail(others)} are still "
            f"wrapped under it (the same MEK, in the same database): rewrap them first "
            f"(field-encrypt migrate --product PRODUCT --mode rewrap-deks for each)"
        )
    product = runtime.encryptor.product
    keks = keks_on(runtime, version)
    if keks and (set(keks) - {product} or not force):
        raise RotationError(
            f"refusing to disable version {version}: {kek_detail(keks)} "
            f"{'is' if sum(keks.values()) == 1 else 'are'} wrapped under it, and new DEKs "
            "go under the active KEK even while it wraps none: once disabled, those writes "
            "fail. Move them first: field-encrypt migrate --product PRODUCT --mode "
            "rewrap-deks (it rewraps the product's KEKs)"
        )
    now = clock()
    note = lifecycle.note(product, version)
    retain_until = max(note.retain_until or 0.0, now + retention_days * DAY)
    forced: dict[str, Any] = {"reason": reason} if reason else {}
    if still:  # the override: who reads those DEKs now fails, and the trail says why
        forced.update(forced=True, deksWrapped=still)
    data: dict[str, Any] = {
        "retainUntil": iso(retain_until),
        "alreadyDisabled": not found.enabled,
        "via": via,
    }
    # Also when it was disabled behind our back (in the key service, or by a process killed
    # before it recorded the change): the trail catches up when it first sees it. The key
    # service's change is announced first (an intent), then the note and the event are
    # stored in one unit: a crash in between leaves the intent for audit verify to settle.
    if found.enabled:
        act = mek_event(runtime, MEK_VERSION_DISABLED, version, **data, **forced)
    elif note.disabled_at is None or still:
        act = mek_event(runtime, MEK_VERSION_DISABLED, version, intent=False, **data, **forced)
    else:
        act = unit_of_work(runtime.audit)
    with act:
        if found.enabled:
            runtime.provider.set_enabled(version, False)
        lifecycle.save_note(
            product,
            dataclasses.replace(
                note, disabled_at=note.disabled_at or now, retain_until=retain_until
            ),
        )
    evicted = runtime.encryptor.cache.invalidate_version(version)
    announce_key_change(runtime, [version], via=via)  # other processes drop its DEKs
    return Disabled(
        version=version,
        retain_until=retain_until,
        cache_evicted=evicted,
        was_enabled=found.enabled,
        forced=bool(still),
        deks_wrapped=still,
    )


def version_rows(runtime: ProductRuntime, lifecycle: LifecycleStore) -> list[dict[str, Any]]:
    """``keys list``: each version's state, DEK count, retention deadline and notes."""
    counts = dek_counts(runtime)
    notes = lifecycle.notes(runtime.encryptor.product)
    rows = []
    for v in runtime.provider.versions():
        note = notes.get(v.version, VersionNote(version=v.version))
        rows.append(
            {
                "version": v.version,
                "state": "enabled" if v.enabled else "disabled",
                "current": v.current,
                "created_at": v.created_at.isoformat(timespec="seconds"),
                "deks": counts.pop(v.version, 0),
                "retired_at": iso(note.retired_at),
                "retain_until": iso(note.retain_until),
                "compromised_at": iso(note.compromised_at),
                "dek_exposed": note.dek_exposed,
            }
        )
    rows += [
        {
            "version": v,
            "state": "unknown",
            "current": False,
            "created_at": None,
            "deks": n,
            "retired_at": None,
            "retain_until": None,
            "compromised_at": None,
            "dek_exposed": False,
        }
        for v, n in sorted(counts.items())
    ]
    return rows
