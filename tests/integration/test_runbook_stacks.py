"""The runbook through the real CLI, with NoteLett serving, on the stacks users deploy.

Each stack is a key provider and a database, both real local servers: Key Vault + Cosmos DB
(the seed's production stack, here with the KEK tier), AWS KMS + PostgreSQL, PKCS#11
(SoftHSM2) + PostgreSQL, and the embedded default, local keyring + SQLite. On each, every
step is its own process, as an operator runs it (``docs/runbooks/mek-rotation.md``):
``field-encrypt init``, the first MEK version, NoteLett serving notes written under it,
``backup``, ``keys create``, the service seen to pick the new version up, ``preflight``,
``migrate --mode rewrap-deks`` while readers and a writer keep using the service,
``verify``, ``keys retire 1`` and ``audit verify``. Afterwards a freshly started NoteLett,
whose cache is cold, reads every note back, one by one and through the listings.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.backends import Backend, backend_for
from tests.service.conftest import AUDIENCE, ISSUER, SECRET, auth
from tests.service.server import NoteLettServer, clean_environ, free_port
from tests.support.note_traffic import NoteTraffic, read_all, wait_for_version

ROOT = Path(__file__).resolve().parents[2]
PRODUCT = "notelett"
NOTES = 24
LAUNCH = [sys.executable, "-m", "tests.support.launch"]


@dataclass(frozen=True)
class Stack:
    provider: str
    database: str
    layout: str = "direct"


STACKS = {
    "keyvault-cosmos-kek": Stack("akv", "cosmos", "kek"),
    "kms-postgres": Stack("aws-kms", "postgres"),
    "pkcs11-postgres": Stack("pkcs11", "postgres"),
    "local-sqlite": Stack("local", "sqlite"),
}


def _provider_environ(kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, str]:
    """What an operator exports for ``kind``, pointed at the test's server, on a fresh MEK."""
    mek = f"runbook-{uuid.uuid4().hex[:10]}"
    if kind == "local":
        return {"FIELD_ENCRYPT_KEY_PROVIDER": "local", "FIELD_ENCRYPT_KEYRING": str(tmp_path / "k")}
    if kind == "akv":
        vault: Any = request.getfixturevalue("keyvault")
        return {
            "FIELD_ENCRYPT_KEY_PROVIDER": "akv",
            "FIELD_ENCRYPT_MEK_NAME": mek,
            "FIELD_ENCRYPT_AKV_KEY_SIZE": "2048",  # 4096 by default: slow to make in tests
            "AZURE_KEYVAULT_URL": vault.url,
            "AZURE_TENANT_ID": vault.tenant_id,
            "AZURE_CLIENT_ID": vault.client_id,
            "AZURE_CLIENT_SECRET": vault.client_secret,
            "AZURE_AUTHORITY_HOST": vault.authority,
            "TEST_KEYVAULT_CA": str(vault.ca_cert),  # tests/support/launch.py
        }
    if kind == "aws-kms":
        kms: Any = request.getfixturevalue("kms")
        return {
            "FIELD_ENCRYPT_KEY_PROVIDER": "aws-kms",
            "FIELD_ENCRYPT_MEK_NAME": mek,
            "FIELD_ENCRYPT_AWS_REGION": kms.region,
            "FIELD_ENCRYPT_AWS_KMS_ENDPOINT_URL": kms.endpoint_url,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
        }
    hsm: Any = request.getfixturevalue("softhsm")
    return {
        "FIELD_ENCRYPT_KEY_PROVIDER": "pkcs11",
        "FIELD_ENCRYPT_MEK_NAME": mek,
        "FIELD_ENCRYPT_PKCS11_MODULE": str(hsm.module_path),
        "FIELD_ENCRYPT_PKCS11_TOKEN": hsm.token_label,
        "FIELD_ENCRYPT_PKCS11_PIN": hsm.user_pin,
        **hsm.env,
    }


@pytest.fixture(params=list(STACKS))
def stack_env(request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, str]:
    """The environment of one stack: provider, database, key layout and NoteLett's settings."""
    stack = STACKS[request.param]
    backend: Backend = backend_for(stack.database, request, tmp_path)
    return {
        **_provider_environ(stack.provider, request, tmp_path),
        **backend.environ,
        "FIELD_ENCRYPT_KEY_LAYOUT": stack.layout,
        "FIELD_ENCRYPT_PROVIDER_REFRESH_SECONDS": "0.5",  # the service sees v2 within 0.5 s
        "NOTELETT_READINESS_INTERVAL_SECONDS": "0.5",
        "NOTELETT_JWT_SECRET": SECRET,
        "NOTELETT_JWT_ISSUER": ISSUER,
        "NOTELETT_JWT_AUDIENCE": AUDIENCE,
    }


