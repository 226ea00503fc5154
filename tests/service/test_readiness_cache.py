"""Readiness spends at most one key-provider check per interval per process, and a
provider blip while cached DEKs still serve is "degraded" (200), not a failure."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

import field_encrypt
from field_encrypt import KeyProviderError
from field_encrypt.providers.local import LocalKeyProvider
from notelett import NoteLettSettings, create_app
from notelett.backend import open_backend
from notelett.readiness import ProviderCheck

from .conftest import add_members, auth


class CountingProvider:
    """A real local provider that counts wraps and can be made to stop answering."""

    def __init__(self, inner: LocalKeyProvider) -> None:
        self.inner = inner
        self.wraps = 0
        self.down = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def _answer(self) -> None:
        if self.down:
            raise KeyProviderError("vault unreachable (test)")

    def current_version(self) -> str:
        self._answer()
        return self.inner.current_version()

    def versions(self) -> Any:
        self._answer()
        return self.inner.versions()

    def wrap(self, dek: bytes, **kwargs: Any) -> Any:
        self._answer()
        self.wraps += 1
        return self.inner.wrap(dek, **kwargs)

    def unwrap(self, ciphertext: bytes, **kwargs: Any) -> bytes:
        self._answer()
        return self.inner.unwrap(ciphertext, **kwargs)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def counting(provider: LocalKeyProvider) -> CountingProvider:
    return CountingProvider(provider)


def test_one_provider_check_per_interval_however_many_probes(counting: CountingProvider) -> None:
    """100 probes from 10 threads within one interval ask the provider once; the next
    interval once more."""
    clock = FakeClock()
    check = ProviderCheck(counting, interval_seconds=30, clock=clock)  # type: ignore[arg-type]

    def probe() -> None:
        for _ in range(10):
            assert [c.status for c in check.checks()] == ["ok", "ok"]

    threads = [threading.Thread(target=probe) for _ in range(10)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert (check.calls, counting.wraps) == (1, 1)
    clock.now += 29.9
    check.checks()
    assert counting.wraps == 1
    clock.now += 0.1
    check.checks()
    assert (check.calls, counting.wraps) == (2, 2)


@pytest.fixture
def app_client(
    settings: NoteLettSettings, encryption: field_encrypt.Settings, counting: CountingProvider
) -> Iterator[tuple[TestClient, CountingProvider]]:
    backend = open_backend(encryption, settings, provider=counting)  # type: ignore[arg-type]
    add_members(backend)
    every_probe = settings.model_copy(update={"readiness_interval_seconds": 0})
    with TestClient(create_app(every_probe, backend=backend), raise_server_exceptions=False) as c:
        yield c, counting
    backend.close()


def test_readiness_over_http_asks_the_provider_once_per_interval(
    settings: NoteLettSettings, encryption: field_encrypt.Settings, counting: CountingProvider
) -> None:
    """With the default 30 s interval, 20 readiness probes cost one canary wrap."""
    backend = open_backend(encryption, settings, provider=counting)  # type: ignore[arg-type]
    try:
        with TestClient(create_app(settings, backend=backend)) as client:
            for _ in range(20):
                assert client.get("/api/diagnostics/readiness").status_code == 200
        assert counting.wraps == 1
    finally:
        backend.close()


def test_a_provider_blip_with_cached_deks_is_degraded_not_failed(
    app_client: tuple[TestClient, CountingProvider],
) -> None:
    """Provider down, DEK cached: readiness 200 "degraded" with details, the note still reads."""
    client, counting = app_client
    created = client.post(
        "/api/notes", json={"workspaceId": "ws-a", "title": "t", "body": "b"}, headers=auth()
    )
    assert created.status_code == 201
    counting.down = True
    response = client.get("/api/diagnostics/readiness")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "degraded"
    lines = {c["name"]: (c["status"], c["detail"]) for c in body["checks"]}
    assert lines["key_provider"] == ("fail", "key provider did not answer")
    assert lines["dek_cache"][0] == "ok" and lines["database"][0] == "ok"
    note = client.get(f"/api/notes/{created.json()['id']}", headers=auth())
    assert note.status_code == 200 and note.json()["title"] == "t"
    counting.down = False
    assert client.get("/api/diagnostics/readiness").json()["status"] == "ok"


def test_a_provider_outage_with_nothing_cached_fails(
    app_client: tuple[TestClient, CountingProvider],
) -> None:
    """Provider down and no DEK cached: nothing can be served, readiness is 503 "fail"."""
    client, counting = app_client
    counting.down = True
    response = client.get("/api/diagnostics/readiness")
    assert response.status_code == 503
    assert response.json()["status"] == "fail"
