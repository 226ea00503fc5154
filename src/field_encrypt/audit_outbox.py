"""Resolving the audit outbox's pending intents: an act interrupted before its event.

An act with a part outside the product's database (a MEK version enabled or disabled in
the key service) is announced first (:meth:`~field_encrypt.audit.Outbox.intend`), then
done, then recorded with its event in one unit that settles the intent
(:func:`~field_encrypt.audit.recorded`). A crash (kill -9, a lost host) between the
announcement and that unit leaves the intent pending. :func:`reconcile` asks the key
service whether the act took effect: if it did, the event is appended now (its ``data`` as
announced, plus ``"recovered": true``); if it did not, the intent is dropped. An intent of
a type nothing here can check is appended with ``"outcome": "unconfirmed"``, so an act is
never without its event (at worst an event says the act may have happened).

``audit verify`` and ``audit deliver`` reconcile before they read the trail.
"""

from __future__ import annotations

from typing import Any

from field_encrypt.audit import MEK_VERSION_DISABLED, MEK_VERSION_ENABLED, PendingIntent
from field_encrypt.products import ProductRuntime


def _took_effect(runtime: ProductRuntime, intent: PendingIntent) -> bool | None:
    """Whether the announced act happened; ``None``: this cannot tell."""
    if intent.type in (MEK_VERSION_ENABLED, MEK_VERSION_DISABLED):
        version = intent.data.get("version")
        for v in runtime.provider.versions():
            if v.version == version:
                return v.enabled == (intent.type == MEK_VERSION_ENABLED)
        return False
    return None


def reconcile(runtime: ProductRuntime) -> list[tuple[PendingIntent, str]]:
    """Resolve every pending intent of the product's trail; each with what was done
    (``recorded``, ``dropped`` or ``unconfirmed``)."""
    trail: Any = runtime.audit
    if trail is None or not hasattr(trail, "pending"):
        return []
    done = []
    for intent in trail.pending():
        happened = _took_effect(runtime, intent)
        with trail.within():
            if happened is False:
                outcome = "dropped"
            else:
                outcome = "recorded" if happened else "unconfirmed"
                data = {**intent.data, "recovered": True}
                if happened is None:
                    data["outcome"] = "unconfirmed"
                trail.emit(intent.type, subject=intent.subject, data=data)
            trail.settle(intent.id)
        done.append((intent, outcome))
    return done
