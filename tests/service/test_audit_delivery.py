"""NoteLett delivers its audit trail to actiontrail from a background thread, when configured."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from fastapi.testclient import TestClient

from notelett.app import create_app
from notelett.backend import Backend
from notelett.settings import NoteLettSettings
from tests.backends import BACKEND_KINDS
from tests.service.conftest import auth
from tests.support.event_receiver import EventReceiver, Faults


@pytest.mark.parametrize("store_kind", BACKEND_KINDS, indirect=True)
def test_the_service_delivers_the_shred_event(
    settings: NoteLettSettings,
    backend: Backend,
    create_note: Callable[..., dict[str, Any]],
    client: TestClient,
) -> None:
    """A note deleted in a service with NOTELETT_AUDIT_DELIVERY_URL: its dek.shredded reaches the
    receiver (which fails now and then); stopping the app stops the thread."""
    note = create_note()
    with EventReceiver(faults=Faults(fail=0.3, every_delay=0.2)).running() as receiver:
        configured = settings.model_copy(
            update={"audit_delivery_url": receiver.url, "audit_delivery_interval_seconds": 0.05}
        )
        with TestClient(create_app(configured, backend=backend)) as delivering:
            deleted = delivering.delete(f"/api/notes/{note['id']}", headers=auth())
            assert deleted.status_code == 204
            deadline = time.monotonic() + 30
            while not receiver.settled() and time.monotonic() < deadline:
                time.sleep(0.05)
    trail = backend.runtime.audit
    assert trail is not None
    assert [e["id"] for e in receiver.settled()] == [e.id for e in trail.events()]
    assert receiver.settled()[0]["type"] == "io.field-encrypt.dek.shredded"
    assert not any(t.name == "audit-delivery" and t.is_alive() for t in threading.enumerate())
