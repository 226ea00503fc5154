"""The console's JSON endpoints on every store: what each panel says, read as the CLI reads it."""

from __future__ import annotations

import base64
import json
import time
from typing import Any

import pytest
from starlette.testclient import TestClient

from field_encrypt.config import load_settings
from field_encrypt.console.app import create_app
from field_encrypt.console.panels import PanelOptions, Panels
from field_encrypt.providers.base import dek_context
from tests.cli.helpers import PRODUCT, cli
from tests.console.conftest import Seeded, rewrap
from tests.support.sample_product import product
from tests.support.seed import seed

HOUR = 3600.0


def _client(panels: Panels) -> TestClient:
    return TestClient(create_app(panels), base_url="http://127.0.0.1")


def _get(client: TestClient, path: str) -> Any:
    response = client.get(path)
    assert response.status_code == 200, response.text
    return response.json()


def test_versions_show_states_and_deks_per_version(seeded: Seeded) -> None:
    """Version 1 enabled with 10 DEKs, version 2 current with 5: then 0 and 15 after a rewrap."""
    client = _client(Panels(seeded.runtime))
    data = _get(client, "/api/versions")
    assert data["current_version"] == "2" and data["total_deks"] == 15
    rows = {v["version"]: v for v in data["versions"]}
    assert (rows["1"]["status"], rows["1"]["deks"]) == ("enabled", 10)
    assert (rows["2"]["status"], rows["2"]["deks"]) == ("current", 5)
    assert rows["1"]["created_at"] and data["kek_tier"] is None
    rewrap(seeded.runtime)
    rows = {v["version"]: v for v in _get(client, "/api/versions")["versions"]}
    assert (rows["1"]["deks"], rows["2"]["deks"]) == (0, 15)


def test_versions_agree_with_keys_list(seeded: Seeded) -> None:
    """The panel's counts and states are ``keys list --json``'s, on every store."""
    listed = json.loads(cli("keys", "list", "--product", PRODUCT, "--json").stdout)["versions"]
    shown = _get(_client(Panels(seeded.runtime)), "/api/versions")["versions"]
    assert [(v["version"], v["state"], v["deks"]) for v in listed] == [
        (v["version"], v["state"], v["deks"]) for v in shown
    ]


def test_runs_show_the_ledger_with_progress_and_shards(seeded: Seeded) -> None:
    """A completed rewrap: mode, 1 → 2 (any → 2), 10 of 10 processed, a rate, no ETA, its shard."""
    client = _client(Panels(seeded.runtime))
    assert _get(client, "/api/runs")["runs"] == []
    rewrap(seeded.runtime)
    data = _get(client, "/api/runs")
    assert not data["live"]
    (run,) = data["runs"]
    assert (run["mode"], run["to_version"], run["state"]) == ("rewrap-deks", "2", "completed")
    assert (run["processed"], run["total"], run["changed"]) == (10, 10, 10)
    assert run["failures"] == 0 and run["conflicts"] == 0 and run["eta_seconds"] is None
    assert run["rate_per_second"] > 0
    assert [(s["shard"], s["status"], s["owner"]) for s in run["shards"]] == [("1/1", "done", None)]
    status = json.loads(cli("status", "--product", PRODUCT, "--json").stdout)
    assert status["runs"][0]["run_id"] == run["run_id"]


def test_the_gate_gives_the_same_answer_as_keys_retire(seeded: Seeded) -> None:
    """Before the rewrap: 10 DEKs left and the soak; after it and 25 h: ready, like keys retire."""
    client = _client(Panels(seeded.runtime))
    (gate,) = _get(client, "/api/gate")["versions"]
    assert gate["verdict"] == "blocked" and gate["deks_left"] == 10
    assert (
        "cannot be retired yet: 10 DEKs still wrapped under it, 24.0 h of soak left"
        in gate["summary"]
    )
    retire = cli("keys", "retire", "1", "--product", PRODUCT, "--json", "--sample", "0")
    assert retire.exit_code == 6
    said = json.loads(retire.stdout)
    assert (
        gate["refused"]
        == said["refused"]
        == ["no DEK wrapped under the version", "soak period passed"]
    )
    assert gate["checks"][0]["detail"] == said["checks"][0]["detail"]
    rewrap(seeded.runtime)
    (gate,) = _get(client, "/api/gate")["versions"]
    assert gate["refused"] == ["soak period passed"] and gate["deks_left"] == 0
    assert 23 * HOUR < gate["soak_left_seconds"] <= 24 * HOUR
    later = Panels(seeded.runtime, clock=lambda: time.time() + 25 * HOUR)
    (gate,) = _get(_client(later), "/api/gate")["versions"]
    assert gate["verdict"] == "ready" and gate["soak_left_seconds"] == 0
    assert "can be retired now" in gate["summary"] and gate["retention_days"] == 30.0
    # The console changed nothing: version 1 is still enabled.
    rows = {v["version"]: v for v in _get(client, "/api/versions")["versions"]}
    assert rows["1"]["status"] == "enabled"


