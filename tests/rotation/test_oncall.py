"""On-call notices reach a real webhook receiver: from the scheduled rotation, the compromise
response and the stall check; Slack-compatible and CloudEvents forms; no key material."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from field_encrypt import audit
from field_encrypt.backends.sqlite.ledger import SqliteRunLedger
from field_encrypt.backends.sqlite.lifecycle import SqliteLifecycleStore
from field_encrypt.config import load_settings
from field_encrypt.errors import ConfigurationError
from field_encrypt.oncall import Notice, OnCallNotifier, OnCallSink
from field_encrypt.products import ProductRuntime
from field_encrypt.rotation import Policy, advance, backup
from field_encrypt.rotation.compromise import respond_to_compromise
from field_encrypt.testing import FakeClock
from tests.cli.helpers import PRODUCT, cli
from tests.support.event_receiver import EventReceiver, Faults
from tests.support.sample_product import product
from tests.support.seed import seed

HOUR = 3600.0


@pytest.fixture
def receiver() -> Iterator[EventReceiver]:
    with EventReceiver().running() as found:
        yield found


def _open(env: dict[str, str], url: str, form: str = "slack") -> ProductRuntime:
    values = {**env, "FIELD_ENCRYPT_ONCALL_WEBHOOK": url, "FIELD_ENCRYPT_ONCALL_FORMAT": form}
    return product.open(load_settings(values))


def _flush(runtime: ProductRuntime) -> None:
    for sink in getattr(runtime.audit, "sinks", []):
        if isinstance(sink, OnCallSink):
            sink.notifier.flush(10)


def _texts(receiver: EventReceiver) -> list[str]:
    return [r.body["text"] for r in receiver.requests]


def _advance(runtime: ProductRuntime, clock: FakeClock) -> Any:
    return advance(
        runtime,
        SqliteRunLedger(runtime.database),
        SqliteLifecycleStore(runtime.database),
        Policy(max_age_days=0, batch_size=7),
        clock=clock.time,
        owner="me",
    )


def test_a_scheduled_rotation_tells_on_call_it_started_and_completed(
    env: dict[str, str], receiver: EventReceiver, tmp_path: Path
) -> None:
    """Slack form: one notice when the rotation leaves idle, one when version 1 is retired."""
    runtime = _open(env, receiver.url)
    clock = FakeClock(start=time.time())
    try:
        seed(runtime, 10)
        backup(runtime, SqliteRunLedger(runtime.database), tmp_path / "b.jsonl", clock=clock.time)
        _advance(runtime, clock)
        clock.advance(25 * HOUR)
        assert _advance(runtime, clock).outcome == "completed"
        _flush(runtime)
    finally:
        runtime.close()
    texts = _texts(receiver)
    assert len(texts) == 2, texts
    assert "[sample] MEK rotation started" in texts[0]
    assert "[sample] MEK rotation 1→2 completed" in texts[1]
    assert all(r.headers["content-type"] == "application/json" for r in receiver.requests)


def test_a_blocked_rotation_is_a_failure_notice(
    env: dict[str, str], receiver: EventReceiver
) -> None:
    """No backup: the rotation blocks at preflight, and on-call hears why."""
    runtime = _open(env, receiver.url)
    try:
        seed(runtime, 3)
        _advance(runtime, FakeClock(start=time.time()))
        _flush(runtime)
    finally:
        runtime.close()
    texts = _texts(receiver)
    assert any(":rotating_light: [sample] rotation" in t and "preflight" in t for t in texts), texts


def test_a_compromise_declaration_is_sent_as_a_cloudevent(
    env: dict[str, str], receiver: EventReceiver
) -> None:
    """CloudEvents form: structured mode, type io.field-encrypt.oncall.mek.compromised."""
    runtime = _open(env, receiver.url, form="cloudevents")
    try:
        seed(runtime, 4)
        respond_to_compromise(
            runtime,
            SqliteRunLedger(runtime.database),
            SqliteLifecycleStore(runtime.database),
            "1",
        )
        _flush(runtime)
    finally:
        runtime.close()
    compromised = [
        r for r in receiver.requests if r.body["type"] == "io.field-encrypt.oncall.mek.compromised"
    ]
    assert len(compromised) == 1
    first = compromised[0]
    assert first.headers["content-type"].startswith("application/cloudevents+json")
    assert first.body["specversion"] == "1.0" and first.body["source"] == "field-encrypt/sample"
    assert first.body["data"]["version"] == "1"


def test_retire_refusal_and_run_failure_events_become_notices(
    env: dict[str, str], receiver: EventReceiver
) -> None:
    """The events the engine emits for a refused retire gate and a failed run, through the trail."""
    runtime = _open(env, receiver.url)
    assert runtime.audit is not None
    try:
        runtime.audit.emit(
            audit.ROTATION_STAGE, subject="rotation",
            data={"stage": "retire", "fromVersion": "1", "toVersion": "2",
                  "blocked": "blocked at retire: sample-decrypt"},
        )  # fmt: skip
        runtime.audit.emit(
            audit.RUN_FAILED, subject="run/r1",
            data={"runId": "r1", "mode": "rewrap-deks", "reason": "StoreUnavailableError"},
        )  # fmt: skip
        runtime.audit.emit(audit.RUN_PROGRESS, subject="run/r1", data={"runId": "r1"})
        _flush(runtime)
    finally:
        runtime.close()
    texts = sorted(_texts(receiver))
    assert len(texts) == 2, texts
    assert any(":no_entry:" in t and "blocked at retire" in t for t in texts)
    assert any("rewrap-deks run r1 failed (StoreUnavailableError)" in t for t in texts)


def test_notices_never_carry_key_material(env: dict[str, str], receiver: EventReceiver) -> None:
    """Fields outside the allow-list are dropped; the keyring's keys appear in no request."""
    runtime = _open(env, receiver.url, form="cloudevents")
    try:
        seed(runtime, 2)
        respond_to_compromise(
            runtime,
            SqliteRunLedger(runtime.database),
            SqliteLifecycleStore(runtime.database),
            "1",
        )
        _flush(runtime)
    finally:
        runtime.close()
    keyring = json.loads(Path(env["FIELD_ENCRYPT_KEYRING"]).read_text())
    secrets = [v for v in _strings(keyring) if len(v) >= 32]
    assert secrets
    sent = json.dumps([r.body for r in receiver.requests])
    assert not any(s in sent for s in secrets)
    notice = Notice(
        kind="rotation.failed",
        product="p",
        summary="x",
        fields={"wrapped": "c2VjcmV0", "stage": "s"},
    )
    assert dict(notice.fields) == {"stage": "s"}
    with pytest.raises(ConfigurationError, match="bytes"):
        Notice(kind="rotation.failed", product="p", summary="x", fields={"reason": b"k"})


