"""kill -9 at every point between an act and its audit event: both are stored, or neither.

The audit trail is a transactional outbox (``docs/audit.md``): an act's rows and its event
commit in one unit, and an act outside the database (a MEK version created, enabled or
disabled in the key service; every act on Cosmos DB) is announced first and reconciled by
``audit verify``. Each act below (:data:`ACTS`) is the real command (``field-encrypt keys
create``, ``keys disable``, ``keys enable``, ``keys retire``, ``keys compromised``,
``migrate`` in the rewrap, ``re-encrypt``, ``encrypt``, ``decrypt`` and ``reindex`` modes, ``restore``,
``index-keys create``, ``index-keys retire``) or the library call
(``FieldEncryptor.shred``, ``KekTierProvider.new_kek``) in its own OS process on the
killable sample product (``SAMPLE_KILL_AT=audit:STAGE:TYPE``, see
``tests/support/sample_product.py``), killed with SIGKILL at each point, on a fresh
database of every kind each time. After each kill ``field-encrypt audit verify`` must pass,
and the act and its event must either both be there or both be absent
(:func:`_kill_at_every_point`, the one body every act runs). A document run is then
finished by the same command, and every document must be named by exactly one event.
"""

from __future__ import annotations

import base64
import json
import os
import re
import signal
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from field_encrypt.audit import full_type
from field_encrypt.backends.registry import open_lifecycle_store, open_run_ledger
from field_encrypt.blind_index import index_key_version_of
from field_encrypt.config import load_settings
from field_encrypt.errors import NotFoundError
from field_encrypt.index_keys import index_key_id
from field_encrypt.products import ProductRuntime
from field_encrypt.rehearsal import corrupt, delete
from field_encrypt.rotation import backup, open_ledger
from field_encrypt.rotation.reindex import keyring_of
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
DOCUMENTS = 6
"""Documents a document run migrates: one page (``--batch-size 10``)."""


def _points(store: str) -> tuple[str, ...]:
    """The kill points of a database act: on Cosmos DB also right after its intent (the
    reconciler must tell from the store that the act did not happen, and drop it)."""
    return ("intent", *DATABASE_POINTS) if store == "cosmos" else DATABASE_POINTS


def _database_points(store: str) -> tuple[str, ...]:
    return DATABASE_POINTS


def _key_service_points(store: str) -> tuple[str, ...]:
    return KEY_SERVICE_POINTS


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


def _events(env: dict[str, str], type: str, subject: str | None = None) -> list[Any]:
    runtime = _open(env)
    try:
        assert runtime.audit is not None
        return runtime.audit.events(types=[full_type(type)], subject=subject)
    finally:
        runtime.close()


def _verify(env: dict[str, str], where: str) -> None:
    """``audit verify`` passes (after resolving what the kill left pending)."""
    result = processes.run("audit", "verify", "--product", PRODUCT, "--json", env=env)
    assert result.returncode == 0, (where, result.stderr[-2000:])
    assert json.loads(result.stdout)["intact"], where


def _kill(args: list[str], env: dict[str, str], point: str) -> None:
    killed = processes.run(*args, env={**env, "SAMPLE_KILL_AT": point})
    assert killed.returncode == KILLED, (point, killed.returncode, killed.stderr[-2000:])


def _kill_call(target: str, args: tuple[Any, ...], env: dict[str, str], point: str) -> None:
    killed = processes.call(target, *args, env={**env, "SAMPLE_KILL_AT": point})
    assert killed.returncode == KILLED, (point, killed.returncode, killed.stderr[-2000:])


@dataclass(frozen=True, kw_only=True)
class Act:
    """One act and its event, as :func:`_kill_at_every_point` drives it.

    ``prepare`` sets a fresh database up and returns what the others need (``state``);
    ``kill`` runs the act killed at a point; ``done`` says whether the act happened;
    ``subject`` narrows the events counted; ``after`` checks more once the kill was
    checked (a document run finished by the same command).
    """

    name: str
    event: str
    points: Callable[[str], tuple[str, ...]]
    prepare: Callable[[dict[str, str]], Any]
    kill: Callable[[dict[str, str], Any, str], None]
    done: Callable[[dict[str, str], Any], bool]
    subject: Callable[[Any], str | None] = lambda _state: None
    after: Callable[[dict[str, str], Any, str], None] | None = None
    env: dict[str, str] = field(default_factory=dict)