def test_a_retired_version_shows_its_retention(seeded: Seeded) -> None:
    """After keys retire: the version is retired, kept until its deadline, with no soak left."""
    rewrap(seeded.runtime)
    now = time.time() + 25 * HOUR
    result = cli("keys", "retire", "1", "--product", PRODUCT, "--soak", "0", "--json")
    assert result.exit_code == 0, result.stdout
    client = _client(Panels(seeded.runtime, clock=lambda: now))
    (gate,) = _get(client, "/api/gate")["versions"]
    assert gate["verdict"] == "retired" and gate["retain_until"]
    assert "kept (disabled) until" in gate["summary"]
    rows = {v["version"]: v for v in _get(client, "/api/versions")["versions"]}
    assert rows["1"]["status"] == "retired" and "kept until" in rows["1"]["notes"]


def test_the_audit_panel_lists_filters_and_verifies(seeded: Seeded) -> None:
    """Newest first, filtered by type, and the chain intact with the head ``audit verify`` gives."""
    rewrap(seeded.runtime)
    client = _client(Panels(seeded.runtime))
    data = _get(client, "/api/audit")
    verify = json.loads(cli("audit", "verify", "--product", PRODUCT, "--json").stdout)
    assert data["chain"]["intact"] and data["chain"]["head"] == verify["head"]
    assert data["chain"]["events"] == verify["events"] == len(data["events"])
    seqs = [e["seq"] for e in data["events"]]
    assert seqs == sorted(seqs, reverse=True)
    assert "mek.version.created" in data["types"]
    only = _get(client, "/api/audit?type=run.completed")
    assert [e["type"] for e in only["events"]] == ["run.completed"]
    assert only["filter"] == ["run.completed"]
    assert len(_get(client, "/api/audit?limit=1")["events"]) == 1


def test_the_rotation_panel_is_rotate_status(seeded: Seeded) -> None:
    """Stage idle, the next rotation due, the stop switch off: as ``rotate --status`` says."""
    data = _get(_client(Panels(seeded.runtime)), "/api/rotation")
    status = json.loads(cli("rotate", "--product", PRODUCT, "--status", "--json").stdout)
    assert data["stage"] == status["stage"] == "idle"
    assert data["next_rotation_due"] == status["next_rotation_due"] is not None
    assert data["stop_switch"] is False and data["current_version"] == "2"
    assert cli("rotate", "--product", PRODUCT, "--stop").exit_code == 0
    assert _get(_client(Panels(seeded.runtime)), "/api/rotation")["stop_switch"] is True


def test_no_key_material_dek_or_plaintext_reaches_any_endpoint(seeded: Seeded) -> None:
    """No wrapped DEK, unwrapped DEK (hex or base64) or document plaintext in any answer."""
    rewrap(seeded.runtime)
    client = _client(Panels(seeded.runtime, options=PanelOptions(gate_sample=5)))
    text = "".join(
        client.get(path).text
        for path in ("/", "/api/versions", "/api/runs", "/api/gate", "/api/audit", "/api/rotation")
    )
    records = seeded.runtime.dek_store.scan(limit=100).records
    assert len(records) == 15
    for record in records:
        dek = seeded.runtime.provider.unwrap(
            record.wrapped,
            version=record.mek_version,
            context=dek_context(record.product, record.dek_id),
        )
        for secret in (record.wrapped, dek):
            assert secret.hex() not in text
            assert base64.b64encode(secret).decode()[:20] not in text
    assert "45-6789" not in text and "person 3" not in text


def test_the_kek_tier_is_shown_when_on(
    env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """With FIELD_ENCRYPT_KEY_LAYOUT=kek: the layout and each KEK with its DEKs, as ``status``
    lists them; the DEKs count under their KEK's MEK version."""
    monkeypatch.setenv("FIELD_ENCRYPT_KEY_LAYOUT", "kek")
    runtime = product.open(load_settings({**env, "FIELD_ENCRYPT_KEY_LAYOUT": "kek"}))
    try:
        seed(runtime, 6)
        data = _get(_client(Panels(runtime)), "/api/versions")
    finally:
        runtime.close()
    assert data["kek_tier"]["layout"] == "kek"
    keks = data["kek_tier"]["keks"]
    assert sum(k["deks"] for k in keks) == 6 and all(k["mek_version"] == "1" for k in keks)
    assert [(v["version"], v["deks"]) for v in data["versions"]] == [("1", 6)]
    status = json.loads(cli("status", "--product", PRODUCT, "--json").stdout)
    assert status["keks"] == keks


def test_a_compromised_version_is_shown_as_such(env: dict[str, str]) -> None:
    """After ``keys compromised 1``: version 1's state is compromised (and retired, soak
    waived), the gate says retired, the trail holds the compromise event."""
    runtime = product.open(load_settings(env, provider_refresh_seconds=0))
    seed(runtime, 4)
    assert cli("keys", "compromised", "1", "--product", PRODUCT).exit_code == 0
    client = _client(Panels(runtime))
    rows = {v["version"]: v for v in _get(client, "/api/versions")["versions"]}
    assert rows["1"]["status"] == "compromised" and "compromised" in rows["1"]["notes"]
    assert rows["1"]["deks"] == 0 and rows["2"]["status"] == "current"
    gates = {g["version"]: g for g in _get(client, "/api/gate")["versions"]}
    assert gates["1"]["verdict"] == "retired"
    types = [e["type"] for e in _get(client, "/api/audit")["events"]]
    runtime.close()
    assert "mek.version.compromised" in types
