"""A real HTTP receiver for delivered events and webhooks, that misbehaves on purpose.

:class:`EventReceiver` is a threaded ``http.server`` on 127.0.0.1 that records every POST
(headers and JSON body). A :class:`Faults` plan makes it fail, delay, duplicate and reorder:

- ``fail``: answer 503 without keeping the event (the sender must retry);
- ``lost_ack``: keep the event, then answer 500 (the sender resends: a duplicate);
- ``slow``: keep the event, then answer only after ``slow_seconds`` (past the sender's
  timeout: it resends, another duplicate);
- ``delay``: wait ``delay_seconds``, keep the event, answer 200;
- ``reorder``: hold the event back and log it after the next one (the log's order is not the
  order of arrival);
- ``replay``: keep the event, and log an earlier one again (a late retransmission);
- ``redirect``: answer 302 to ``/moved`` without keeping the event (a GET there answers 200).

:meth:`EventReceiver.settled` is what a de-duplicating receiver ends with: one copy of each
``id``, ordered by the ``sequence`` extension.
"""

from __future__ import annotations

import json
import random
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

FAULTS = ("fail", "lost_ack", "slow", "delay", "reorder", "replay", "redirect")


@dataclass(kw_only=True)
class Faults:
    """Per-request fault probabilities (the rest are answered 200 at once), seeded."""

    fail: float = 0.0
    lost_ack: float = 0.0
    slow: float = 0.0
    delay: float = 0.0
    reorder: float = 0.0
    replay: float = 0.0
    redirect: float = 0.0
    slow_seconds: float = 0.5
    delay_seconds: float = 0.02
    every_delay: float = 0.0
    """A delay added to every request (to slow a delivery down for a crash test)."""
    seed: int = 18

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)
        self._lock = threading.Lock()

    def draw(self) -> str | None:
        """The fault for the next request, or ``None``."""
        with self._lock:
            roll = self._rng.random()
        for name in FAULTS:
            p = float(getattr(self, name))
            if roll < p:
                return name
            roll -= p
        return None


@dataclass
class Received:
    """One POST as the receiver saw it."""

    path: str
    headers: dict[str, str]
    body: Any


@dataclass
class EventReceiver:
    """The server; ``url`` once started."""

    faults: Faults = field(default_factory=Faults)
    requests: list[Received] = field(default_factory=list)
    log: list[dict[str, Any]] = field(default_factory=list)
    """The events kept, in the (possibly shuffled) order the receiver logged them."""
    counts: dict[str, int] = field(default_factory=dict)
    url: str = ""

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._held: dict[str, Any] | None = None

    def keep(self, event: dict[str, Any], fault: str | None) -> None:
        with self._lock:
            if fault == "reorder" and self._held is None:
                self._held = event
                return
            self.log.append(event)
            if self._held is not None and self._held is not event:
                self.log.append(self._held)
                self._held = None
            if fault == "replay" and len(self.log) > 1:
                self.log.append(self.log[random.Random(len(self.log)).randrange(len(self.log))])

    def flush(self) -> None:
        """Log an event still held back by ``reorder``."""
        with self._lock:
            if self._held is not None:
                self.log.append(self._held)
                self._held = None

    def settled(self) -> list[dict[str, Any]]:
        """The events after de-duplication by ``id``, ordered by ``sequence``."""
        self.flush()
        with self._lock:
            unique = {e["id"]: e for e in self.log}
        return sorted(unique.values(), key=lambda e: e["sequence"])

    def count(self, fault: str | None) -> None:
        with self._lock:
            key = fault or "ok"
            self.counts[key] = self.counts.get(key, 0) + 1

    @contextmanager
    def running(self) -> Iterator[EventReceiver]:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:  # quiet
                pass

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                body = json.loads(raw) if raw else None
                with receiver._lock:
                    receiver.requests.append(
                        Received(self.path, {k.lower(): v for k, v in self.headers.items()}, body)
                    )
                fault = receiver.faults.draw()
                receiver.count(fault)
                if receiver.faults.every_delay:
                    time.sleep(receiver.faults.every_delay)
                if fault == "fail":
                    return self._answer(503)
                if fault == "redirect":
                    return self._answer(302, location="/moved")
                if fault == "delay":
                    time.sleep(receiver.faults.delay_seconds)
                if isinstance(body, dict):
                    receiver.keep(body, fault)
                if fault == "lost_ack":
                    return self._answer(500)
                if fault == "slow":
                    time.sleep(receiver.faults.slow_seconds)
                self._answer(200)

            def do_GET(self) -> None:
                self._answer(200)

            def _answer(self, status: int, location: str | None = None) -> None:
                try:
                    self.send_response(status)
                    if location is not None:
                        self.send_header("Location", location)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                except OSError:  # the sender timed out and hung up
                    pass

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        self.url = f"http://127.0.0.1:{server.server_address[1]}/events"
        try:
            yield self
        finally:
            server.shutdown()
            server.server_close()
            thread.join(5)
