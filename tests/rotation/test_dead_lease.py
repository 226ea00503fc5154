"""A run killed on this host does not block the same command for its lease's TTL: the
next run sees the holder's process is gone and takes its shard over at once (audited); a
holder on another host still holds its lease until it expires."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from field_encrypt import audit
from field_encrypt.rehearsal import product, seed
from field_encrypt.rotation import open_ledger
from field_encrypt.rotation.lease import dead_here
from tests.backends import BACKEND_KINDS, Backend
from tests.cli.helpers import cli_process

CRASHING = "field_encrypt.rehearsal:crashing_product"
PRODUCT = "field_encrypt.rehearsal:product"
ARGS = ["migrate", "--mode", "rewrap-deks", "--batch-size", "10", "--lease-ttl", "3600"]


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_dead_here_reads_host_and_pid() -> None:
    """Only a pid of this host that no longer exists is dead; this process, a live one, a
    pid on another host and a malformed name are not."""
    host = socket.gethostname()
    assert dead_here(f"{host}:{_dead_pid()}:abc123")
    assert not dead_here(f"{host}:{os.getpid()}:abc123")
    assert not dead_here(f"{host}:{os.getppid()}:abc123")
    assert not dead_here(f"elsewhere.invalid:{_dead_pid()}:abc123")
    assert not dead_here(None) and not dead_here("") and not dead_here(f"{host}:x:y")


def test_an_exited_child_not_yet_reaped_is_dead() -> None:
    """A worker killed while its parent waits on another child stays a zombie until
    reaped: its pid exists, but it will never run again."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    owner = f"{socket.gethostname()}:{child.pid}:abc123"
    for _ in range(200):  # until it has exited (left unreaped: no wait() here)
        with open(f"/proc/{child.pid}/stat", "rb") as stat:
            if stat.read().rpartition(b")")[2].split()[0] == b"Z":
                break
        time.sleep(0.01)
    try:
        assert dead_here(owner)
    finally:
        child.wait()
    assert dead_here(owner)  # reaped: gone


@pytest.fixture
def env(store_backend: Backend, tmp_path: Path) -> dict[str, str]:
    """30 documents on version 1, version 2 current, on a fresh database of each kind."""
    values = {
        **store_backend.environ,
        "FIELD_ENCRYPT_KEY_PROVIDER": "local",
        "FIELD_ENCRYPT_KEYRING": str(tmp_path / "keyring.json"),
        "FIELD_ENCRYPT_ENABLED": "true",
    }
    runtime = product.open(store_backend.settings(keyring=values["FIELD_ENCRYPT_KEYRING"]))
    try:
        seed(runtime, 30)
        runtime.provider.create_version()
    finally:
        runtime.close()
    return values


def _killed(env: dict[str, str]) -> None:
    crashed = cli_process(*ARGS, "--product", CRASHING, env=env)
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr


@pytest.mark.parametrize("store_backend", BACKEND_KINDS, indirect=True)
def test_a_run_killed_on_this_host_is_resumed_at_once(
    env: dict[str, str], store_backend: Backend
) -> None:
    """kill -9 after the first batch (lease TTL one hour); the same command at once resumes
    and completes, and the takeover is in the audit trail (it was refused, exit 6, for the
    whole TTL)."""
    _killed(env)
    resumed = cli_process(*ARGS, "--product", PRODUCT, env=env)
    assert resumed.returncode == 0, resumed.stderr
    assert "lease_reclaimed" in resumed.stderr
    runtime = product.open(store_backend.settings(keyring=env["FIELD_ENCRYPT_KEYRING"]))
    try:
        assert runtime.dek_store.count_by_version() == {"2": 30}
        (run,) = open_ledger(runtime).latest_runs("sample")
        # The killed batch was written but not recorded: found on version 2, not redone.
        assert run.status == "completed" and run.counters.changed == 20
        assert runtime.audit is not None
        (event,) = runtime.audit.events(types=[audit.LEASE_RECLAIMED])
        assert event.data["runId"] == run.run_id and event.data["shard"] == 0
        assert str(event.data["holder"]).startswith(f"{socket.gethostname()}:")
    finally:
        runtime.close()


@pytest.mark.parametrize("store_backend", BACKEND_KINDS, indirect=True)
def test_a_holder_on_another_host_is_waited_out(
    env: dict[str, str], store_backend: Backend
) -> None:
    """The same dead run, its lease held in another host's name: refused (exit 6), naming
    the holder, and nothing is reclaimed."""
    _killed(env)
    runtime = product.open(store_backend.settings(keyring=env["FIELD_ENCRYPT_KEYRING"]))
    try:
        ledger = open_ledger(runtime)
        (run,) = ledger.latest_runs("sample")
        holder = run.shard(0).owner
        assert holder is not None and run.shard(0).lease_expires_at is not None
        now = run.shard(0).lease_expires_at - 3000
        ledger.release_shard(run.run_id, 0, owner=holder, now=now, done=False)
        elsewhere = "elsewhere.invalid:" + holder.partition(":")[2]
        ledger.acquire_shard(run.run_id, 0, owner=elsewhere, now=now, ttl=3600)
        refused = cli_process(*ARGS, "--product", PRODUCT, env=env)
        assert refused.returncode == 6, refused.stderr
        assert "elsewhere.invalid" in refused.stderr
        assert runtime.audit is not None
        assert runtime.audit.events(types=[audit.LEASE_RECLAIMED]) == []
    finally:
        runtime.close()