def _strings(value: object) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from _strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from _strings(v)


def test_a_stuck_webhook_never_blocks_or_fails_the_act(env: dict[str, str]) -> None:
    """A webhook that takes 3 s to answer: the event is stored at once (well under the 3 s),
    and nothing raises; a closed port fails nothing either."""
    with EventReceiver(faults=Faults(every_delay=3.0)).running() as slow:
        runtime = _open(env, slow.url)
        assert runtime.audit is not None
        try:
            began = time.perf_counter()
            runtime.audit.emit(
                audit.RUN_FAILED, subject="run/r", data={"runId": "r", "reason": "X"}
            )
            assert time.perf_counter() - began < 1.5
            _flush(runtime)
        finally:
            runtime.close()
    assert len(slow.requests) == 1
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    runtime = _open(env, f"http://127.0.0.1:{port}/hook")
    assert runtime.audit is not None
    try:
        runtime.audit.emit(audit.RUN_FAILED, subject="run/r", data={"runId": "r", "reason": "X"})
        _flush(runtime)
        assert runtime.audit.verify().events == 2
    finally:
        runtime.close()


def test_a_failing_webhook_is_retried_once(receiver: EventReceiver) -> None:
    """A 503 then a 200: the notice arrives (one retry)."""
    receiver.faults = Faults(fail=0.5, seed=3)
    notifier = OnCallNotifier(receiver.url)
    for i in range(6):
        notifier.notify(Notice(kind="rotation.started", product="p", summary=f"n{i}"))
    notifier.flush(10)
    assert receiver.counts.get("fail", 0) > 0
    assert len(receiver.requests) > 6


def test_oncall_check_notifies_a_stalled_rotation(
    env: dict[str, str], runtime: ProductRuntime, receiver: EventReceiver, monkeypatch: Any
) -> None:
    """Blocked at preflight: not stalled at first; 3 hours later, past a 60-minute threshold,
    exit 5 and on-call told."""
    monkeypatch.setenv("FIELD_ENCRYPT_ONCALL_WEBHOOK", receiver.url)
    seed(runtime, 3)
    blocked = cli("rotate", "--product", PRODUCT, "--max-age-days", "0")
    assert blocked.exit_code != 0  # no backup: blocked at preflight
    receiver.requests.clear()
    fresh = cli("oncall", "check", "--product", PRODUCT, "--stall-minutes", "60", "--json")
    assert fresh.exit_code == 0 and json.loads(fresh.stdout)["stalled"] is False
    later = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 3 * HOUR))
    stalled = cli("oncall", "check", "--product", PRODUCT, "--stall-minutes", "60", "--now", later)
    assert stalled.exit_code == 5
    assert "stalled" in stalled.output
    assert any("MEK rotation stalled" in r.body["text"] for r in receiver.requests)


def test_oncall_commands_name_a_missing_webhook(
    env: dict[str, str], runtime: ProductRuntime
) -> None:
    """Exit 3 naming FIELD_ENCRYPT_ONCALL_WEBHOOK."""
    result = cli("oncall", "test", "--product", PRODUCT)
    assert result.exit_code == 3 and "FIELD_ENCRYPT_ONCALL_WEBHOOK" in result.output
