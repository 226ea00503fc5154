"""kill -9 at every point between an act and its audit event: both are stored, or neither.

The audit trail is a transactional outbox (``docs/audit.md``): an act's rows and its event
commit in one unit, and an act outside the database (a MEK version enabled or disabled in
the key service) is announced first and reconciled by ``audit verify``. Each act below is
the real command (``field-encrypt keys disable``, ``keys enable``, ``keys retire``,
``keys compromised``, ``migrate``, ``restore``, ``index-keys create``, ``index-keys
retire``) or the library call (``FieldEncryptor.shred``, ``KekTierProvider.new_kek``) in
its own OS process on the killable sample
product (``SAMPLE_KILL_AT=audit:STAGE:TYPE``, see ``tests/support/sample_product.py``),
killed with SIGKILL at each point, on a fresh database of every kind each time. After each
kill ``field-encrypt audit verify`` must pass, and the act and its event must either both
be there or both be absent.
"""

from __future__ import annotations

import base64
import json
import os
import signal
from pathlib import Path
from typing import Any

import pytest

from field_encrypt.audit import full_type
from field_encrypt.backends.registry import open_lifecycle_store, open_run_ledger
from field_encrypt.config import load_settings
from field_encrypt.errors import NotFoundError
from field_encrypt.index_keys import index_key_id
from field_encrypt.products import ProductRuntime
from field_encrypt.rehearsal import corrupt, delete
from field_encrypt.rotation import backup, open_ledger
from tests import figures
from tests.backends import BACKEND_KINDS, new_backend
from tests.reliability import processes
from tests.support.event_receiver import EventReceiver
from tests.support.sample_product import killable_audit_product, product
from tests.support.seed import seed

KILLABLE = "tests.support.sample_product:killable_audit_product"
PRODUCT = "tests.support.sample_product:product"
KILLED = -signal.SIGKILL
DATABASE_POINTS = ("act", "emitted", "committed")
KEY_SERVICE_POINTS = ("intent", "control", *DATABASE_POINTS)


def _points(store: str) -> tuple[str, ...]:
    """The kill points of a database act: on Cosmos DB also right after its intent (the
    reconciler must tell from the store that the act did not happen, and drop it)."""
    return ("intent", *DATABASE_POINTS) if store == "cosmos" else DATABASE_POINTS


def _environment(directory: Path, store: str, request: pytest.FixtureRequest) -> dict[str, str]:
    directory.mkdir(parents=True, exist_ok=True)
    return {
        "FIELD_ENCRYPT_KEY_PROVIDER": "local",
        "FIELD_ENCRYPT_KEYRING": str(directory / "keyring.json"),
        "FIELD_ENCRYPT_ENABLED": "true",
        **new_backend(store, request, directory).environ,
    }


def _open(env: dict[str, str]) -> ProductRuntime:
    return product.open(load_settings(env))


def _events(env: dict[str, str], type: str, subject: str | None = None) -> int:
    runtime = _open(env)
    try:
        assert runtime.audit is not None
        return len(runtime.audit.events(types=[full_type(type)], subject=subject))
    finally:
        runtime.close()


def _verify(env: dict[str, str], where: str) -> None:
    """``audit verify`` passes (after resolving what the kill left pending)."""
    result = processes.run("audit", "verify", "--product", PRODUCT, "--json", env=env)
    assert result.returncode == 0, (where, result.stderr[-2000:])
    assert json.loads(result.stdout)["intact"], where


def _both_or_neither(act: bool, events: int, where: str) -> None:
    assert events == (1 if act else 0), (
        f"{where}: act {'done' if act else 'not done'}, {events} events"
    )
    figures.record("audit outbox crash", kills=1, acts_with_event=int(act), neither=int(not act))


def _kill(args: list[str], env: dict[str, str], point: str) -> None:
    killed = processes.run(*args, env={**env, "SAMPLE_KILL_AT": point})
    assert killed.returncode == KILLED, (point, killed.returncode, killed.stderr[-2000:])


def _two_versions(env: dict[str, str]) -> str:
    """A keyring with two MEK versions; the one that is not current (no DEK under it)."""
    runtime = _open(env)
    try:
        while len(runtime.provider.versions()) < 2:
            runtime.provider.create_version()
        return next(v.version for v in runtime.provider.versions() if not v.current)
    finally:
        runtime.close()


