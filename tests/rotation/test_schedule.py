"""The scheduled rotation, driven in-process on a fake clock: stage by stage, call by call."""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

import pytest

from field_encrypt import audit
from field_encrypt.backends.sqlite.ledger import SqliteRunLedger
from field_encrypt.backends.sqlite.lifecycle import SqliteLifecycleStore
from field_encrypt.errors import ConfigurationError, LeaseHeldError
from field_encrypt.products import ProductRuntime
from field_encrypt.rotation import Advance, Policy, advance, backup, load_policy, set_halted, verify
from field_encrypt.testing import FakeClock
from tests.support.seed import document, read_all, seed

HOUR = 3600.0


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(start=time.time())


def _advance(
    runtime: ProductRuntime, clock: FakeClock, policy: Policy | None = None, owner: str = "me"
) -> Advance:
    return advance(
        runtime,
        SqliteRunLedger(runtime.database),
        SqliteLifecycleStore(runtime.database),
        policy or Policy(max_age_days=0, batch_size=7),
        clock=clock.time,
        owner=owner,
    )


def _ready(runtime: ProductRuntime, clock: FakeClock, tmp_path: Path, count: int = 30) -> None:
    seed(runtime, count)
    backup(runtime, SqliteRunLedger(runtime.database), tmp_path / "b.jsonl", clock=clock.time)


def _stages(runtime: ProductRuntime) -> list[str]:
    assert runtime.audit is not None
    return [str(e.data["stage"]) for e in runtime.audit.events(types=[audit.ROTATION_STAGE])]


def test_walks_version_1_to_2_retired(
    runtime: ProductRuntime, clock: FakeClock, tmp_path: Path
) -> None:
    """Call 1 goes to the soak and waits; 24 fake hours later, call 3 retires version 1."""
    _ready(runtime, clock, tmp_path)
    first = _advance(runtime, clock)
    assert (first.outcome, first.stage) == ("waiting", "soak")
    assert first.entered == ("preflight", "create", "rewrap", "verify", "soak")
    assert "24.0 h left" in first.summary
    assert runtime.dek_store.count_by_version() == {"2": 30}
    clock.advance(23 * HOUR)
    second = _advance(runtime, clock)
    assert (second.outcome, second.entered) == ("waiting", ())
    clock.advance(HOUR)
    third = _advance(runtime, clock)
    assert (third.outcome, third.entered) == ("completed", ("retire", "idle"))
    assert "rotation 1→2 complete" in third.summary
    assert [(v.version, v.enabled) for v in runtime.provider.versions()] == [
        ("1", False),
        ("2", True),
    ]
    state = SqliteLifecycleStore(runtime.database).state("sample")
    assert (state.stage, state.last_from, state.last_to, state.holder) == ("idle", "1", "2", None)
    assert _stages(runtime) == [
        "preflight",
        "create",
        "rewrap",
        "verify",
        "soak",
        "retire",
        "idle",
    ]
    idle = _advance(runtime, clock, Policy())
    assert idle.outcome == "idle" and "next rotation due" in idle.summary
    assert verify(runtime, mek_version="2", sample=30).clean
    assert read_all(runtime) == {f"doc-{i}": document(i) for i in range(30)}


def test_not_due_stays_idle(runtime: ProductRuntime, clock: FakeClock, tmp_path: Path) -> None:
    """A version younger than max_age_days: nothing happens, and nothing is recorded."""
    _ready(runtime, clock, tmp_path)
    result = _advance(runtime, clock, Policy(max_age_days=30))
    assert (result.outcome, result.stage, result.entered) == ("idle", "idle", ())
    clock.advance(31 * 24 * HOUR)
    assert _advance(runtime, clock, Policy(max_age_days=30, max_backup_age_hours=1e6)).outcome == (
        "waiting"
    )


def test_preflight_blocks_without_a_backup_and_says_so_once(
    runtime: ProductRuntime, clock: FakeClock
) -> None:
    """No backup: blocked at preflight, named; a repeat call records no second event."""
    seed(runtime, 3)
    result = _advance(runtime, clock)
    assert (result.outcome, result.blocked_by, result.stage) == (
        "blocked",
        "preflight",
        "preflight",
    )
    assert "recent dek_store backup" in result.summary
    _advance(runtime, clock)
    assert runtime.audit is not None
    blocked = [e for e in runtime.audit.events(types=[audit.ROTATION_STAGE]) if "blocked" in e.data]
    assert len(blocked) == 1
    assert [v.version for v in runtime.provider.versions()] == ["1"]