def _kill_at_every_point(
    act: Act, store: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """The act killed at each of its points, each on a fresh database: ``audit verify``
    passes, and the act and its event are both there or both absent. Where a point comes
    before the act can stand (an intent; on SQL, the act's uncommitted rows), the points
    must cover both sides of it."""
    seen = set()
    points = act.points(store)
    for stage in points:
        env = {**_environment(tmp_path / stage, store, request), **act.env}
        state = act.prepare(env)
        act.kill(env, state, f"audit:{stage}:{act.event}")
        where = f"{store}: {act.name} killed at {stage}"
        _verify(env, where)
        happened = act.done(env, state)
        events = len(_events(env, act.event, act.subject(state)))
        assert events == (1 if happened else 0), (
            f"{where}: act {'done' if happened else 'not done'}, {events} events"
        )
        figures.record(
            "audit outbox crash",
            kills=1,
            acts_with_event=int(happened),
            neither=int(not happened),
            **{f"kills_{store}": 1, f"acts_with_event_{store}": int(happened)},
        )
        seen.add(happened)
        if act.after is not None:
            act.after(env, state, where)
    if store != "cosmos" or "intent" in points:
        assert seen == {True, False}, f"{store}: {act.name}: the points cover one side only"


# -- MEK versions -------------------------------------------------------------------------


def _versions(env: dict[str, str]) -> list[Any]:
    runtime = _open(env)
    try:
        return runtime.provider.versions()
    finally:
        runtime.close()


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
    return next(v.enabled for v in _versions(env) if v.version == version)


def _key_change(command: str) -> Act:
    """``keys disable`` / ``keys enable``: the key service's change and its event."""

    def prepare(env: dict[str, str]) -> str:
        version = _two_versions(env)
        if command == "enable":
            done = processes.run("keys", "disable", version, "--product", PRODUCT, env=env)
            assert done.returncode == 0, done.stderr[-2000:]
        return version

    return Act(
        name=f"keys {command}",
        event=f"mek.version.{command}d",
        points=_key_service_points,
        prepare=prepare,
        kill=lambda env, version, point: _kill(
            ["keys", command, version, "--product", KILLABLE], env, point
        ),
        done=lambda env, version: _enabled(env, version) == (command == "enable"),
    )


def _created() -> Act:
    """``keys create``: a MEK version made in the key service and ``mek.version.created``
    (the version is named only once made: the intent lists those there were before)."""

    def prepare(env: dict[str, str]) -> int:
        return len(_versions(env))

    return Act(
        name="keys create",
        event="mek.version.created",
        points=_key_service_points,
        prepare=prepare,
        kill=lambda env, _before, point: _kill(
            ["keys", "create", "--product", KILLABLE], env, point
        ),
        done=lambda env, before: len(_versions(env)) > before,
    )


def _note(env: dict[str, str], version: str) -> Any:
    runtime = _open(env)
    try:
        return open_lifecycle_store(runtime.database).note(product.name, version)
    finally:
        runtime.close()


def _version_note(command: str) -> Act:
    """``keys retire`` / ``keys compromised``: the version's note (retired, compromised)
    and ``mek.version.retired`` / ``mek.version.compromised``."""
    args = ["--soak", "0"] if command == "retire" else []

    def done(env: dict[str, str], version: str) -> bool:
        note = _note(env, version)
        return note.retired_at is not None if command == "retire" else bool(note.compromised)

    return Act(
        name=f"keys {command}",
        event="mek.version.compromised" if command == "compromised" else "mek.version.retired",
        points=_points,
        prepare=_two_versions,
        kill=lambda env, version, point: _kill(
            ["keys", command, version, "--product", KILLABLE, *args], env, point
        ),
        done=done,
    )


# -- migration runs ----------------------------------------------------------------------


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


def _run_step(event: str) -> Act:
    """``migrate``: the shard taken and ``run.started``; the run finished and ``run.completed``."""

    def done(env: dict[str, str], _state: None) -> bool:
        run = _latest_run(env)
        if event == "run.started":
            return run is not None and any(s.owner or s.status != "pending" for s in run.shards)
        return run is not None and bool(run.finished)

    args = ["migrate", "--product", KILLABLE, "--mode", "rewrap-deks", "--batch-size", "4"]
    return Act(
        name=f"migrate ({event})",
        event=event,
        points=_database_points,
        prepare=_rewrap_ready,
        kill=lambda env, _state, point: _kill(args, env, point),
        done=done,
    )


def _lease_reclaimed() -> Act:
    """``migrate`` after a run killed holding its shard (lease TTL one hour): the dead
    holder's lease released and ``run.lease.reclaimed``."""
    args = ["migrate", "--product", KILLABLE, "--mode", "rewrap-deks", "--lease-ttl", "3600"]

    def prepare(env: dict[str, str]) -> str:
        _rewrap_ready(env)
        _kill(args, env, "audit:committed:run.started")  # dies holding the shard
        holder: str | None = _latest_run(env).shards[0].owner
        assert holder is not None
        return holder

    return Act(
        name="migrate (run.lease.reclaimed)",
        event="run.lease.reclaimed",
        points=_points,
        prepare=prepare,
        kill=lambda env, _holder, point: _kill(args, env, point),
        done=lambda env, holder: _latest_run(env).shards[0].owner != holder,
    )


def _document_ids(env: dict[str, str]) -> dict[str, tuple[str | None, dict[str, Any]]]:
    runtime = _open(env)
    try:
        page = runtime.documents["records"].scan(limit=1000)
        return {d.id: (d.dek_id, d.fields) for d in page.documents}
    finally:
        runtime.close()


def _moved(mode: str, before: tuple[str | None, dict[str, Any]], now: tuple[Any, Any]) -> bool:
    """Whether one document was migrated by a ``mode`` run (from what it was before)."""
    if mode == "reindex":
        return index_key_version_of(now[1]["ssn__bi"]) == 2
    return bool(now[0] != before[0])  # re-encrypt: a new DEK; encrypt: a DEK; decrypt: none


def _document_run(mode: str, event: str) -> Act:
    """``migrate --mode MODE`` over one page: the page's document writes and its
    ``document.*`` event; then the same command finishes the run, and every document is
    named by exactly one event (none lost, none recorded twice)."""
    args = ["migrate", "--mode", mode, "--batch-size", "10", "--product"]

    def prepare(env: dict[str, str]) -> dict[str, Any]:
        runtime = _open(env)
        try:
            if mode == "reindex":
                keyring = keyring_of(runtime)
                keyring.create(1)
                seed(runtime, DOCUMENTS, index=keyring.open(product.indexed))
                assert keyring.create_next() == 2
            else:
                seed(runtime, DOCUMENTS, encrypt=mode != "encrypt")
                runtime.provider.create_version()
        finally:
            runtime.close()
        return _document_ids(env)

    def done(env: dict[str, str], before: dict[str, Any]) -> bool:
        now = _document_ids(env)
        moved = {i for i in before if _moved(mode, before[i], now[i])}
        assert moved in (set(), set(before)), f"{mode}: a page partly migrated: {moved}"
        return bool(moved)

    def after(env: dict[str, str], before: dict[str, Any], where: str) -> None:
        finished = processes.run(*args, PRODUCT, env=env)
        assert finished.returncode == 0, (where, finished.stderr[-2000:])
        _verify(env, where)
        named = [d["id"] for e in _events(env, event) for d in e.data["documents"]]
        assert sorted(named) == sorted(before), f"{where}: documents named {sorted(named)}"

    return Act(
        name=f"migrate --mode {mode}",
        event=event,
        points=_points,
        prepare=prepare,
        kill=lambda env, _before, point: _kill([*args, KILLABLE], env, point),
        done=done,
        after=after,
    )


# -- DEKs, index keys, KEKs ------------------------------------------------------------------


def shred_in_process(dek_id: str) -> None:
    """The child of the ``shred`` act."""
    runtime = killable_audit_product.open(load_settings(dict(os.environ)))
    runtime.encryptor.shred(dek_id)
    runtime.close()


def _exists(env: dict[str, str], dek_id: str) -> bool:
    runtime = _open(env)
    try:
        runtime.dek_store.get(dek_id)
        return True
    except NotFoundError:
        return False
    finally:
        runtime.close()


def _shred() -> Act:
    """``FieldEncryptor.shred``: the DEK deleted and ``dek.shredded``."""

    def prepare(env: dict[str, str]) -> str:
        runtime = _open(env)
        try:
            seed(runtime, 2, encrypt=True)
            dek_id: str = runtime.dek_store.scan(limit=1).records[0].dek_id
            return dek_id
        finally:
            runtime.close()

    return Act(
        name="shred",
        event="dek.shredded",
        points=_database_points,
        prepare=prepare,
        kill=lambda env, dek_id, point: _kill_call(
            f"{__name__}:shred_in_process", (dek_id,), env, point
        ),
        done=lambda env, dek_id: not _exists(env, dek_id),
        subject=lambda dek_id: f"dek/{dek_id}",
    )


def _restore(damage: str) -> Act:
    """``restore``: a DEK row put back (deleted) or repaired (garbled wrap,
    compare-and-swap) and ``dek.restored``."""

    def prepare(env: dict[str, str]) -> tuple[str, str, Path]:
        backup_file = Path(env["FIELD_ENCRYPT_KEYRING"]).parent / "deks.jsonl"
        runtime = _open(env)
        try:
            seed(runtime, 2, encrypt=True)
            backup(runtime, open_ledger(runtime), backup_file)
            damaged = (delete if damage == "missing" else corrupt)(runtime, 1)[0]
            wrapped = [json.loads(line) for line in backup_file.read_text().splitlines()[1:-1]]
            expected = next(r["wrapped"] for r in wrapped if r["dek_id"] == damaged)
        finally:
            runtime.close()
        return damaged, expected, backup_file

    def done(env: dict[str, str], state: tuple[str, str, Path]) -> bool:
        damaged, expected, _ = state
        runtime = _open(env)
        try:
            row = runtime.dek_store.get(damaged)
            return base64.b64encode(row.wrapped).decode() == expected
        except NotFoundError:
            return False
        finally:
            runtime.close()

    return Act(
        name=f"restore of a {damage} row",
        event="dek.restored",
        points=_points,
        prepare=prepare,
        kill=lambda env, state, point: _kill(
            ["restore", "--product", KILLABLE, "--in", str(state[2])], env, point
        ),
        done=done,
        subject=lambda state: f"dek/{state[0]}",
    )


def _index_key(command: str) -> Act:
    """``index-keys create`` / ``index-keys retire``: the root key's row written or deleted
    and ``index-key.created`` / ``index-key.retired``."""

    def prepare(env: dict[str, str]) -> None:
        _open(env).close()  # the keyring and the database
        if command == "retire":
            for _ in range(2):
                done = processes.run("index-keys", "create", "--product", PRODUCT, env=env)
                assert done.returncode == 0, done.stderr[-2000:]

    args = ["index-keys", "retire", "1"] if command == "retire" else ["index-keys", "create"]
    return Act(
        name=f"index-keys {command}",
        event=f"index-key.{command}d",
        points=_points,
        prepare=prepare,
        kill=lambda env, _state, point: _kill([*args, "--product", KILLABLE], env, point),
        done=lambda env, _state: (
            _exists(env, index_key_id(product.name, 1)) == (command == "create")
        ),
        subject=lambda _state: f"index-key/{product.name}/1",
    )


def new_kek_in_process() -> None:
    """The child of the ``kek.created`` act."""
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


def _kek_created() -> Act:
    """The KEK tier: a KEK stored and ``kek.created`` (``KekTierProvider.new_kek``)."""
    return Act(
        name="new_kek",
        event="kek.created",
        points=_points,
        prepare=lambda env: None,
        kill=lambda env, _state, point: _kill_call(
            f"{__name__}:new_kek_in_process", (), env, point
        ),
        done=lambda env, _state: len(_keks(env)) == 1,
        env={"FIELD_ENCRYPT_KEY_LAYOUT": "kek"},
    )


def _kek_rewrapped() -> Act:
    """The KEK tier: a KEK's new wrap swapped in and ``kek.rewrapped`` (``migrate`` after a
    new MEK version)."""

    def prepare(env: dict[str, str]) -> str:
        runtime = _open(env)
        try:
            seed(runtime, 4, encrypt=True)
            target: str = runtime.provider.create_version().version
            return target
        finally:
            runtime.close()

    def done(env: dict[str, str], target: str) -> bool:
        (kek,) = _keks(env)
        return bool(kek.mek_version == target)

    return Act(
        name="migrate (kek.rewrapped)",
        event="kek.rewrapped",
        points=_points,
        prepare=prepare,
        kill=lambda env, _target, point: _kill(
            ["migrate", "--product", KILLABLE, "--mode", "rewrap-deks"], env, point
        ),
        done=done,
        env={"FIELD_ENCRYPT_KEY_LAYOUT": "kek"},
    )


ACTS = [
    _created(),
    _key_change("disable"),
    _key_change("enable"),
    _version_note("retire"),
    _version_note("compromised"),
    _run_step("run.started"),
    _run_step("run.completed"),
    _lease_reclaimed(),
    _document_run("re-encrypt", "document.reencrypted"),
    _document_run("encrypt", "document.backfilled"),
    _document_run("decrypt", "document.backfilled"),
    _document_run("reindex", "document.reindexed"),
    _shred(),
    _restore("missing"),
    _restore("unreadable"),
    _index_key("create"),
    _index_key("retire"),
    _kek_created(),
    _kek_rewrapped(),
]


@pytest.mark.parametrize("store", BACKEND_KINDS)
@pytest.mark.parametrize(
    "act", ACTS, ids=[re.sub(r"[^a-z.]+", "-", a.name).strip("-") for a in ACTS]
)
def test_kill_9_between_an_act_and_its_event(
    tmp_path: Path, store: str, act: Act, request: pytest.FixtureRequest
) -> None:
    """Each act killed at every point between it and its event: both stored, or neither."""
    _kill_at_every_point(act, store, tmp_path, request)


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
