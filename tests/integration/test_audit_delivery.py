"""Delivery to actiontrail against a real HTTP receiver that fails, delays, duplicates and reorders.

Every behaviour runs on SQLite, PostgreSQL and Cosmos DB: the delivery checkpoint lives in the
product's own database.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from field_encrypt import audit
from field_encrypt.audit_delivery import (
    AuditDelivery,
    Backoff,
    DeliverableTrail,
    HttpDestination,
    received_hash,
)
from field_encrypt.backends.registry import open_audit_trail, open_database
from field_encrypt.errors import AuditChainError, ConfigurationError, DeliveryError
from tests import figures
from tests.backends import BACKEND_KINDS, backend_for
from tests.support.event_receiver import EventReceiver, Faults

PRODUCT = "notelett"
FAST = Backoff(base=0.005, cap=0.05, max_attempts=None)


@pytest.fixture(params=BACKEND_KINDS)
def trail(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[DeliverableTrail]:
    backend = backend_for(request.param, request, tmp_path)
    database = open_database(backend.settings())
    found = open_audit_trail(database, product=PRODUCT)
    assert isinstance(found, DeliverableTrail)
    yield found
    database.close()


def _fill(trail: Any, n: int, start: int = 0) -> None:
    for i in range(start, start + n):
        trail.emit(audit.RUN_PROGRESS, subject=f"run/{i}", data={"done": i})


def _chain_holds(events: list[dict[str, Any]]) -> bool:
    previous = audit.GENESIS
    for event in events:
        if event["prevhash"] != previous or received_hash(event) != event["hash"]:
            return False
        previous = event["hash"]
    return True


def test_every_event_arrives_once_in_order_despite_the_receiver(trail: Any) -> None:
    """Failures, lost acks, timeouts, delays, reordering and replays: after de-duplication by id
    the receiver holds every stored event exactly once, in chain order, and the chain checks."""
    _fill(trail, 40)
    faults = Faults(fail=0.15, lost_ack=0.1, slow=0.05, delay=0.1, reorder=0.1, replay=0.05)
    with EventReceiver(faults=faults).running() as receiver:
        destination = HttpDestination(receiver.url, timeout=0.25)
        report = AuditDelivery(trail, destination, batch=7, backoff=FAST).deliver()
        time.sleep(faults.slow_seconds)  # let slow answers finish logging
    stored = trail.events()
    settled = receiver.settled()
    assert [e["id"] for e in settled] == [e.id for e in stored]
    assert _chain_holds(settled)
    assert report.delivered == 40 and report.head == stored[-1].hash
    assert report.retries >= receiver.counts.get("fail", 0)
    # The faults happened: duplicates and a log out of order reached the receiver.
    assert len(receiver.log) > len(settled)
    assert [e["sequence"] for e in receiver.log] != sorted(e["sequence"] for e in receiver.log)
    for fault in ("fail", "lost_ack", "slow", "reorder"):
        assert receiver.counts.get(fault, 0) > 0, fault
    checkpoint = trail.delivered(destination.name)
    assert checkpoint is not None and checkpoint.seq == stored[-1].seq
    figures.record(
        "audit delivery (faulty receiver)",
        events=len(stored), requests=len(receiver.requests), logged=len(receiver.log),
        retries=report.retries, **{f"fault_{k}": v for k, v in receiver.counts.items()},
    )  # fmt: skip


def test_requests_are_structured_mode_cloudevents(trail: Any) -> None:
    """Content-Type application/cloudevents+json, the CloudEvent as the body, a bearer token."""
    _fill(trail, 2)
    with EventReceiver().running() as receiver:
        AuditDelivery(trail, HttpDestination(receiver.url, token="t0ken")).deliver()
    first = receiver.requests[0]
    assert first.headers["content-type"].startswith("application/cloudevents+json")
    assert first.headers["authorization"] == "Bearer t0ken"
    assert first.body["specversion"] == "1.0" and first.body["id"] == trail.events()[0].id
    assert first.body["sequence"] == f"{trail.events()[0].seq:020d}"


def test_a_new_delivery_resumes_after_the_last_acknowledged_event(trail: Any) -> None:
    """A second worker (a restart) sends only what the first did not: nothing twice."""
    _fill(trail, 12)
    with EventReceiver().running() as receiver:
        first = AuditDelivery(trail, HttpDestination(receiver.url)).deliver(limit=5)
        _fill(trail, 3, start=12)
        second = AuditDelivery(trail, HttpDestination(receiver.url)).deliver()
    assert (first.delivered, second.delivered) == (5, 10)
    assert [r.body["id"] for r in receiver.requests] == [e.id for e in trail.events()]


def test_the_checkpoint_is_per_destination_and_only_moves_forward(trail: Any) -> None:
    """Two destinations keep separate checkpoints; an older acknowledgement never moves one back."""
    _fill(trail, 3)
    events = trail.events()
    trail.record_delivered("http://a/", seq=events[2].seq, hash=events[2].hash)
    trail.record_delivered("http://a/", seq=events[0].seq, hash=events[0].hash)
    a = trail.delivered("http://a/")
    assert a is not None and (a.seq, a.hash) == (events[2].seq, events[2].hash)
    assert trail.delivered("http://b/") is None


def test_emitting_never_waits_for_delivery(trail: Any) -> None:
    """With a background worker stuck on a receiver that takes 1 s an answer, five emits take
    well under the 5 s they would if they waited for it, and the events arrive afterwards."""
    with EventReceiver(faults=Faults(every_delay=1.0)).running() as receiver:
        delivery = AuditDelivery(trail, HttpDestination(receiver.url), backoff=FAST)
        delivery.start(interval=0.05)
        try:
            _fill(trail, 1)
            deadline = time.monotonic() + 20
            while not receiver.requests and time.monotonic() < deadline:
                time.sleep(0.01)  # the worker is now inside the slow POST
            began = time.perf_counter()
            _fill(trail, 5, start=1)
            emitting = time.perf_counter() - began
            while len(receiver.settled()) < 6 and time.monotonic() < deadline + 20:
                time.sleep(0.05)
        finally:
            delivery.stop()
    assert emitting < 2.5
    assert [e["id"] for e in receiver.settled()] == [e.id for e in trail.events()]


def test_an_unreachable_destination_gives_up_and_keeps_the_checkpoint(trail: Any) -> None:
    """After max_attempts, DeliveryError names the event and says to re-run; nothing is skipped."""
    _fill(trail, 3)
    with EventReceiver(faults=Faults(fail=1.0)).running() as receiver:
        destination = HttpDestination(receiver.url)
        delivery = AuditDelivery(trail, destination, backoff=Backoff(base=0.001, max_attempts=3))
        with pytest.raises(DeliveryError, match=r"not delivered after 3 attempts.*HTTP 503"):
            delivery.deliver()
    assert receiver.counts["fail"] == 3
    assert trail.delivered(destination.name) is None


def test_a_redirect_is_not_an_acknowledgement(trail: Any) -> None:
    """A 302 whose target answers a GET with 200 must not count as delivered (urllib would
    follow it as a GET without the body)."""
    _fill(trail, 1)
    with EventReceiver(faults=Faults(redirect=1.0)).running() as receiver:
        destination = HttpDestination(receiver.url)
        delivery = AuditDelivery(trail, destination, backoff=Backoff(base=0.001, max_attempts=2))
        with pytest.raises(DeliveryError, match=r"HTTP 302 \(a redirect"):
            delivery.deliver()
    assert trail.delivered(destination.name) is None and receiver.log == []


def test_a_trail_rewritten_after_delivery_is_refused(trail: Any) -> None:
    """If the stored chain no longer follows on from the delivered head (event 1 was delivered
    with another hash than the database now holds), delivery stops and sends nothing."""
    _fill(trail, 3)
    first = trail.events()[0]
    with EventReceiver().running() as receiver:
        destination = HttpDestination(receiver.url)
        trail.record_delivered(destination.name, seq=first.seq, hash="f" * 64)
        with pytest.raises(AuditChainError, match="changed after delivery"):
            AuditDelivery(trail, destination).deliver()
    assert receiver.requests == []


def test_the_destination_url_is_checked_and_its_secrets_kept_out_of_its_name() -> None:
    """Bad URLs fail at construction; credentials and query never reach the checkpoint key."""
    with pytest.raises(ConfigurationError, match="http:// or https://"):
        HttpDestination("ftp://example.org/")
    name = HttpDestination("https://user:pw@trail.example:8443/in?sig=secret").name
    assert name == "https://trail.example:8443/in"