def _enabled(env: dict[str, str], version: str) -> bool:
    runtime = _open(env)
    try:
        return next(v.enabled for v in runtime.provider.versions() if v.version == version)
    finally:
        runtime.close()


@pytest.mark.parametrize("store", BACKEND_KINDS)
@pytest.mark.parametrize("command", ["disable", "enable"])
def test_kill_9_between_a_key_change_and_its_event(
    tmp_path: Path, store: str, command: str, request: pytest.FixtureRequest
) -> None:
    """``keys disable`` / ``keys enable``: the key service's change and its event."""
    type = f"mek.version.{command}d"
    seen = set()
    for stage in KEY_SERVICE_POINTS:
        env = _environment(tmp_path / stage, store, request)
        version = _two_versions(env)
        if command == "enable":
            done = processes.run("keys", "disable", version, "--product", PRODUCT, env=env)
            assert done.returncode == 0, done.stderr[-2000:]
        args = ["keys", command, version, "--product", KILLABLE]
        _kill(args, env, f"audit:{stage}:{type}")
        where = f"{store}: keys {command} killed at {stage}"
        _verify(env, where)
        act = _enabled(env, version) == (command == "enable")
        _both_or_neither(act, _events(env, type), where)
        seen.add(act)
    assert seen == {True, False}  # the points cover both sides of the act


def _note(env: dict[str, str], version: str) -> Any:
    runtime = _open(env)
    try:
        return open_lifecycle_store(runtime.database).note(product.name, version)
    finally:
        runtime.close()


@pytest.mark.parametrize("store", BACKEND_KINDS)
@pytest.mark.parametrize("command", ["retire", "compromised"])
def test_kill_9_between_a_version_note_and_its_event(
    tmp_path: Path, store: str, command: str, request: pytest.FixtureRequest
) -> None:
    """``keys retire`` / ``keys compromised``: the version's note (retired, compromised)
    and ``mek.version.retired`` / ``mek.version.compromised``."""
    type = f"mek.version.{command}" if command == "compromised" else "mek.version.retired"
    for stage in _points(store):
        env = _environment(tmp_path / stage, store, request)
        version = _two_versions(env)
        args = ["keys", command, version, "--product", KILLABLE]
        if command == "retire":
            args += ["--soak", "0"]
        _kill(args, env, f"audit:{stage}:{type}")
        where = f"{store}: keys {command} killed at {stage}"
        _verify(env, where)
        note = _note(env, version)
        act = note.retired_at is not None if command == "retire" else note.compromised
        _both_or_neither(act, _events(env, type), where)


def _rewrap_ready(env: dict[str, str]) -> None:
    runtime = _open(env)
    try:
        seed(runtime, 8, encrypt=True)
        runtime.provider.create_version()
    finally:
        runtime.close()


def _latest_run(env: dict[str, str]) -> Any:
    runtime = _open(env)
    try:
        runs = open_run_ledger(runtime.database).latest_runs(product.name, limit=1)
        return runs[0] if runs else None
    finally:
        runtime.close()


@pytest.mark.parametrize("store", BACKEND_KINDS)
@pytest.mark.parametrize("event", ["run.started", "run.completed"])
def test_kill_9_between_a_run_step_and_its_event(
    tmp_path: Path, store: str, event: str, request: pytest.FixtureRequest
) -> None:
    """``migrate``: the shard taken and ``run.started``; the run finished and ``run.completed``."""
    for stage in DATABASE_POINTS:
        env = _environment(tmp_path / stage, store, request)
        _rewrap_ready(env)
        args = ["migrate", "--product", KILLABLE, "--mode", "rewrap-deks", "--batch-size", "4"]
        _kill(args, env, f"audit:{stage}:{event}")
        where = f"{store}: migrate killed at {stage} of {event}"
        _verify(env, where)
        run = _latest_run(env)
        if event == "run.started":
            act = run is not None and any(s.owner or s.status != "pending" for s in run.shards)
        else:
            act = run is not None and run.finished
        _both_or_neither(act, _events(env, event), where)


