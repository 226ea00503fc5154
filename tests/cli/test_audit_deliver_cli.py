"""``audit deliver``, ``audit anchor`` and ``audit verify --against``, as an operator runs them."""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from field_encrypt import audit
from field_encrypt.cli.exit_codes import ExitCode
from field_encrypt.products import ProductRuntime
from tests import figures
from tests.cli.helpers import PRODUCT, ROOT, cli, cli_process
from tests.support.event_receiver import EventReceiver, Faults


def _fill(runtime: ProductRuntime, n: int) -> None:
    assert runtime.audit is not None
    for i in range(n):
        runtime.audit.emit(audit.RUN_PROGRESS, subject=f"run/{i}", data={"done": i})


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_deliver_once_sends_everything_then_nothing_more(
    env: dict[str, str], runtime: ProductRuntime
) -> None:
    """Exit 0 with a report; a second run finds nothing new to send."""
    _fill(runtime, 6)
    with EventReceiver(faults=Faults(fail=0.3)).running() as receiver:
        first = cli("audit", "deliver", "--product", PRODUCT, "--to", receiver.url, "--json")
        second = cli("audit", "deliver", "--product", PRODUCT, "--to", receiver.url, "--json")
    assert first.exit_code == 0, first.output
    report = json.loads(first.stdout)
    assert report["delivered"] == 6 and report["head"] == runtime.audit.events()[-1].hash  # type: ignore[union-attr]
    assert json.loads(second.stdout)["delivered"] == 0
    assert [e["id"] for e in receiver.settled()] == [e.id for e in runtime.audit.events()]  # type: ignore[union-attr]


def test_an_unreachable_destination_exits_7_naming_what_to_do(
    env: dict[str, str], runtime: ProductRuntime
) -> None:
    """A real process: one line on stderr, no traceback, the checkpoint untouched."""
    _fill(runtime, 2)
    url = f"http://127.0.0.1:{_closed_port()}/events"
    done = cli_process(
        "audit", "deliver", "--product", PRODUCT, "--to", url, "--max-attempts", "2", env=env
    )
    assert done.returncode == ExitCode.UNAVAILABLE, done.stderr
    assert "Traceback" not in done.stderr
    assert (
        "not delivered after 2 attempts" in done.stderr and "run the delivery again" in done.stderr
    )


def test_a_bad_url_is_a_configuration_error(env: dict[str, str]) -> None:
    """Exit 3 before anything is opened."""
    result = cli("audit", "deliver", "--product", PRODUCT, "--to", "mailto:x@example.org")
    assert result.exit_code == ExitCode.CONFIG
    assert "http:// or https://" in result.output