def test_the_stop_switch_halts_and_resume_goes_on(
    runtime: ProductRuntime, clock: FakeClock, tmp_path: Path
) -> None:
    """--stop halts (recorded); the policy's stop does too; --resume lets it advance."""
    _ready(runtime, clock, tmp_path)
    lifecycle = SqliteLifecycleStore(runtime.database)
    set_halted(runtime, lifecycle, True, clock=clock.time)
    halted = _advance(runtime, clock)
    assert (halted.outcome, halted.stage) == ("halted", "idle")
    set_halted(runtime, lifecycle, False, clock=clock.time)
    assert _advance(runtime, clock, Policy(max_age_days=0, stop=True)).outcome == "halted"
    assert _advance(runtime, clock).outcome == "waiting"
    assert runtime.audit is not None
    switches = [
        e.data["halted"]
        for e in runtime.audit.events(types=[audit.ROTATION_STAGE])
        if "halted" in e.data
    ]
    assert switches == [True, False]


def test_a_live_lease_refuses_a_second_invocation(
    runtime: ProductRuntime, clock: FakeClock, tmp_path: Path
) -> None:
    """Another invocation's live lease: LeaseHeldError; once it expires, this one takes over."""
    _ready(runtime, clock, tmp_path)
    lifecycle = SqliteLifecycleStore(runtime.database)
    state = lifecycle.state("sample")
    lifecycle.save_state(
        dataclasses.replace(state, holder="other", lease_expires_at=clock.time() + 600)
    )
    with pytest.raises(LeaseHeldError, match="other"):
        _advance(runtime, clock)
    clock.advance(601)
    assert _advance(runtime, clock).outcome == "waiting"


def test_create_adopts_a_version_an_interrupted_call_made(
    runtime: ProductRuntime, clock: FakeClock, tmp_path: Path
) -> None:
    """Killed after creating version 2 but before saving it: the next call adopts 2."""
    _ready(runtime, clock, tmp_path)
    lifecycle = SqliteLifecycleStore(runtime.database)
    lifecycle.save_state(
        dataclasses.replace(lifecycle.state("sample"), stage="create", from_version="1")
    )
    runtime.provider.create_version()
    result = _advance(runtime, clock)
    assert result.outcome == "waiting"
    assert [v.version for v in runtime.provider.versions()] == ["1", "2"]
    assert lifecycle.state("sample").to_version == "2"


def test_verify_sends_stragglers_back_to_rewrap(
    runtime: ProductRuntime, clock: FakeClock, tmp_path: Path
) -> None:
    """A DEK wrapped under the old version after the rewrap: verify goes back to rewrap once."""
    _ready(runtime, clock, tmp_path)
    _advance(runtime, clock)
    lifecycle = SqliteLifecycleStore(runtime.database)
    lifecycle.save_state(dataclasses.replace(lifecycle.state("sample"), stage="verify"))
    runtime.encryptor.create_dek(version="1")
    result = _advance(runtime, clock)
    assert result.entered == ("rewrap", "verify", "soak")
    assert runtime.dek_store.count_by_version() == {"2": 31}


def test_a_compromised_old_version_skips_the_soak(
    runtime: ProductRuntime, clock: FakeClock, tmp_path: Path
) -> None:
    """Declared compromised during the soak: the next call retires it without waiting."""
    _ready(runtime, clock, tmp_path)
    _advance(runtime, clock)
    lifecycle = SqliteLifecycleStore(runtime.database)
    note = lifecycle.note("sample", "1")
    lifecycle.save_note("sample", dataclasses.replace(note, compromised_at=clock.time()))
    result = _advance(runtime, clock)
    assert result.outcome == "completed"


def test_policy_files_and_flags(tmp_path: Path) -> None:
    """TOML or JSON, dashes or underscores; flags override; unknown keys and bad types refused."""
    toml = tmp_path / "p.toml"
    toml.write_text("max-age-days = 25\nsoak_hours = 12\nmax_rps = 45\nstop = false\n")
    policy = load_policy(toml, soak_hours=6.0, max_rps=None)
    assert (policy.max_age_days, policy.soak_hours, policy.max_rps) == (25, 6.0, 45)
    js = tmp_path / "p.json"
    js.write_text(json.dumps({"retention_days": 60, "sample": 10}))
    assert load_policy(js).retention_days == 60
    toml.write_text("max_age = 3\n")
    with pytest.raises(ConfigurationError, match="unknown setting"):
        load_policy(toml)
    toml.write_text('stop = "yes"\n')
    with pytest.raises(ConfigurationError, match="stop must be true or false"):
        load_policy(toml)
    toml.write_text("soak_hours = -1\n")
    with pytest.raises(ConfigurationError, match="must not be negative"):
        load_policy(toml)
    with pytest.raises(ConfigurationError, match="cannot read"):
        load_policy(tmp_path / "missing.toml")


def test_policy_file_names_every_problem_at_once(tmp_path: Path) -> None:
    """The pydantic schema reports each bad key (type, bound, unknown) in one error."""
    toml = tmp_path / "p.toml"
    toml.write_text('batch_size = 0\nmax_rps = 0\nsample = 1.5\nsoak = 1\nstop = "no"\n')
    with pytest.raises(ConfigurationError) as caught:
        load_policy(toml)
    message = str(caught.value)
    for part in (
        "batch_size must be at least 1",
        "max_rps must be positive",
        "sample must be a whole number",
        "unknown setting soak",
        "stop must be true or false",
    ):
        assert part in message
