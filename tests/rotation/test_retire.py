"""The retirement gate: each condition refuses on its own, named; all together retire.

The library is driven on an injected clock (the soak is 24 hours of fake time); one CLI
test checks the exit code and the hidden ``--now``.
"""

from __future__ import annotations

import datetime as dt
import json
import time

import pytest

from field_encrypt import audit
from field_encrypt.backends.registry import open_lifecycle_store, open_run_ledger
from field_encrypt.cli.exit_codes import ExitCode
from field_encrypt.errors import ConfigurationError, RotationError
from field_encrypt.products import ProductRuntime
from field_encrypt.rotation import (
    create_version,
    enable_version,
    retire,
    retire_gate,
    version_rows,
)
from field_encrypt.rotation.retire import DEKS_GONE, SAMPLE_READS, SOAK_PASSED, RetireReport
from field_encrypt.testing import FakeClock
from tests.cli.helpers import PRODUCT, cli
from tests.rotation.helpers import run
from tests.support.fixtures import on_every_store
from tests.support.seed import seed

pytestmark = on_every_store

HOUR = 3600.0
DAY = 24 * HOUR


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(start=time.time())


def _rotated(runtime: ProductRuntime, clock: FakeClock, count: int = 20) -> None:
    """``count`` documents, version 2 created, every DEK rewrapped onto it at ``clock``."""
    seed(runtime, count)
    create_version(runtime)
    assert run(runtime, clock).status == "completed"


def _retire(runtime: ProductRuntime, clock: FakeClock, **kwargs: object) -> RetireReport:
    return retire(
        runtime,
        open_run_ledger(runtime.database),
        open_lifecycle_store(runtime.database),
        kwargs.pop("version", "1"),  # type: ignore[arg-type]
        clock=clock.time,
        **kwargs,  # type: ignore[arg-type]
    )


def _refused(report: RetireReport) -> list[str]:
    return [c.name for c in report.refusals]


def test_refused_while_deks_remain(runtime: ProductRuntime, clock: FakeClock) -> None:
    """Before the rewrap: DEKs on version 1 refuse it (and the soak has not started)."""
    seed(runtime, 5)
    create_version(runtime)
    clock.advance(30 * DAY)
    report = _retire(runtime, clock)
    assert not report.retired and _refused(report) == [DEKS_GONE, SAMPLE_READS]
    assert "5 DEKs still wrapped under version 1" in report.refusals[0].detail
    assert [(v.version, v.enabled) for v in runtime.provider.versions()] == [
        ("1", True),
        ("2", True),
    ]


def test_refused_for_a_dek_left_on_the_version_alone(
    runtime: ProductRuntime, clock: FakeClock
) -> None:
    """One DEK still wrapped under version 1 (no document uses it): refused for that only."""
    _rotated(runtime, clock)
    runtime.encryptor.create_dek(version="1")
    clock.advance(25 * HOUR)
    report = _retire(runtime, clock)
    assert _refused(report) == [DEKS_GONE]
    assert "1 DEKs still wrapped under version 1" in report.refusals[0].detail


def test_refused_when_a_sampled_document_does_not_decrypt(
    runtime: ProductRuntime, clock: FakeClock
) -> None:
    """A document that cannot be read once the version is refused blocks the retirement."""
    _rotated(runtime, clock)
    docs = runtime.documents["records"]
    victim = docs.scan(limit=1).documents[0]
    token = victim.fields["ssn"]
    flipped = token[:-2] + ("A" if token[-2] != "A" else "B") + token[-1]
    docs.replace_fields(victim, {**victim.fields, "ssn": flipped}, victim.dek_id)
    clock.advance(25 * HOUR)
    report = _retire(runtime, clock, sample=20)
    assert _refused(report) == [SAMPLE_READS]
    assert f"records/{victim.id}" in report.refusals[0].detail
    assert runtime.provider.versions()[0].enabled


def test_refused_during_the_soak_then_retired_after_it(
    runtime: ProductRuntime, clock: FakeClock
) -> None:
    """23 hours after the rewrap: refused, naming the time left; 24 hours: retired."""
    _rotated(runtime, clock)
    assert runtime.audit is not None
    clock.advance(23 * HOUR)
    report = _retire(runtime, clock)
    assert _refused(report) == [SOAK_PASSED]
    assert "1.0 h left" in report.refusals[0].detail
    assert runtime.provider.versions()[0].enabled
    assert runtime.audit.events(types=[audit.MEK_VERSION_RETIRED]) == []
    clock.advance(1 * HOUR)
    report = _retire(runtime, clock)
    assert report.retired and not report.refusals and len(report.checks) == 3
    assert report.retain_until == pytest.approx(clock.time() + 30 * DAY)
    assert [(v.version, v.enabled) for v in runtime.provider.versions()] == [
        ("1", False),
        ("2", True),
    ]
    (disabled,) = runtime.audit.events(types=[audit.MEK_VERSION_DISABLED])
    (retired,) = runtime.audit.events(types=[audit.MEK_VERSION_RETIRED])
    assert disabled.data["via"] == retired.data["via"] == "keys retire"
    assert retired.data["soakHours"] == 24.0 and not retired.data["soakWaived"]
    assert retired.data["retainUntil"] == dt.datetime.fromtimestamp(
        report.retain_until or 0, dt.UTC
    ).isoformat(timespec="seconds")
    row = version_rows(runtime, open_lifecycle_store(runtime.database))[0]
    assert row["retain_until"] == retired.data["retainUntil"] and row["retired_at"]