@pytest.mark.parametrize("store", BACKEND_KINDS)
def test_kill_9_between_a_lease_reclaimed_and_its_event(
    tmp_path: Path, store: str, request: pytest.FixtureRequest
) -> None:
    """``migrate`` after a run killed holding its shard (lease TTL one hour): the dead
    holder's lease released and ``run.lease.reclaimed``."""
    args = ["migrate", "--product", KILLABLE, "--mode", "rewrap-deks", "--lease-ttl", "3600"]
    for stage in _points(store):
        env = _environment(tmp_path / stage, store, request)
        _rewrap_ready(env)
        _kill(args, env, "audit:committed:run.started")  # dies holding the shard
        holder = _latest_run(env).shards[0].owner
        assert holder is not None
        _kill(args, env, f"audit:{stage}:run.lease.reclaimed")
        where = f"{store}: migrate killed at {stage} of run.lease.reclaimed"
        _verify(env, where)
        act = _latest_run(env).shards[0].owner != holder
        _both_or_neither(act, _events(env, "run.lease.reclaimed"), where)


def shred_in_process(dek_id: str) -> None:
    """The child of :func:`test_kill_9_between_a_shred_and_its_event`."""
    runtime = killable_audit_product.open(load_settings(dict(os.environ)))
    runtime.encryptor.shred(dek_id)
    runtime.close()


@pytest.mark.parametrize("store", BACKEND_KINDS)
def test_kill_9_between_a_shred_and_its_event(
    tmp_path: Path, store: str, request: pytest.FixtureRequest
) -> None:
    """``FieldEncryptor.shred``: the DEK deleted and ``dek.shredded``."""
    for stage in DATABASE_POINTS:
        env = _environment(tmp_path / stage, store, request)
        runtime = _open(env)
        try:
            seed(runtime, 2, encrypt=True)
            dek_id = runtime.dek_store.scan(limit=1).records[0].dek_id
        finally:
            runtime.close()
        killed = processes.call(
            f"{__name__}:shred_in_process",
            dek_id,
            env={**env, "SAMPLE_KILL_AT": f"audit:{stage}:dek.shredded"},
        )
        assert killed.returncode == KILLED, (stage, killed.returncode, killed.stderr[-2000:])
        where = f"{store}: shred killed at {stage}"
        _verify(env, where)
        runtime = _open(env)
        try:
            try:
                runtime.dek_store.get(dek_id)
                act = False
            except NotFoundError:
                act = True
        finally:
            runtime.close()
        _both_or_neither(act, _events(env, "dek.shredded", f"dek/{dek_id}"), where)


@pytest.mark.parametrize("store", BACKEND_KINDS)
@pytest.mark.parametrize("damage", ["missing", "unreadable"])
def test_kill_9_between_a_restored_row_and_its_event(
    tmp_path: Path, store: str, damage: str, request: pytest.FixtureRequest
) -> None:
    """``restore``: a DEK row put back (deleted) or repaired (garbled wrap, compare-and-swap)
    and ``dek.restored``."""
    for stage in _points(store):
        env = _environment(tmp_path / stage, store, request)
        backup_file = tmp_path / stage / "deks.jsonl"
        runtime = _open(env)
        try:
            seed(runtime, 2, encrypt=True)
            backup(runtime, open_ledger(runtime), backup_file)
            damaged = (delete if damage == "missing" else corrupt)(runtime, 1)[0]
            wrapped = [json.loads(line) for line in backup_file.read_text().splitlines()[1:-1]]
            expected = next(r["wrapped"] for r in wrapped if r["dek_id"] == damaged)
        finally:
            runtime.close()
        args = ["restore", "--product", KILLABLE, "--in", str(backup_file)]
        _kill(args, env, f"audit:{stage}:dek.restored")
        where = f"{store}: restore of a {damage} row killed at {stage}"
        _verify(env, where)
        runtime = _open(env)
        try:
            try:
                row = runtime.dek_store.get(damaged)
                act = base64.b64encode(row.wrapped).decode() == expected
            except NotFoundError:
                act = False
        finally:
            runtime.close()
        _both_or_neither(act, _events(env, "dek.restored", f"dek/{damaged}"), where)


def _index_key_exists(env: dict[str, str], version: int) -> bool:
    runtime = _open(env)
    try:
        runtime.dek_store.get(index_key_id(product.name, version))
        return True
    except NotFoundError:
        return False
    finally:
        runtime.close()


