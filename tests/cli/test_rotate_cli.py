"""``field-encrypt rotate`` as a scheduler calls it: real processes, kill -9 at every stage.

Each call is a separate process of the killable sample product; the hidden ``--now``
moves time forward between calls (past the rotation's lease after a kill, and past the
soak), so nothing sleeps. The same command is run after every kill and goes on from
where the dead one stopped.
"""

from __future__ import annotations

import datetime as dt
import json
import signal
import sqlite3
from pathlib import Path

from field_encrypt import audit
from field_encrypt.audit_outbox import reconcile
from field_encrypt.backends.sqlite.lifecycle import SqliteLifecycleStore
from field_encrypt.cli.exit_codes import ExitCode
from field_encrypt.config import load_settings
from field_encrypt.rotation import verify
from tests.cli.helpers import PRODUCT, cli, cli_process
from tests.support.sample_product import product
from tests.support.seed import document, read_all, seed

KILLABLE = "tests.support.sample_product:killable_rotation_product"
COUNT = 40


def _move_holder_elsewhere(db: str) -> None:
    conn = sqlite3.connect(db)
    with conn:
        conn.execute(
            "UPDATE rotation_state SET state = json_set(state, '$.holder', "
            "'elsewhere.invalid:1:000000'), revision = revision + 1"
        )
    conn.close()


def _at(start: dt.datetime, **delta: float) -> str:
    return (start + dt.timedelta(**delta)).isoformat()


