"""MEK rotation end to end: notes written under v1 stay readable through v2 and after v1 is off.

The runbook, rehearsed against live service processes: create v2 (step 1), wait until the
running service knows it (step 2), rewrap every DEK (step 3), verify (step 4), disable v1
(step 5). A uvicorn process started *before* the rotation, with a warm DEK cache, keeps
answering throughout and afterwards; one started after it reads everything cold.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from field_encrypt.products import ProductRuntime
from field_encrypt.rotation import MigrationOptions, migrate, open_ledger
from notelett import NoteLettSettings, create_app
from notelett.backend import Backend
from tests.backends import BACKEND_KINDS
from tests.support.note_traffic import NoteTraffic, read_all, read_each, wait_for_version

from .conftest import auth
from .server import NoteLettServer, start_server
from .test_uvicorn import server_env

pytestmark = pytest.mark.parametrize("store_kind", BACKEND_KINDS, indirect=True)


def rewrap_all(runtime: ProductRuntime, *, to_version: str) -> int:
    """Step 3 with the rotation engine (what ``field-encrypt migrate`` runs); DEKs rewrapped.

    The run ledger lives in the same database as the notes, whichever store that is.
    """
    options = MigrationOptions(mode="rewrap-deks", new_version=to_version, batch_size=7)
    report = migrate(runtime, open_ledger(runtime), options)
    assert report.status == "completed", report
    assert report.counters.failed == 0
    return report.counters.changed


def _cache_misses(server: NoteLettServer) -> float:
    metrics = httpx.get(server.base_url + "/metrics").text
    line = next(x for x in metrics.splitlines() if x.startswith("notelett_dek_cache_misses_total"))
    return float(line.split()[-1])


def test_notes_stay_readable_through_a_rotation_from_v1_to_v2(
    settings: NoteLettSettings, backend: Backend, tmp_path: Path
) -> None:
    """Every note reads through the HTTP API before, during and after rewrap + disable."""
    provider = backend.provider
    store = backend.runtime.dek_store
    # readiness asks the provider at most every 0.5 s (30 s by default): step 2 polls it
    env = {**server_env(settings, backend), "NOTELETT_READINESS_INTERVAL_SECONDS": "0.5"}
    old = start_server(env, workdir=tmp_path, name="before-rotation")
    try:
        expected: dict[str, str] = {}
        with httpx.Client(base_url=old.base_url, headers=auth("carol"), timeout=10) as http:
            for i in range(30):
                title = f"v1 #{i}"
                body = {"workspaceId": ("ws-a", "ws-b")[i % 2], "title": title, "body": title}
                created = http.post("/api/notes", json=body)
                assert created.status_code == 201, created.text
                expected[created.json()["id"]] = body["title"]
        # Notes written by another process: the old server has never cached their DEKs.
        with TestClient(create_app(settings, backend=backend)) as other:
            for i in range(10):
                title = f"cold #{i}"
                body = {"workspaceId": "ws-a", "title": title, "body": title}
                created = other.post("/api/notes", json=body, headers=auth("carol"))
                assert created.status_code == 201
                expected[created.json()["id"]] = body["title"]
        assert store.count_by_version() == {"1": 40}
        warm = {k: v for k, v in expected.items() if not v.startswith("cold")}
        read_each(old.base_url, warm)  # the old process's cache is warm for these only

        reader = NoteTraffic(old.base_url, warm)
        reader.start()
        try:
            assert provider.create_version().version == "2"  # step 1
            wait_for_version(old.base_url, "2", timeout=10.0)  # step 2
            assert rewrap_all(backend.runtime, to_version="2") == 40  # step 3
            assert store.count_not_on("2") == 0  # step 4
            assert rewrap_all(backend.runtime, to_version="2") == 0  # idempotent
            provider.set_enabled("1", False)  # step 5
            read_each(old.base_url, {k: v for k, v in expected.items() if k not in warm})
            read_all(old.base_url, expected)
        finally:
            reader.finish(timeout=30)
        assert reader.reads > len(expected)
        assert reader.failures == []

        new = start_server(env, workdir=tmp_path, name="after-rotation")
        try:
            read_all(new.base_url, expected)
            for server in (old, new):
                readiness = httpx.get(server.base_url + "/api/diagnostics/readiness")
                assert readiness.status_code == 200, readiness.text
            with httpx.Client(base_url=new.base_url, headers=auth("carol"), timeout=10) as http:
                created = http.post(
                    "/api/notes", json={"workspaceId": "ws-a", "title": "v2", "body": "v2"}
                )
                assert created.status_code == 201
            expected[created.json()["id"]] = "v2"
            read_all(old.base_url, expected)
        finally:
            new.stop()
        assert store.count_by_version() == {"2": 41}
        assert [(v.version, v.enabled) for v in provider.versions()] == [("1", False), ("2", True)]
        assert _cache_misses(old) >= 10  # the cold notes really were unwrapped after rotation
        assert "Traceback" not in old.log()
    finally:
        old.stop()
