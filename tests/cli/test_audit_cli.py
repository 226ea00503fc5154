"""``audit verify`` proves the chain or names its first broken link; ``audit list`` filters."""

from __future__ import annotations

import datetime as dt
import json

import pytest

from field_encrypt.cli.exit_codes import ExitCode
from field_encrypt.products import ProductRuntime
from tests.cli.helpers import PRODUCT, cli
from tests.support.fixtures import on_every_store
from tests.support.raw import audit_event, delete_audit_event, put_audit_event
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


@on_every_store
def test_an_intact_trail_verifies(env: dict[str, str], runtime: ProductRuntime) -> None:
    """Exit 0 with the count and the head hash."""
    _events(runtime)
    result = cli("audit", "verify", "--product", PRODUCT, "--json")
    assert result.exit_code == 0
    report = json.loads(result.stdout)
    assert report["intact"] and report["events"] == 8
    assert report["head"] == json.loads(audit_event(runtime, 8))["hash"]


@on_every_store
@pytest.mark.parametrize("tamper", ["edit", "delete", "reorder", "rehash"])
def test_a_tampered_trail_fails_naming_the_first_broken_link(
    env: dict[str, str], runtime: ProductRuntime, tamper: str
) -> None:
    """Editing, deleting, swapping or re-hashing a stored event: exit 5, naming where."""
    _events(runtime)
    if tamper == "edit":
        text = audit_event(runtime, 4)
        forged = text.replace('"existed": true', '"existed": false')
        assert forged != text
        put_audit_event(runtime, 4, forged)
        broken = 4
    elif tamper == "delete":
        delete_audit_event(runtime, 5)
        broken = 6
    elif tamper == "reorder":
        e2, e3 = audit_event(runtime, 2), audit_event(runtime, 3)
        put_audit_event(runtime, 2, e3)
        put_audit_event(runtime, 3, e2)
        broken = 2
    else:
        from field_encrypt.audit import event_hash

        event = json.loads(audit_event(runtime, 1))
        event["data"]["version"] = "9"
        event["hash"] = event_hash(event)
        put_audit_event(runtime, 1, json.dumps(event))
        broken = 2
    result = cli("audit", "verify", "--product", PRODUCT)
    assert result.exit_code == ExitCode.NOT_VERIFIED
    assert f"BROKEN at event {broken}" in result.stderr
    as_json = json.loads(cli("audit", "verify", "--product", PRODUCT, "--json").stdout)
    assert (as_json["intact"], as_json["first_broken_seq"]) == (False, broken)


@on_every_store
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
