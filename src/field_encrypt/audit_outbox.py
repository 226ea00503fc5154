"""Resolving the audit outbox's pending intents: an act interrupted before its event.

An act with a part outside the product's database transaction (a MEK version created,
enabled or disabled in the key service; on Cosmos DB, every act) is announced first (:meth:`~field_encrypt.audit.Outbox.intend`), then
done, then its event is stored and the intent settled (in one transaction on SQL; on
Cosmos DB the event carries the intent's id, so it is never stored twice)
(:func:`~field_encrypt.audit.recorded`). A crash (kill -9, a lost host) between the
announcement and the settling leaves the intent pending. :func:`reconcile` asks the key
service, the DEK store, the KEK store, the run ledger or the version notes whether the act
took effect: if it did, the event is appended now (its ``data`` as announced, plus
``"recovered": true``); if it did not, the intent is dropped. Two acts are told apart
by more than yes or no: a MEK version's creation names its version only once made (the
first version the key service has beyond those the intent listed, and has no event yet),
and a page of a document run records the announced documents whose write took effect
(none: dropped). An intent of
a type nothing here can check is appended with ``"outcome": "unconfirmed"``, so an act is
never without its event (at worst an event says the act may have happened).

``audit verify`` and ``audit deliver`` reconcile before they read the trail, a background
delivery (``audit deliver --follow``, NoteLett's worker) before each pass, leaving intents
younger than :data:`FOLLOW_GRACE_SECONDS` alone: one may belong to an act still under way
in another process (announced, not yet done), which a probe would find not done.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from typing import Any

from field_encrypt.audit import (
    DEK_COLLECTED,
    DEK_RESTORED,
    DEK_SHREDDED,
    DOCUMENT_BACKFILLED,
    DOCUMENT_REENCRYPTED,
    DOCUMENT_REINDEXED,
    INDEX_KEY_CREATED,
    INDEX_KEY_RETIRED,
    KEK_CREATED,
    KEK_DELETED,
    KEK_REWRAPPED,
    LEASE_RECLAIMED,
    MEK_VERSION_COMPROMISED,
    MEK_VERSION_CREATED,
    MEK_VERSION_DISABLED,
    MEK_VERSION_ENABLED,
    MEK_VERSION_RETIRED,
    RUN_COMPLETED,
    RUN_STARTED,
    PendingIntent,
)
from field_encrypt.errors import NotFoundError
from field_encrypt.products import ProductRuntime

DOCUMENT_TYPES = (DOCUMENT_REENCRYPTED, DOCUMENT_BACKFILLED, DOCUMENT_REINDEXED)
CAUGHT_UP_TYPES = (MEK_VERSION_ENABLED, MEK_VERSION_DISABLED)
"""Acts a later call records when it finds them done (a re-run after a kill): their
intent settles without a second event."""

FOLLOW_GRACE_SECONDS = 120.0
"""How old an intent must be before a background delivery resolves it (acts take seconds)."""


def _took_effect(runtime: ProductRuntime, intent: PendingIntent) -> bool | None:
    """Whether the announced act happened; ``None``: this cannot tell."""
    check = {**intent.data, **intent.check}
    if intent.type in (MEK_VERSION_ENABLED, MEK_VERSION_DISABLED):
        for v in runtime.provider.versions():
            if v.version == check.get("version"):
                return v.enabled == (intent.type == MEK_VERSION_ENABLED)
        return False
    if intent.type in (MEK_VERSION_RETIRED, MEK_VERSION_COMPROMISED) and "version" in check:
        from field_encrypt.backends.registry import open_lifecycle_store

        note = open_lifecycle_store(runtime.database).note(
            runtime.encryptor.product, str(check["version"])
        )
        if intent.type == MEK_VERSION_RETIRED:
            return note.retired_at is not None
        return note.compromised and (note.dek_exposed or not check.get("dekExposed"))
    if intent.type in (KEK_DELETED, KEK_CREATED, KEK_REWRAPPED) and "kekId" in check:
        keks = getattr(runtime.provider, "keks", None)
        if keks is None:
            return None
        try:
            kek = keks.get(str(check["kekId"]))
        except NotFoundError:
            return intent.type == KEK_DELETED
        if intent.type == KEK_REWRAPPED:  # its wrap is under the version it moved to
            return bool(kek.mek_version == check.get("toVersion"))
        return intent.type == KEK_CREATED
    if intent.type in (DEK_SHREDDED, DEK_COLLECTED, INDEX_KEY_RETIRED) and "dekId" in check:
        try:
            runtime.dek_store.get(str(check["dekId"]))
        except NotFoundError:
            return True
        return False
    if intent.type in (DEK_RESTORED, INDEX_KEY_CREATED) and "wrappedSha256" in check:
        try:  # the row holds the wrap this act wrote
            row = runtime.dek_store.get(str(check.get("dekId", check.get("keyId"))))
        except NotFoundError:
            return False
        return bool(hashlib.sha256(row.wrapped).hexdigest() == check["wrappedSha256"])
    if intent.type == LEASE_RECLAIMED and "holder" in check:
        from field_encrypt.backends.registry import open_run_ledger

        try:
            run = open_run_ledger(runtime.database).get_run(str(check["runId"]))
        except NotFoundError:
            return False
        return bool(run.shard(int(check["shard"])).owner != check["holder"])
    if intent.type in (RUN_STARTED, RUN_COMPLETED) and "runId" in check:
        from field_encrypt.backends.registry import open_run_ledger

        try:
            run = open_run_ledger(runtime.database).get_run(str(check["runId"]))
        except NotFoundError:
            return False
        if intent.type == RUN_COMPLETED:
            return run.finished
        shard = run.shard(int(check.get("shard", 0)))
        return shard.owner is not None or shard.status != "pending"
    return None


def _created(intent: PendingIntent) -> dt.datetime:
    """When the intent was written (a time without a zone is UTC)."""
    created = dt.datetime.fromisoformat(intent.created_at)
    return created if created.tzinfo is not None else created.replace(tzinfo=dt.UTC)


def _age(intent: PendingIntent, now: dt.datetime) -> float:
    """Seconds since the intent was written."""
    return (now - _created(intent)).total_seconds()


def _caught_up(trail: Any, intent: PendingIntent) -> bool:
    """Whether a later call already recorded the act (a ``keys disable`` re-run after a
    kill records a version it finds disabled, ``alreadyDisabled``): an event of the
    intent's type and subject stored since the intent was written."""
    return bool(
        trail.events(types=[intent.type], subject=intent.subject, since=_created(intent), limit=1)
    )