def test_kill_9_mid_delivery_then_a_rerun_finishes(
    env: dict[str, str], runtime: ProductRuntime
) -> None:
    """SIGKILL the CLI while it delivers; the re-run resumes from the checkpoint: every event
    arrives, and at most the one event in flight when it died arrives twice."""
    total = 40
    _fill(runtime, total)
    args = [sys.executable, "-m", "field_encrypt.cli", "audit", "deliver", "--product", PRODUCT]
    with EventReceiver(faults=Faults(every_delay=0.03)).running() as receiver:
        process = subprocess.Popen(
            [*args, "--to", receiver.url],
            cwd=ROOT,
            env={**os.environ, **env, "PYTHONPATH": str(ROOT)},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 60
        while len(receiver.requests) < 12 and time.monotonic() < deadline:
            time.sleep(0.01)
        os.kill(process.pid, signal.SIGKILL)
        process.wait(10)
        before = len(receiver.requests)
        assert 12 <= before < total
        rerun = cli_process(*args[3:], "--to", receiver.url, "--json", env=env)
    assert rerun.returncode == 0, rerun.stderr
    assert [e["id"] for e in receiver.settled()] == [e.id for e in runtime.audit.events()]  # type: ignore[union-attr]
    assert len(receiver.requests) - total <= 1
    assert json.loads(rerun.stdout)["delivered"] in (total - before, total - before + 1)
    figures.record(
        "audit delivery (kill -9)",
        events=total, requests_before_kill=before, requests=len(receiver.requests),
        resent=len(receiver.requests) - total,
    )  # fmt: skip


def _rewrite_from(db: sqlite3.Connection, seq: int) -> None:
    """Re-chain events ``seq``.. with forged data and valid hashes."""
    rows = db.execute("SELECT seq, event, hash FROM actiontrail ORDER BY seq").fetchall()
    previous = next((h for s, _, h in rows if s == seq - 1), audit.GENESIS)
    for s, text, _ in rows:
        if s < seq:
            continue
        body = json.loads(text)
        body["data"] = {"forged": True}
        body["prevhash"] = previous
        body["hash"] = audit.event_hash(body)
        db.execute(
            "UPDATE actiontrail SET event = ?, hash = ? WHERE seq = ?",
            (audit.stored_text(body), body["hash"], s),
        )
        previous = body["hash"]


def test_verify_against_an_anchor_catches_a_rewrite_and_a_cut_tail(
    env: dict[str, str], runtime: ProductRuntime, tmp_path: Path
) -> None:
    """The plain chain check passes after both attacks; --against the anchor exits 5 and says which."""
    _fill(runtime, 6)
    anchor = tmp_path / "anchor.json"
    signed = cli("audit", "anchor", "--product", PRODUCT, "--out", str(anchor))
    assert signed.exit_code == 0, signed.output
    assert "wrappedKey" in anchor.read_text() and "anchored event" in signed.stdout
    ok = cli("audit", "verify", "--product", PRODUCT, "--against", str(anchor), "--json")
    assert ok.exit_code == 0 and json.loads(ok.stdout)["intact"]

    db = sqlite3.connect(env["FIELD_ENCRYPT_DATABASE"], isolation_level=None)
    backup = db.execute("SELECT seq, event, hash FROM actiontrail").fetchall()
    _rewrite_from(db, 3)
    assert cli("audit", "verify", "--product", PRODUCT).exit_code == 0
    rewritten = cli("audit", "verify", "--product", PRODUCT, "--against", str(anchor))
    assert rewritten.exit_code == ExitCode.NOT_VERIFIED
    assert "rewritten" in rewritten.output

    for seq, text, hash in backup:
        db.execute("UPDATE actiontrail SET event = ?, hash = ? WHERE seq = ?", (text, hash, seq))
    db.execute("DELETE FROM actiontrail WHERE seq IN (5, 6)")
    assert cli("audit", "verify", "--product", PRODUCT).exit_code == 0
    cut = cli("audit", "verify", "--product", PRODUCT, "--against", str(anchor), "--json")
    assert cut.exit_code == ExitCode.NOT_VERIFIED
    assert "tail was cut" in json.loads(cut.stdout)["reason"]


def test_deliver_with_anchor_signs_the_delivered_head(
    env: dict[str, str], runtime: ProductRuntime, tmp_path: Path
) -> None:
    """--anchor FILE: after the pass, FILE holds the acknowledged head."""
    _fill(runtime, 3)
    anchor = tmp_path / "anchor.json"
    with EventReceiver().running() as receiver:
        result = cli(
            "audit", "deliver", "--product", PRODUCT, "--to", receiver.url,
            "--anchor", str(anchor), "--json",
        )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert json.loads(anchor.read_text())["head"] == json.loads(result.stdout)["head"]


def test_a_missing_or_foreign_anchor_is_a_configuration_error(
    env: dict[str, str], runtime: ProductRuntime, tmp_path: Path
) -> None:
    """Exit 3 naming the file, no traceback."""
    _fill(runtime, 1)
    missing = cli("audit", "verify", "--product", PRODUCT, "--against", str(tmp_path / "no"))
    assert missing.exit_code == ExitCode.CONFIG and "does not exist" in missing.output
    (tmp_path / "x.json").write_text("{}")
    foreign = cli("audit", "verify", "--product", PRODUCT, "--against", str(tmp_path / "x.json"))
    assert foreign.exit_code == ExitCode.CONFIG and "not an audit anchor" in foreign.output


def test_follow_delivers_new_events_until_sigterm(
    env: dict[str, str], runtime: ProductRuntime
) -> None:
    """--follow sends what is stored, then events emitted later; SIGTERM ends it with exit 0."""
    _fill(runtime, 3)
    args = [sys.executable, "-m", "field_encrypt.cli", "audit", "deliver", "--product", PRODUCT]
    with EventReceiver(faults=Faults(fail=0.2)).running() as receiver:
        process = subprocess.Popen(
            [*args, "--to", receiver.url, "--follow", "--interval", "0.1"],
            cwd=ROOT,
            env={**os.environ, **env, "PYTHONPATH": str(ROOT)},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            deadline = time.monotonic() + 60
            while len(receiver.settled()) < 3 and time.monotonic() < deadline:
                time.sleep(0.02)
            _fill(runtime, 2)
            while len(receiver.settled()) < 5 and time.monotonic() < deadline:
                time.sleep(0.02)
        finally:
            process.send_signal(signal.SIGTERM)
            _, stderr = process.communicate(timeout=20)
    assert process.returncode == 0, stderr
    assert "Traceback" not in stderr
    assert [e["id"] for e in receiver.settled()] == [e.id for e in runtime.audit.events()]  # type: ignore[union-attr]


def test_with_the_kek_tier_the_anchor_key_is_wrapped_by_the_mek(
    env: dict[str, str], tmp_path: Path, monkeypatch: Any
) -> None:
    """FIELD_ENCRYPT_KEY_LAYOUT=kek: the anchor names a MEK version, not a KEK (whose wrapped
    form lives in the database), and verifies."""
    from field_encrypt.backends.base import KEK_PREFIX
    from field_encrypt.config import load_settings
    from tests.support.sample_product import product

    monkeypatch.setenv("FIELD_ENCRYPT_KEY_LAYOUT", "kek")
    runtime = product.open(load_settings({**env, "FIELD_ENCRYPT_KEY_LAYOUT": "kek"}))
    try:
        assert runtime.kek_tier is not None
        runtime.encryptor.create_dek()
        _fill(runtime, 2)
    finally:
        runtime.close()
    anchor = tmp_path / "anchor.json"
    assert cli("audit", "anchor", "--product", PRODUCT, "--out", str(anchor)).exit_code == 0
    assert not json.loads(anchor.read_text())["mekVersion"].startswith(KEK_PREFIX)
    assert cli("audit", "verify", "--product", PRODUCT, "--against", str(anchor)).exit_code == 0


def test_a_chain_rewritten_after_delivery_exits_5_and_sends_nothing(
    env: dict[str, str], runtime: ProductRuntime
) -> None:
    """Delivered, then rewritten in the database with valid hashes, then a new event: the next
    delivery refuses it (exit 5) instead of sending a chain that does not follow on."""
    _fill(runtime, 3)
    with EventReceiver().running() as receiver:
        assert cli("audit", "deliver", "--product", PRODUCT, "--to", receiver.url).exit_code == 0
        _rewrite_from(sqlite3.connect(env["FIELD_ENCRYPT_DATABASE"], isolation_level=None), 2)
        _fill(runtime, 1)
        sent = len(receiver.requests)
        refused = cli("audit", "deliver", "--product", PRODUCT, "--to", receiver.url)
    assert refused.exit_code == ExitCode.NOT_VERIFIED
    assert "changed after delivery" in refused.output
    assert len(receiver.requests) == sent
