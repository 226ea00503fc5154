"""Delivering the audit trail to ``actiontrail``: CloudEvents over HTTP, in chain order, at least once.

A :class:`AuditDelivery` reads a product's stored events after its **delivery checkpoint**
(the last event the destination acknowledged, kept in the product's own database, one per
destination) and POSTs them one at a time, oldest first, to an :class:`HttpDestination` in
the CloudEvents HTTP binding's structured mode (``Content-Type:
application/cloudevents+json``). An event counts as delivered when the destination answers
2xx; only then does the checkpoint move past it. So:

- **order**: event *n + 1* is sent only after *n* was acknowledged;
- **at least once**: a crash, a timeout or a lost answer after the destination stored an
  event means it is sent again; the destination de-duplicates by the CloudEvent ``id``
  (and can order by the ``sequence`` extension, or by following ``prevhash``);
- **resumable**: a restarted delivery starts after the checkpoint, re-sending at most the
  one event that was in flight;
- **never blocking the act**: emitting an event only writes it to the database; delivery is
  a separate reader, and a destination that is down delays nothing but delivery.

Before sending, each event is checked against the chain: its hash over its content, and its
``prevhash`` against the event delivered before it. A trail rewritten in the database after
some of it was delivered is refused (:class:`~field_encrypt.errors.AuditChainError`),
never forwarded as if it were the same trail.

Failures are retried with exponential backoff and full jitter (:class:`Backoff`); 4xx
answers other than 408 and 429 are retried too, but reported as refusals, since an operator
has to fix them (a wrong token, a wrong URL).
"""

from __future__ import annotations

import json
import logging
import random
import threading
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from field_encrypt.audit import GENESIS, AuditEvent, event_hash
from field_encrypt.errors import (
    AuditChainError,
    ConfigurationError,
    DeliveryError,
    KeyProviderError,
    StoreError,
)

if TYPE_CHECKING:  # urllib.request (with http.client) is imported when something is sent:
    import urllib.request  # every product runtime imports this module (start-up time)

CONTENT_TYPE = "application/cloudevents+json; charset=utf-8"
log = logging.getLogger("field_encrypt.audit_delivery")


@dataclass(frozen=True, slots=True, kw_only=True)
class DeliveryCheckpoint:
    """The last event a destination acknowledged, as the product's database records it."""

    destination: str
    seq: int
    hash: str
    updated_at: str


@runtime_checkable
class DeliverableTrail(Protocol):
    """An :class:`~field_encrypt.audit.AuditTrail` that can be read forward and delivered."""

    product: str

    def read_after(self, seq: int, *, limit: int) -> list[AuditEvent]:
        """Up to ``limit`` stored events after position ``seq``, in chain order."""
        ...

    def delivered(self, destination: str) -> DeliveryCheckpoint | None:
        """The delivery checkpoint for ``destination``; ``None`` before the first event."""
        ...

    def record_delivered(self, destination: str, *, seq: int, hash: str) -> None:
        """Move ``destination``'s checkpoint to ``seq`` (forward only: never back)."""
        ...


class Destination(Protocol):
    """Where events go; ``name`` keys the delivery checkpoint."""

    name: str

    def send(self, event: Mapping[str, Any]) -> None:
        """Deliver one event; return when acknowledged, raise ``DeliveryError`` otherwise."""
        ...


def wire_form(event: AuditEvent) -> dict[str, Any]:
    """The CloudEvent as delivered: the stored event plus the ``sequence`` extension.

    ``sequence`` is the event's position, zero-padded to 20 digits so it orders as text. The
    ``hash`` covers the stored event, which has no ``sequence``: a receiver re-checking it
    drops ``hash`` and ``sequence`` first (:func:`received_hash`).
    """
    body = event.cloudevent()
    body["sequence"] = f"{event.seq:020d}"
    return body


def received_hash(event: Mapping[str, Any]) -> str:
    """The hash a receiver recomputes over a delivered event (without ``sequence``)."""
    return event_hash({k: v for k, v in event.items() if k != "sequence"})


def no_redirect_opener() -> urllib.request.OpenerDirector:
    """An opener for POSTs that must reach their URL: 3xx answers raise ``HTTPError``."""
    import urllib.request

    class RefuseRedirects(urllib.request.HTTPRedirectHandler):
        """A redirect is an error, not something to follow: urllib would turn the POST into
        a GET without its body, and the 2xx that follows would acknowledge an event never
        sent."""

        def redirect_request(self, *args: Any, **kwargs: Any) -> None:
            return None

    return urllib.request.build_opener(RefuseRedirects())