def reconcile(runtime: ProductRuntime, *, min_age: float = 0.0) -> list[tuple[PendingIntent, str]]:
    """Resolve every pending intent of the product's trail at least ``min_age`` seconds
    old; each with what was done (``recorded``, ``dropped``, ``unconfirmed``, or
    ``settled``: its event was stored, only the intent was left)."""
    trail: Any = runtime.audit
    if trail is None or not hasattr(trail, "pending"):
        return []
    done = []
    now = dt.datetime.now(dt.UTC)
    for intent in trail.pending():
        if min_age and _age(intent, now) < min_age:
            continue
        stored = getattr(trail, "emitted_for", None)
        if stored is not None and stored(intent.id):
            trail.settle(intent.id)
            done.append((intent, "settled"))
            continue
        subject, data = intent.subject, dict(intent.data)
        happened: bool | None
        if intent.type == MEK_VERSION_CREATED:
            happened, version = _version_created(runtime, intent)
            if happened and version is None:  # made, and recorded already (rotate adopted it)
                trail.settle(intent.id)
                done.append((intent, "settled"))
                continue
            if version is not None:
                subject, data = f"{subject}/{version}", {**data, "version": version}
        elif intent.type in DOCUMENT_TYPES:
            items = _documents_done(runtime, intent)
            happened = bool(items)
            data.update(count=len(items), documents=items)
        else:
            happened = _took_effect(runtime, intent)
            if happened and intent.type in CAUGHT_UP_TYPES and _caught_up(trail, intent):
                trail.settle(intent.id)
                done.append((intent, "settled"))
                continue
        with trail.within():
            if happened is False:
                outcome = "dropped"
            else:
                outcome = "recorded" if happened else "unconfirmed"
                data["recovered"] = True
                if happened is None:
                    data["outcome"] = "unconfirmed"
                trail.emit_for(intent.id, intent.type, subject=subject, data=data)
            trail.settle(intent.id)
        done.append((intent, outcome))
    return done


def _version_created(runtime: ProductRuntime, intent: PendingIntent) -> tuple[bool, str | None]:
    """Whether a MEK version was created after the intent (one the key service has and the
    intent's ``knownVersions`` does not), and the first such one with no event yet
    (``None`` when each has its event: a ``rotate`` that adopted it recorded it late)."""
    known = set(intent.check.get("knownVersions", ()))
    new = sorted(
        (v for v in runtime.provider.versions() if v.version not in known),
        key=lambda v: v.created_at,
    )
    trail: Any = runtime.audit
    for v in new:  # the intent's subject is mek/NAME: the version is what the act made
        subject = f"{intent.subject}/{v.version}"
        if not trail.events(types=[MEK_VERSION_CREATED], subject=subject, limit=1):
            return True, v.version
    return bool(new), None


def _documents_done(runtime: ProductRuntime, intent: PendingIntent) -> list[dict[str, Any]]:
    """The announced documents of a page whose write took effect (see ``docwalk``)."""
    from field_encrypt.rotation.docwalk import page_item_done

    collection = str(intent.data.get("collection", ""))
    mode = str(intent.data.get("mode", ""))
    return [
        dict(item)
        for item in intent.data.get("documents", ())
        if page_item_done(runtime, mode, collection, item)
    ]
