"""``audit verify`` proves the chain or names its first broken link; ``audit list`` filters."""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
from pathlib import Path

import pytest

from field_encrypt.cli.exit_codes import ExitCode
from field_encrypt.products import ProductRuntime
from tests.cli.helpers import PRODUCT, cli
from tests.support.seed import seed


def _events(runtime: ProductRuntime) -> None:
    """Eight events: a key created, a rewrap run (started, completed), three shreds..."""
    seed(runtime, 6)
    assert cli("keys", "create", "--product", PRODUCT).exit_code == 0
    assert cli("migrate", "--product", PRODUCT, "--mode", "rewrap-deks").exit_code == 0
    for record in runtime.dek_store.scan(limit=3).records:
        runtime.encryptor.shred(record.dek_id)
    assert cli("keys", "create", "--product", PRODUCT).exit_code == 0
    assert cli("keys", "disable", "1", "--product", PRODUCT).exit_code == 0


def _db(env: dict[str, str]) -> sqlite3.Connection:
    return sqlite3.connect(env["FIELD_ENCRYPT_DATABASE"], isolation_level=None)


def test_an_intact_trail_verifies(env: dict[str, str], runtime: ProductRuntime) -> None:
    """Exit 0 with the count and the head hash."""
    _events(runtime)
    result = cli("audit", "verify", "--product", PRODUCT, "--json")
    assert result.exit_code == 0
    report = json.loads(result.stdout)
    assert report["intact"] and report["events"] == 8
    assert (
        report["head"]
        == _db(env).execute("SELECT hash FROM actiontrail ORDER BY seq DESC LIMIT 1").fetchone()[0]
    )


@pytest.mark.parametrize("tamper", ["edit", "delete", "reorder", "rehash"])
def test_a_tampered_trail_fails_naming_the_first_broken_link(
    env: dict[str, str], runtime: ProductRuntime, tamper: str
) -> None:
    """Editing, deleting, swapping or re-hashing a stored event: exit 5, naming where."""
    _events(runtime)
    db = _db(env)
    if tamper == "edit":
        (text,) = db.execute("SELECT event FROM actiontrail WHERE seq = 4").fetchone()
        forged = text.replace('"existed": true', '"existed": false')
        assert forged != text
        db.execute("UPDATE actiontrail SET event = ? WHERE seq = 4", (forged,))
        broken = 4
    elif tamper == "delete":
        db.execute("DELETE FROM actiontrail WHERE seq = 5")
        broken = 6
    elif tamper == "reorder":
        rows = db.execute("SELECT seq, event, hash FROM actiontrail WHERE seq IN (2, 3)").fetchall()
        (s2, e2, h2), (s3, e3, h3) = rows
        db.execute("UPDATE actiontrail SET event = ?, hash = ? WHERE seq = ?", (e3, h3, s2))
        db.execute("UPDATE actiontrail SET event = ?, hash = ? WHERE seq = ?", (e2, h2, s3))
        broken = 2
    else:
        from field_encrypt.audit import event_hash

        (text,) = db.execute("SELECT event FROM actiontrail WHERE seq = 1").fetchone()
        event = json.loads(text)
        event["data"]["version"] = "9"
        event["hash"] = event_hash(event)
        db.execute(
            "UPDATE actiontrail SET event = ?, hash = ? WHERE seq = 1",
            (json.dumps(event), event["hash"]),
        )
        broken = 2
    result = cli("audit", "verify", "--product", PRODUCT)
    assert result.exit_code == ExitCode.NOT_VERIFIED
    assert f"BROKEN at event {broken}" in result.stderr
    as_json = json.loads(cli("audit", "verify", "--product", PRODUCT, "--json").stdout)
    assert (as_json["intact"], as_json["first_broken_seq"]) == (False, broken)


def test_list_filters_by_type_subject_time_and_limit(
    env: dict[str, str], runtime: ProductRuntime
) -> None:
    """--type (short or full), --subject, --since/--until and --limit, as CloudEvents JSON."""
    _events(runtime)

    def listed(*args: str) -> list[dict[str, object]]:
        result = cli("audit", "list", "--product", PRODUCT, "--json", *args)
        assert result.exit_code == 0, result.stderr
        return list(json.loads(result.stdout))

    everything = listed()
    assert len(everything) == 8 and all(e["specversion"] == "1.0" for e in everything)
    shreds = listed("--type", "dek.shredded")
    assert [e["type"] for e in shreds] == ["io.field-encrypt.dek.shredded"] * 3
    both = listed("--type", "io.field-encrypt.mek.version.created", "--type", "run.started")
    assert [str(e["type"]).rsplit(".", 2)[-2:] for e in both] == [
        ["version", "created"],
        ["run", "started"],
        ["version", "created"],
    ]
    subject = str(shreds[0]["subject"])
    assert [e["id"] for e in listed("--subject", subject)] == [shreds[0]["id"]]
    assert len(listed("--limit", "2")) == 2
    middle = str(everything[4]["time"])
    assert listed("--since", middle)[0]["id"] == everything[4]["id"]
    assert listed("--until", middle)[-1]["id"] == everything[3]["id"]
    future = (dt.datetime.now(dt.UTC) + dt.timedelta(days=1)).isoformat()
    assert listed("--since", future) == []
    table = cli("audit", "list", "--product", PRODUCT, "--type", "mek.version.disabled")
    assert "mek.version.disabled" in table.stdout and "mek/field-encrypt-mek/1" in table.stdout


def test_bad_times_are_usage_errors(env: dict[str, str], runtime: ProductRuntime) -> None:
    """A --since that is not a time exits 2."""
    result = cli("audit", "list", "--product", PRODUCT, "--since", "yesterday")
    assert result.exit_code == ExitCode.USAGE


def test_verify_and_list_on_postgres(
    postgres_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same commands read and check the trail in a PostgreSQL database."""
    import psycopg

    from field_encrypt.config import load_settings
    from tests.support.sample_product import product

    env = {
        "FIELD_ENCRYPT_KEY_PROVIDER": "local",
        "FIELD_ENCRYPT_KEYRING": str(tmp_path / "keyring.json"),
        "FIELD_ENCRYPT_DATABASE": postgres_url,
        "FIELD_ENCRYPT_ENABLED": "true",
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    runtime = product.open(load_settings(env))
    try:
        _events(runtime)
    finally:
        runtime.close()
    report = json.loads(cli("audit", "verify", "--product", PRODUCT, "--json").stdout)
    assert report["intact"] and report["events"] == 8
    listed = json.loads(cli("audit", "list", "--product", PRODUCT, "--json").stdout)
    assert report["head"] == listed[-1]["hash"]
    shreds = cli("audit", "list", "--product", PRODUCT, "--json", "--type", "dek.shredded")
    assert len(json.loads(shreds.stdout)) == 3
    with psycopg.connect(postgres_url, autocommit=True) as db:
        db.execute("DELETE FROM actiontrail WHERE seq = 5")
    result = cli("audit", "verify", "--product", PRODUCT)
    assert result.exit_code == ExitCode.NOT_VERIFIED
    assert "BROKEN at event 6" in result.stderr