def http_url(url: str, what: str) -> urllib.parse.SplitResult:
    """``url`` split, if it is an http:// or https:// URL with a host; a
    :class:`ConfigurationError` naming ``what`` otherwise."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigurationError(f"{what} must be an http:// or https:// URL with a host")
    return parts


def post(
    opener: urllib.request.OpenerDirector,
    url: str,
    body: bytes,
    headers: Mapping[str, str],
    *,
    timeout: float,
    what: str,
    on_redirect: str = "",
) -> None:
    """POST ``body`` to ``url``; a :class:`DeliveryError` naming ``what`` (the endpoint
    without its secrets) if it did not answer or did not take it (``on_redirect``: added
    to the message of a 3xx)."""
    import urllib.error
    import urllib.request

    request = urllib.request.Request(url, data=body, method="POST", headers=dict(headers))
    try:
        with opener.open(request, timeout=timeout) as response:
            response.read()
    except urllib.error.HTTPError as exc:
        exc.close()
        moved = on_redirect if 300 <= exc.code < 400 else ""
        raise DeliveryError(f"{what} answered HTTP {exc.code}{moved}", status=exc.code) from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", None) or type(exc).__name__
        raise DeliveryError(f"{what} did not answer ({reason})") from None


class HttpDestination:
    """An HTTP endpoint taking CloudEvents in structured mode (one event per POST).

    ``name`` is the URL without credentials, query or fragment, so that a token in the URL
    never reaches the database, a log line or an error message.
    """

    def __init__(
        self,
        url: str,
        *,
        timeout: float = 10.0,
        token: str | None = None,
        opener: urllib.request.OpenerDirector | None = None,
    ) -> None:
        parts = http_url(url, "the audit destination")
        if timeout <= 0:
            raise ConfigurationError("the audit destination's timeout must be positive")
        hostname = parts.hostname or ""  # http_url checked there is one
        host = hostname if ":" not in hostname else f"[{hostname}]"
        port = f":{parts.port}" if parts.port else ""
        self.name = f"{parts.scheme}://{host}{port}{parts.path or '/'}"
        self._url = url
        self._timeout = timeout
        self._token = token
        self._opener = opener or no_redirect_opener()

    def __repr__(self) -> str:
        return f"HttpDestination({self.name!r})"

    def send(self, event: Mapping[str, Any]) -> None:
        body = json.dumps(event, sort_keys=True, ensure_ascii=False).encode()
        headers = {"Content-Type": CONTENT_TYPE}
        if self._token:
            headers["Authorization"] = f"Bearer {self._token}"
        post(
            self._opener,
            self._url,
            body,
            headers,
            timeout=self._timeout,
            what=f"the audit destination {self.name}",
            on_redirect=" (a redirect: point --to at the final URL)",
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class Backoff:
    """Exponential backoff with full jitter: attempt *k* waits up to ``min(cap, base·2^k)``."""

    base: float = 0.5
    cap: float = 60.0
    max_attempts: int | None = 8
    """Attempts per event before :meth:`AuditDelivery.deliver` gives up; ``None``: never."""

    def delay(self, attempt: int, rand: Callable[[], float] = random.random) -> float:
        """The wait before retry number ``attempt`` (0 for the first retry)."""
        return float(min(self.cap, self.base * 2.0 ** min(attempt, 30)) * (0.5 + rand() / 2))


@dataclass(frozen=True, slots=True, kw_only=True)
class DeliveryReport:
    """What one :meth:`AuditDelivery.deliver` pass did."""

    destination: str
    delivered: int
    retries: int
    last_seq: int | None
    head: str | None
    """The hash of the last event the destination has acknowledged (this pass or before)."""


class AuditDelivery:
    """Sends a product's trail to one destination, resuming from its checkpoint."""

    def __init__(
        self,
        trail: DeliverableTrail,
        destination: Destination,
        *,
        batch: int = 100,
        backoff: Backoff | None = None,
        on_delivered: Callable[[AuditEvent], None] | None = None,
        reconcile: Callable[[], object] | None = None,
    ) -> None:
        """``reconcile`` runs before each pass: the audit outbox's pending intents resolved
        (:func:`field_encrypt.audit_outbox.reconcile`), so recovered events go out too."""
        if not isinstance(trail, DeliverableTrail):
            raise ConfigurationError(f"{trail!r} cannot be delivered (no delivery checkpoint)")
        if batch < 1:
            raise ConfigurationError("the delivery batch must be at least 1")
        self.trail = trail
        self.destination = destination
        self.batch = batch
        self.backoff = backoff or Backoff()
        self._on_delivered = on_delivered
        self._reconcile = reconcile
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __repr__(self) -> str:
        return f"AuditDelivery({self.trail.product!r} -> {self.destination.name!r})"

    def deliver(self, *, limit: int | None = None) -> DeliveryReport:
        """Send every event after the checkpoint, in order; return once caught up.

        ``limit`` stops after that many events. Raises ``DeliveryError`` when an event
        was not acknowledged after ``backoff.max_attempts`` attempts, or when the stored
        chain does not follow on from what was delivered (the checkpoint stays where it was).
        """
        if self._reconcile is not None:
            self._reconcile()
        name = self.destination.name
        checkpoint = self.trail.delivered(name)
        after, previous = (checkpoint.seq, checkpoint.hash) if checkpoint else (0, GENESIS)
        delivered = retries = 0
        while limit is None or delivered < limit:
            want = self.batch if limit is None else min(self.batch, limit - delivered)
            events = self.trail.read_after(after, limit=want)
            if not events:
                break
            for event in events:
                if self._stop.is_set():
                    return DeliveryReport(
                        destination=name, delivered=delivered, retries=retries,
                        last_seq=after or None, head=None if after == 0 else previous,
                    )  # fmt: skip
                _check_link(event, previous)
                retries += self._send(event)
                self.trail.record_delivered(name, seq=event.seq, hash=event.hash)
                if self._on_delivered is not None:
                    self._on_delivered(event)
                after, previous = event.seq, event.hash
                delivered += 1
        return DeliveryReport(
            destination=name, delivered=delivered, retries=retries,
            last_seq=after or None, head=None if after == 0 else previous,
        )  # fmt: skip

    def follow(self, *, interval: float = 2.0) -> None:
        """Deliver until :meth:`stop`: poll every ``interval`` seconds once caught up.

        Failures (destination or database) are logged and retried after the backoff; they
        never end the loop.
        """
        failures = 0
        while not self._stop.is_set():
            try:
                self.deliver()
                failures = 0
                wait = interval
            except (DeliveryError, AuditChainError, StoreError, KeyProviderError) as exc:
                wait = self.backoff.delay(failures)
                failures += 1
                log.warning(
                    "audit delivery to %s paused: %s (retry in %.1f s)",
                    self.destination.name, exc, wait,
                )  # fmt: skip
            self._stop.wait(wait)

    def start(self, *, interval: float = 2.0) -> threading.Thread:
        """Run :meth:`follow` on a daemon thread (a service's background delivery)."""
        if self._thread is not None and self._thread.is_alive():
            return self._thread
        self._stop.clear()
        self._thread = threading.Thread(
            target=self.follow, kwargs={"interval": interval}, name="audit-delivery", daemon=True
        )
        self._thread.start()
        return self._thread

    def stop(self, timeout: float | None = 10.0) -> None:
        """Ask :meth:`follow` (and a running :meth:`deliver`) to stop; join the thread."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _send(self, event: AuditEvent) -> int:
        """Send until acknowledged; the number of retries it took."""
        body = wire_form(event)
        attempt = 0
        while True:
            try:
                self.destination.send(body)
                return attempt
            except DeliveryError as exc:
                limit = self.backoff.max_attempts
                if limit is not None and attempt + 1 >= limit:
                    raise DeliveryError(
                        f"event {event.seq} of {self.trail.product} was not delivered after "
                        f"{attempt + 1} attempts: {exc}; run the delivery again (it resumes "
                        "from the last acknowledged event)",
                        status=exc.status,
                    ) from None
                wait = self.backoff.delay(attempt)
                attempt += 1
                if self._stop.wait(wait):
                    raise DeliveryError("audit delivery stopped") from None


def _check_link(event: AuditEvent, previous: str) -> None:
    if event.prevhash != previous:
        raise AuditChainError(
            f"event {event.seq} of the trail does not follow the last delivered event: the "
            "trail in the database was changed after delivery; run `field-encrypt audit "
            "verify` and compare with the destination's copy"
        )
    if event_hash(event.cloudevent()) != event.hash:
        raise AuditChainError(
            f"event {event.seq} of the trail does not match its hash (edited in the "
            "database); run `field-encrypt audit verify`"
        )