@pytest.mark.parametrize("store", BACKEND_KINDS)
@pytest.mark.parametrize("command", ["create", "retire"])
def test_kill_9_between_an_index_key_change_and_its_event(
    tmp_path: Path, store: str, command: str, request: pytest.FixtureRequest
) -> None:
    """``index-keys create`` / ``index-keys retire``: the root key's row written or deleted
    and ``index-key.created`` / ``index-key.retired``."""
    type = f"index-key.{command}d"
    for stage in _points(store):
        env = _environment(tmp_path / stage, store, request)
        _open(env).close()  # the keyring and the database
        args = ["index-keys", "create", "--product", KILLABLE]
        if command == "retire":
            for _ in range(2):
                done = processes.run("index-keys", "create", "--product", PRODUCT, env=env)
                assert done.returncode == 0, done.stderr[-2000:]
            args = ["index-keys", "retire", "1", "--product", KILLABLE]
        _kill(args, env, f"audit:{stage}:{type}")
        where = f"{store}: index-keys {command} killed at {stage}"
        _verify(env, where)
        act = _index_key_exists(env, 1) == (command == "create")
        _both_or_neither(act, _events(env, type, f"index-key/{product.name}/1"), where)


def new_kek_in_process() -> None:
    """The child of :func:`test_kill_9_between_a_kek_change_and_its_event` (``created``)."""
    runtime = killable_audit_product.open(load_settings(dict(os.environ)))
    assert runtime.kek_tier is not None
    runtime.kek_tier.new_kek()
    runtime.close()


def _keks(env: dict[str, str]) -> list[Any]:
    runtime = _open(env)
    try:
        assert runtime.kek_tier is not None
        return list(runtime.kek_tier.keks.all())
    finally:
        runtime.close()


@pytest.mark.parametrize("store", BACKEND_KINDS)
@pytest.mark.parametrize("event", ["kek.created", "kek.rewrapped"])
def test_kill_9_between_a_kek_change_and_its_event(
    tmp_path: Path, store: str, event: str, request: pytest.FixtureRequest
) -> None:
    """The KEK tier: a KEK stored and ``kek.created`` (``KekTierProvider.new_kek``); a KEK's
    new wrap swapped in and ``kek.rewrapped`` (``migrate`` after a new MEK version)."""
    for stage in _points(store):
        env = {**_environment(tmp_path / stage, store, request), "FIELD_ENCRYPT_KEY_LAYOUT": "kek"}
        point = {**env, "SAMPLE_KILL_AT": f"audit:{stage}:{event}"}
        if event == "kek.created":
            killed = processes.call(f"{__name__}:new_kek_in_process", env=point)
            assert killed.returncode == KILLED, (stage, killed.returncode, killed.stderr[-2000:])
            act = len(_keks(env)) == 1
        else:
            runtime = _open(env)
            try:
                seed(runtime, 4, encrypt=True)
                target = runtime.provider.create_version().version
            finally:
                runtime.close()
            args = ["migrate", "--product", KILLABLE, "--mode", "rewrap-deks"]
            _kill(args, env, f"audit:{stage}:{event}")
            (kek,) = _keks(env)
            act = kek.mek_version == target
        where = f"{store}: {event} killed at {stage}"
        _verify(env, where)
        _both_or_neither(act, _events(env, event), where)


@pytest.mark.parametrize("store", BACKEND_KINDS)
def test_the_next_delivery_carries_the_event_of_an_act_killed_before_it(
    tmp_path: Path, store: str, request: pytest.FixtureRequest
) -> None:
    """``keys disable`` killed right after the key service's call: the next
    ``audit deliver`` records the event (``recovered``) and delivers it, once, in order."""
    env = _environment(tmp_path, store, request)
    version = _two_versions(env)
    _kill(["keys", "disable", version, "--product", KILLABLE], env, "audit:control:x")
    assert not _enabled(env, version)
    with EventReceiver().running() as receiver:
        args = ["audit", "deliver", "--product", PRODUCT, "--to", receiver.url, "--json"]
        delivered = processes.run(*args, env=env)
        assert delivered.returncode == 0, delivered.stderr[-2000:]
    received = receiver.settled()
    disabled = [e for e in received if e["type"] == full_type("mek.version.disabled")]
    assert len(disabled) == 1 and disabled[0]["data"]["recovered"] is True
    runtime = _open(env)
    try:
        assert runtime.audit is not None
        assert [e["id"] for e in received] == [e.id for e in runtime.audit.events()]
    finally:
        runtime.close()
    figures.record("audit outbox crash", recovered_and_delivered=1)