def test_soak_and_retention_are_configurable(runtime: ProductRuntime, clock: FakeClock) -> None:
    """--soak 2 hours and --retention-days 90."""
    _rotated(runtime, clock)
    clock.advance(2 * HOUR)
    report = _retire(runtime, clock, soak_hours=2.0, retention_days=90.0)
    assert report.retired and report.retain_until == pytest.approx(clock.time() + 90 * DAY)


def test_a_rerun_that_moved_nothing_does_not_restart_the_soak(
    runtime: ProductRuntime, clock: FakeClock
) -> None:
    """The soak counts from the last run that moved DEKs off the version, not a no-op re-run."""
    _rotated(runtime, clock)
    clock.advance(20 * HOUR)
    assert run(runtime, clock).counters.changed == 0
    clock.advance(4 * HOUR)
    assert _retire(runtime, clock).retired


def test_a_compromised_version_needs_no_soak(runtime: ProductRuntime, clock: FakeClock) -> None:
    """Once its DEKs are gone, a compromised version is retired at once."""
    _rotated(runtime, clock)
    lifecycle = open_lifecycle_store(runtime.database)
    note = lifecycle.note("sample", "1")
    lifecycle.save_note("sample", type(note)(version="1", compromised_at=clock.time()))
    report = _retire(runtime, clock)
    assert report.retired and report.compromised
    soak = next(c for c in report.checks if c.name == SOAK_PASSED)
    assert soak.ok and "waived" in soak.detail


def test_retire_is_idempotent_and_enable_undoes_it(
    runtime: ProductRuntime, clock: FakeClock
) -> None:
    """A second retire does nothing; after keys enable, the gate runs again."""
    _rotated(runtime, clock)
    clock.advance(DAY)
    first = _retire(runtime, clock)
    assert first.retired
    again = _retire(runtime, clock)
    assert again.already_retired and again.retain_until == first.retain_until
    lifecycle = open_lifecycle_store(runtime.database)
    enable_version(runtime, lifecycle, "1")
    assert lifecycle.note("sample", "1").retired_at is None
    assert lifecycle.note("sample", "1").retain_until == first.retain_until  # kept
    third = _retire(runtime, clock)
    assert third.retired and not third.already_retired


def test_the_current_or_an_unknown_version_is_refused(
    runtime: ProductRuntime, clock: FakeClock
) -> None:
    """Retiring the version in use is a refusal; a version that does not exist, a config error."""
    _rotated(runtime, clock)
    with pytest.raises(RotationError, match="current version"):
        _retire(runtime, clock, version="2")
    with pytest.raises(ConfigurationError, match="no version '7'"):
        _retire(runtime, clock, version="7")


def test_cli_exits_6_naming_the_condition_then_0(
    env: dict[str, str], runtime: ProductRuntime
) -> None:
    """keys retire: exit 6 and the failed condition on stderr; with the soak over, exit 0."""
    seed(runtime, 5)
    assert cli("keys", "create", "--product", PRODUCT).exit_code == 0
    assert cli("migrate", "--product", PRODUCT, "--mode", "rewrap-deks").exit_code == 0
    refused = cli("keys", "retire", "1", "--product", PRODUCT)
    assert refused.exit_code == ExitCode.REFUSED
    assert "refusing to retire version 1: soak period passed:" in refused.stderr
    assert "h left" in refused.stderr
    later = (dt.datetime.now(dt.UTC) + dt.timedelta(hours=24, minutes=1)).isoformat()
    done = cli("keys", "retire", "1", "--product", PRODUCT, "--now", later, "--json")
    assert done.exit_code == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["retired"] and report["refused"] == []
    listed = json.loads(cli("keys", "list", "--product", PRODUCT, "--json").stdout)["versions"]
    assert listed[0]["state"] == "disabled" and listed[0]["retain_until"] == report["retain_until"]
    table = cli("keys", "list", "--product", PRODUCT).stdout
    assert "retain until" in table and "retired" in table
    assert runtime.audit is not None
    (event,) = runtime.audit.events(types=[audit.MEK_VERSION_RETIRED])
    assert event.data["clockOverride"] is True


def test_the_gate_alone_changes_nothing_and_agrees_with_retire(
    runtime: ProductRuntime, clock: FakeClock
) -> None:
    """``retire_gate`` (what the console asks) gives retire's checks and disables nothing;
    DEKs left are counted; ``sample=0`` decrypts nothing and says so."""
    seed(runtime, 6)
    create_version(runtime)
    ledger, lifecycle = open_run_ledger(runtime.database), open_lifecycle_store(runtime.database)
    gate = retire_gate(runtime, ledger, lifecycle, "1", clock=clock.time, sample=0)
    assert gate.deks_left == 6 and not gate.retired
    assert gate.checks[1].ok and gate.checks[1].detail == "not sampled (sample size 0)"
    assert run(runtime, clock).status == "completed"
    clock.advance(25 * HOUR)
    events = len(runtime.audit.events()) if runtime.audit else 0
    gate = retire_gate(runtime, ledger, lifecycle, "1", clock=clock.time)
    assert gate.refusals == () and gate.deks_left == 0 and not gate.retired
    assert version_rows(runtime, lifecycle)[0]["state"] == "enabled"
    assert (len(runtime.audit.events()) if runtime.audit else 0) == events
    report = _retire(runtime, clock)
    assert report.retired and report.checks == gate.checks