def test_a_rotate_killed_on_this_host_is_taken_over_at_once(
    env: dict[str, str], tmp_path: Path
) -> None:
    """Killed entering pre-flight, the rotation's lease (10 minutes) names a dead process of
    this host: the next call a minute later advances at once to the soak (it was refused,
    exit 6, "another rotate invocation", for the rest of the 10 minutes)."""
    runtime = product.open(load_settings(env))
    seed(runtime, COUNT)
    runtime.close()
    assert cli_process("backup", "--product", PRODUCT, "--out", str(tmp_path / "b"), env=env)
    policy = tmp_path / "policy.toml"
    policy.write_text("max_age_days = 0\nbatch_size = 10\nsample = 40\n")
    args = ["rotate", "--product", KILLABLE, "--policy", str(policy)]
    start = dt.datetime.now(dt.UTC)
    killed = cli_process(
        *args, "--now", _at(start, minutes=1), env={**env, "SAMPLE_KILL_AT": "stage:preflight"}
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    again = cli_process(*args, "--now", _at(start, minutes=2), env=env)
    assert again.returncode == ExitCode.WAITING, again.stdout + again.stderr


def test_rotate_survives_kill_9_at_every_stage(env: dict[str, str], tmp_path: Path) -> None:
    """Killed entering each stage, after creating the version, mid-rewrap and mid-retire."""
    runtime = product.open(load_settings(env))
    seed(runtime, COUNT)
    runtime.close()
    assert cli_process("backup", "--product", PRODUCT, "--out", str(tmp_path / "b"), env=env)
    policy = tmp_path / "policy.toml"
    policy.write_text("max_age_days = 0\nbatch_size = 10\nsample = 40\n")
    args = ["rotate", "--product", KILLABLE, "--policy", str(policy)]
    start = dt.datetime.now(dt.UTC)
    minutes = 0.0

    def call(kill: str | None, *, hours: float = 0.0) -> int:
        nonlocal minutes
        minutes += 11  # past the rotation's lease (10 min) and a migration's (1 min)
        extra = {"SAMPLE_KILL_AT": kill} if kill else {}
        now = _at(start, hours=hours, minutes=minutes)
        result = cli_process(*args, "--now", now, env={**env, **extra})
        if kill:
            assert result.returncode == -signal.SIGKILL, (kill, result.stdout, result.stderr)
        return result.returncode

    call("stage:preflight")
    # The dead invocation was this host's: it would be taken over at once. In another
    # host's name, its lease is waited out.
    _move_holder_elsewhere(env["FIELD_ENCRYPT_DATABASE"])
    held = cli_process(*args, "--now", _at(start, minutes=minutes + 1), env=env)
    assert held.returncode == ExitCode.REFUSED and "another rotate invocation" in held.stderr
    assert "elsewhere.invalid" in held.stderr
    for kill in (
        "stage:create",
        "control:create_version",
        "stage:rewrap",
        "provider:50",
        "stage:verify",
        "stage:soak",
    ):
        call(kill)
    assert call(None) == ExitCode.WAITING
    for kill in ("stage:retire", "control:set_enabled"):
        call(kill, hours=25)
    assert call(None, hours=25) == ExitCode.OK

    runtime = product.open(load_settings(env))
    try:
        assert [(v.version, v.enabled) for v in runtime.provider.versions()] == [
            ("1", False),
            ("2", True),
        ]
        assert runtime.dek_store.count_by_version() == {"2": COUNT}
        assert verify(runtime, mek_version="2", sample=COUNT).clean
        assert read_all(runtime) == {f"doc-{i}": document(i) for i in range(COUNT)}
        state = SqliteLifecycleStore(runtime.database).state("sample")
        assert (state.stage, state.last_from, state.last_to) == ("idle", "1", "2")
        note = SqliteLifecycleStore(runtime.database).note("sample", "1")
        assert note.retired_at is not None and note.retain_until is not None
        assert runtime.audit is not None and runtime.audit.verify().intact
        types = [e.type for e in runtime.audit.events()]
        assert types.count(audit.MEK_VERSION_CREATED) == 1  # adopted, never made twice
        assert types.count(audit.MEK_VERSION_DISABLED) == 1  # recorded when first seen
        assert types.count(audit.MEK_VERSION_RETIRED) == 1
        (created,) = runtime.audit.events(types=[audit.MEK_VERSION_CREATED])
        assert created.data["recordedLate"] is True
        # The killed call's intent, resolved as audit verify does: the version it made has
        # its event (recorded late), so the intent settles without a second one.
        resolved = {i.type: outcome for i, outcome in reconcile(runtime)}
        assert resolved[audit.MEK_VERSION_CREATED] == "settled"
        assert len(runtime.audit.events(types=[audit.MEK_VERSION_CREATED])) == 1
        # Likewise the disable killed after the key service's call (control:set_enabled):
        # the next call recorded it (alreadyDisabled), so its intent adds no second event.
        assert resolved[audit.MEK_VERSION_DISABLED] == "settled"
        assert len(runtime.audit.events(types=[audit.MEK_VERSION_DISABLED])) == 1
    finally:
        runtime.close()
    conn = sqlite3.connect(env["FIELD_ENCRYPT_DATABASE"])
    runs = conn.execute("SELECT mode, status FROM rotation_runs").fetchall()
    conn.close()
    assert runs == [("rewrap-deks", "completed")]  # one run, resumed after the kill


def test_exit_codes_for_waiting_halted_and_status(env: dict[str, str], tmp_path: Path) -> None:
    """8 while soaking, 9 with the stop switch set, 0 with --status; --json has the stage."""
    runtime = product.open(load_settings(env))
    seed(runtime, 3)
    runtime.close()
    assert cli("backup", "--product", PRODUCT, "--out", str(tmp_path / "b")).exit_code == 0
    first = cli("rotate", "--product", PRODUCT, "--max-age-days", "0", "--json")
    assert first.exit_code == ExitCode.WAITING
    assert json.loads(first.stdout)["stage"] == "soak"
    stop = cli("rotate", "--product", PRODUCT, "--stop")
    assert stop.exit_code == 0 and "halted at soak" in stop.stdout
    halted = cli("rotate", "--product", PRODUCT)
    assert halted.exit_code == ExitCode.HALTED and "halted at soak" in halted.stdout
    status = cli("rotate", "--product", PRODUCT, "--status", "--json")
    assert status.exit_code == 0
    shown = json.loads(status.stdout)
    assert (shown["stage"], shown["halted"], shown["from_version"], shown["to_version"]) == (
        "soak",
        True,
        "1",
        "2",
    )
    assert shown["soak_until"] is not None and shown["policy"]["soak_hours"] == 24.0
    later = (dt.datetime.now(dt.UTC) + dt.timedelta(hours=25)).isoformat()
    done = cli("rotate", "--product", PRODUCT, "--resume", "--now", later)
    assert done.exit_code == 0 and "rotation 1→2 complete" in done.stdout
    text = cli("rotate", "--product", PRODUCT, "--status", "--now", later)
    assert text.exit_code == 0
    assert "from version 1, to version 2, completed at" in text.stdout  # the last rotation
    assert "{" not in text.stdout and "None" not in text.stdout  # no Python reprs
    blocked = cli("rotate", "--product", PRODUCT, "--max-age-days", "0", "--now", later)
    assert blocked.exit_code == ExitCode.NOT_VERIFIED  # the backup is now 25 h old
    assert "blocked at preflight: recent dek_store backup" in blocked.stderr
    both = cli("rotate", "--product", PRODUCT, "--stop", "--status")
    assert both.exit_code == ExitCode.CONFIG
