"""On-call notification: what a rotation does, sent to a webhook as it happens.

The runbook's pre-flight says "notify on-call channel". An :class:`OnCallNotifier` posts a
:class:`Notice` to one webhook, as Slack-compatible JSON (``{"text": ...}``, which Slack,
Mattermost, Rocket.Chat and Teams' Slack-compatible connectors take) or as a structured-mode
CloudEvent (``application/cloudevents+json``, type ``io.field-encrypt.oncall.<kind>``).

Notices come from the audit trail (:class:`OnCallSink`, forwarded each event after it is
stored), so every path that emits the event notifies, whichever process runs it:

======================  ===========================================================
kind                    when
======================  ===========================================================
``rotation.started``    ``rotation.stage`` leaves ``idle`` (a scheduled rotation began)
``rotation.completed``  ``rotation.stage`` from ``retire`` back to ``idle``
``rotation.failed``     ``rotation.stage`` blocked (preflight, verify, rewrap), or ``run.failed``
``retire.refused``      ``rotation.stage`` blocked at the retire gate
``mek.compromised``     ``mek.version.compromised``
``rotation.stalled``    :func:`stall_notice` (``field-encrypt oncall check``, on a schedule)
======================  ===========================================================

**No key material, ever**: a notice carries only allow-listed fields of the event (versions,
stage, counts, the error's class name), checked like audit data (no bytes). **Never
blocking the act**: each notice is posted on its own (non-daemon) thread with a timeout and
one retry; a webhook that is down costs a log line, never the rotation. A short-lived CLI
process still waits for its notices (at most ``timeout`` × 2) before it exits.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import threading
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from field_encrypt.audit import (
    MEK_VERSION_COMPROMISED,
    ROTATION_STAGE,
    RUN_FAILED,
    checked_data,
)
from field_encrypt.audit_delivery import http_url, no_redirect_opener, post
from field_encrypt.errors import ConfigurationError, DeliveryError

log = logging.getLogger("field_encrypt.oncall")

Kind = Literal[
    "rotation.started",
    "rotation.completed",
    "rotation.failed",
    "rotation.stalled",
    "retire.refused",
    "mek.compromised",
]
KINDS: tuple[Kind, ...] = (
    "rotation.started", "rotation.completed", "rotation.failed", "rotation.stalled",
    "retire.refused", "mek.compromised",
)  # fmt: skip
Form = Literal["slack", "cloudevents"]

FIELDS = frozenset(
    {
        "stage", "previous", "fromVersion", "toVersion", "blocked", "reason", "mode", "runId",
        "version", "mekName", "wasCurrent", "dekExposed", "deksWrapped", "failures", "matched",
        "changed", "failed", "remaining", "cursorSaved", "stalledMinutes", "since", "auditEventId",
        "retiredVersion", "currentVersion", "retainUntil",
    }
)  # fmt: skip
"""The only event fields a notice may carry."""

_ICONS = {
    "rotation.started": ":arrows_counterclockwise:",
    "rotation.completed": ":white_check_mark:",
    "rotation.failed": ":rotating_light:",
    "rotation.stalled": ":hourglass:",
    "retire.refused": ":no_entry:",
    "mek.compromised": ":rotating_light:",
}


@dataclass(frozen=True, slots=True, kw_only=True)
class Notice:
    """One thing on-call should know about."""

    kind: Kind
    product: str
    summary: str
    fields: Mapping[str, Any] = field(default_factory=dict)
    time: str = field(default_factory=lambda: dt.datetime.now(dt.UTC).isoformat())

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ConfigurationError(f"unknown on-call notice kind {self.kind!r}")
        kept = {k: v for k, v in self.fields.items() if k in FIELDS}
        object.__setattr__(self, "fields", checked_data("io.field-encrypt.oncall", kept))

    def slack(self) -> dict[str, Any]:
        """Slack-compatible incoming-webhook JSON."""
        details = ", ".join(f"{k}={v}" for k, v in sorted(self.fields.items()) if v is not None)
        text = f"{_ICONS[self.kind]} [{self.product}] {self.summary}"
        return {"text": text + (f"\n`{details}`" if details else "")}

    def cloudevent(self) -> dict[str, Any]:
        """The notice as a structured-mode CloudEvent."""
        return {
            "specversion": "1.0",
            "id": uuid.uuid4().hex,
            "type": f"io.field-encrypt.oncall.{self.kind}",
            "source": f"field-encrypt/{self.product}",
            "subject": "rotation",
            "time": self.time,
            "datacontenttype": "application/json",
            "data": {"kind": self.kind, "summary": self.summary, **self.fields},
        }


class OnCallNotifier:
    """Posts notices to one webhook, in the background, never raising into the caller."""

    def __init__(
        self,
        url: str,
        *,
        form: Form = "slack",
        timeout: float = 5.0,
        opener: urllib.request.OpenerDirector | None = None,
    ) -> None:
        parts = http_url(url, "FIELD_ENCRYPT_ONCALL_WEBHOOK")
        if form not in ("slack", "cloudevents"):
            raise ConfigurationError("FIELD_ENCRYPT_ONCALL_FORMAT must be slack or cloudevents")
        self.name = f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}"
        self.form = form
        self._url = url
        self._timeout = timeout
        self._opener = opener or no_redirect_opener()
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()

    def __repr__(self) -> str:  # the webhook's path is its secret (Slack's are)
        return f"OnCallNotifier({self.name!r}, form={self.form!r})"

    def notify(self, notice: Notice) -> None:
        """Send ``notice`` on a thread of its own; return at once."""
        thread = threading.Thread(target=self._post, args=(notice,), name="oncall-notice")
        with self._lock:
            self._threads = [t for t in self._threads if t.is_alive()]
            self._threads.append(thread)
        thread.start()

    def flush(self, timeout: float | None = None) -> None:
        """Wait for the notices sent so far (tests; a process about to exit)."""
        with self._lock:
            threads = list(self._threads)
        for thread in threads:
            thread.join(timeout)

    def send(self, notice: Notice) -> None:
        """Post ``notice`` now; ``DeliveryError`` if the webhook did not take it."""
        if self.form == "slack":
            body, content_type = notice.slack(), "application/json"
        else:
            body, content_type = notice.cloudevent(), "application/cloudevents+json; charset=utf-8"
        post(
            self._opener,
            self._url,
            json.dumps(body, ensure_ascii=False).encode(),
            {"Content-Type": content_type},
            timeout=self._timeout,
            what=f"the on-call webhook {self.name}",
        )

    def _post(self, notice: Notice) -> None:
        for attempt in (1, 2):
            try:
                self.send(notice)
                return
            except DeliveryError as exc:
                if attempt == 2:
                    log.warning("on-call notice %s not sent: %s", notice.kind, exc)


def notice_for(product: str, event: Mapping[str, Any]) -> Notice | None:
    """The notice an audit event calls for, or ``None`` (most events call for none)."""
    type_ = event.get("type")
    data: Mapping[str, Any] = event.get("data") or {}
    fields = {**data, "auditEventId": event.get("id")}
    move = f"{data.get('fromVersion') or '?'}→{data.get('toVersion') or '?'}"
    if type_ == ROTATION_STAGE:
        blocked = data.get("blocked")
        if blocked:
            if str(blocked).startswith("blocked at retire"):
                return Notice(
                    kind="retire.refused", product=product, summary=f"rotation {move}: {blocked}",
                    fields=fields,
                )  # fmt: skip
            return Notice(
                kind="rotation.failed", product=product, summary=f"rotation {move}: {blocked}",
                fields=fields,
            )  # fmt: skip
        previous, stage = data.get("previous"), data.get("stage")
        if previous == "idle" and stage != "idle":
            return Notice(
                kind="rotation.started", product=product,
                summary=f"MEK rotation started (stage {stage})", fields=fields,
            )  # fmt: skip
        if previous == "retire" and stage == "idle":
            return Notice(
                kind="rotation.completed", product=product,
                summary=f"MEK rotation {data.get('retiredVersion') or '?'}→"
                f"{data.get('currentVersion') or '?'} completed: version "
                f"{data.get('retiredVersion') or '?'} retired (kept disabled until "
                f"{data.get('retainUntil') or '?'})",
                fields=fields,
            )  # fmt: skip
        return None
    if type_ == RUN_FAILED:
        return Notice(
            kind="rotation.failed", product=product,
            summary=f"{data.get('mode', 'migration')} run {data.get('runId', '?')} failed "
            f"({data.get('reason', 'error')}); re-run to resume from its cursor",
            fields=fields,
        )  # fmt: skip
    if type_ == MEK_VERSION_COMPROMISED:
        return Notice(
            kind="mek.compromised", product=product,
            summary=f"MEK version {data.get('version', '?')} of {data.get('mekName', '?')} was "
            "declared compromised: follow the compromise runbook",
            fields=fields,
        )  # fmt: skip
    return None


class OnCallSink:
    """An :class:`~field_encrypt.audit.AuditSink` that turns the events that matter into notices."""

    def __init__(self, notifier: OnCallNotifier, *, product: str) -> None:
        self.notifier = notifier
        self.product = product

    def __repr__(self) -> str:
        return f"OnCallSink({self.notifier!r})"

    def send(self, event: Mapping[str, Any]) -> None:
        notice = notice_for(self.product, event)
        if notice is not None:
            self.notifier.notify(notice)


def notifier_from_settings(url: str, form: str) -> OnCallNotifier | None:
    """``FIELD_ENCRYPT_ONCALL_WEBHOOK`` and ``FIELD_ENCRYPT_ONCALL_FORMAT``; ``None`` when unset."""
    if not url:
        return None
    if form not in ("slack", "cloudevents"):
        raise ConfigurationError("FIELD_ENCRYPT_ONCALL_FORMAT must be slack or cloudevents")
    return OnCallNotifier(url, form=form)  # type: ignore[arg-type]


def stall_notice(
    *,
    product: str,
    stage: str,
    since: float | None,
    last_activity: float | None,
    threshold_minutes: float,
    now: Callable[[], float],
) -> Notice | None:
    """A ``rotation.stalled`` notice when a rotation stage (other than ``idle`` and the soak)
    has shown no activity for longer than ``threshold_minutes``; ``None`` otherwise."""
    if stage in ("idle", "soak"):
        return None
    times = [t for t in (since, last_activity) if t is not None]
    if not times:
        return None
    latest = max(times)
    idle_minutes = (now() - latest) / 60.0
    if idle_minutes <= threshold_minutes:
        return None
    return Notice(
        kind="rotation.stalled",
        product=product,
        summary=f"MEK rotation stalled: no progress in stage {stage} for {idle_minutes:.0f} "
        f"minutes (threshold {threshold_minutes:g}); check the rotate job and "
        "`field-encrypt rotate --status`",
        fields={
            "stage": stage,
            "stalledMinutes": round(idle_minutes, 1),
            "since": dt.datetime.fromtimestamp(latest, dt.UTC).isoformat(timespec="seconds"),
        },
    )