def run(program: str, *args: str, env: Mapping[str, str], ok: int = 0) -> str:
    """``program ARGS`` as its own process; its stdout. Fails on any other exit code."""
    result = subprocess.run(
        [*LAUNCH, program, *args],
        cwd=ROOT,
        env={**clean_environ(), **env, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == ok, (program, args, result.returncode, result.stderr[-3000:])
    assert "Traceback" not in result.stderr
    return result.stdout


def fe(*args: str, env: Mapping[str, str], ok: int = 0) -> str:
    """``field-encrypt ARGS --product notelett``."""
    return run("field-encrypt", *args, "--product", PRODUCT, env=env, ok=ok)


@pytest.fixture
def serve(stack_env: dict[str, str], tmp_path: Path) -> Iterator[Any]:
    """Start ``notelett serve`` processes on the stack; all stopped at the end."""
    servers: list[NoteLettServer] = []

    def start(name: str) -> NoteLettServer:
        port = free_port()
        log_path = tmp_path / f"{name}.log"
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                [*LAUNCH, "notelett", "serve", "--host", "127.0.0.1", "--port", str(port)],
                cwd=ROOT,
                env={**clean_environ(), **stack_env, "PYTHONPATH": str(ROOT)},
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        server = NoteLettServer(process, f"http://127.0.0.1:{port}", log_path)
        servers.append(server)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert process.poll() is None, f"notelett serve exited:\n{server.log()}"
            try:
                if httpx.get(server.base_url + "/health", timeout=1.0).status_code == 200:
                    return server
            except httpx.TransportError:
                pass
            time.sleep(0.05)  # polling a starting process
        raise AssertionError(f"notelett serve did not answer:\n{server.log()}")

    yield start
    for server in servers:
        server.stop()


def _create(http: httpx.Client, title: str, workspace: str) -> str:
    created = http.post(
        "/api/notes", json={"workspaceId": workspace, "title": title, "body": title}
    )
    assert created.status_code == 201, created.text
    note_id: str = created.json()["id"]
    return note_id


def _create_version(env: Mapping[str, str]) -> str:
    """``field-encrypt keys create``: the new version's id (a number, a key id or a UUID)."""
    version: str = json.loads(fe("keys", "create", "--json", env=env))["version"]
    return version


def test_the_runbook_through_the_cli_with_notelett_serving(
    stack_env: dict[str, str], serve: Any, tmp_path: Path
) -> None:
    """init, v1, notes, backup, keys create, preflight, migrate under load, verify, retire v1:
    nothing failed while the service served, and a fresh process reads every note."""
    env = stack_env
    initialised = json.loads(fe("init", "--json", env=env))
    v1 = initialised["current_version"]  # the local keyring's first version, made by init
    if env["FIELD_ENCRYPT_KEY_PROVIDER"] != "local":
        assert v1 is None, initialised  # a key service's new MEK has no version yet
        v1 = _create_version(env)
    run("notelett", "workspaces", "create", "ws-a", env=env)
    run("notelett", "workspaces", "create", "ws-b", env=env)
    run("notelett", "members", "add", "carol", "ws-a", env=env)
    run("notelett", "members", "add", "carol", "ws-b", env=env)

    before = serve("before-rotation")
    with httpx.Client(base_url=before.base_url, headers=auth("carol"), timeout=30) as http:
        expected = {
            _create(http, f"v1 #{i}", ("ws-a", "ws-b")[i % 2]): f"v1 #{i}" for i in range(NOTES)
        }
    fe("backup", "--out", str(tmp_path / "dek_store-before-rotation.jsonl"), env=env)
    v2 = _create_version(env)
    wait_for_version(before.base_url, v2)
    fe("preflight", "--new-mek-version", v2, env=env)

    traffic = NoteTraffic(before.base_url, expected, write_to="ws-b")
    traffic.start()
    try:
        while traffic.reads < len(expected) and traffic.is_alive():
            time.sleep(0.05)  # the readers are going before the rewrap starts
        reads_before = traffic.reads
        report = tmp_path / "rewrap-report.json"
        fe("migrate", "--mode", "rewrap-deks", "--old-mek-version", v1, "--new-mek-version", v2,
           "--batch-size", "5", "--report", str(report), env=env)  # fmt: skip
    finally:
        traffic.finish()
    assert traffic.failures == []
    assert traffic.reads > reads_before and traffic.written  # served during the rewrap
    expected |= traffic.written
    rewrap = json.loads(report.read_text())
    assert (rewrap["failed"], rewrap["remaining"]) == (0, 0)

    fe("verify", "--mek-version", v2, "--sample", str(len(expected)), env=env)
    fe("keys", "retire", v1, "--soak", "0", env=env)
    listed = json.loads(fe("keys", "list", "--json", env=env))["versions"]
    states = {v["version"]: (v["state"], v["current"], v["deks"]) for v in listed}
    assert states == {v1: ("disabled", False, 0), v2: ("enabled", True, len(expected))}
    fe("audit", "verify", env=env)
    read_all(before.base_url, expected)  # the warm service, v1 now disabled
    before.stop()

    after = serve("after-rotation")  # cold: every DEK (or KEK) unwrapped under v2 now
    read_all(after.base_url, expected)
    with httpx.Client(base_url=after.base_url, headers=auth("carol"), timeout=30) as http:
        expected[_create(http, "v2", "ws-a")] = "v2"
    read_all(after.base_url, expected)
    for server in (before, after):
        assert "Traceback" not in server.log(), server.log()[-3000:]
