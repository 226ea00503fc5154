"""Every audit event type is emitted by the code path that should emit it, as a CloudEvent.

Nothing here calls ``emit``: the events come from the CLI's commands and the library's
own calls (a shred, a denied decryption), on the sample product, and the chain they form
verifies. No key material, in any encoding, appears in any event.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
from pathlib import Path

import pytest

from field_encrypt import audit
from field_encrypt.errors import KeyVersionDisabledError
from field_encrypt.products import ProductRuntime
from field_encrypt.providers.base import dek_context
from field_encrypt.testing import FakeClock
from tests.cli.helpers import PRODUCT, cli
from tests.rotation.helpers import faulty, run
from tests.support.seed import seed

CLOUDEVENT_ATTRIBUTES = {
    "specversion",
    "id",
    "type",
    "source",
    "subject",
    "time",
    "datacontenttype",
    "data",
    "prevhash",
    "hash",
}


def _keys(env: dict[str, str], runtime: ProductRuntime) -> list[bytes]:
    """Every MEK in the keyring and every DEK in the store, unwrapped."""
    secrets = [
        base64.b64decode(v["key"])
        for v in json.loads(Path(env["FIELD_ENCRYPT_KEYRING"]).read_text())["versions"]
    ]
    for record in runtime.dek_store.scan(limit=10_000).records:
        secrets.append(
            runtime.provider.unwrap(
                record.wrapped,
                version=record.mek_version,
                context=dek_context("sample", record.dek_id),
            )
        )
    return secrets


def test_every_event_type_comes_from_its_code_path(
    env: dict[str, str], runtime: ProductRuntime, tmp_path: Path
) -> None:
    """keys, migrate (every mode, a failure, a stop), shred, denial, retire, compromised, rotate."""
    assert runtime.audit is not None
    seed(runtime, 60)
    docs = runtime.documents["records"]
    secrets = _keys(env, runtime)

    assert cli("keys", "create", "--product", PRODUCT).exit_code == 0  # created

    # An operator disables version 1 in the key service too early: reads are denied.
    runtime.provider.set_enabled("1", False)
    first = docs.scan(limit=1).documents[0]
    runtime.encryptor.cache.clear()
    with pytest.raises(KeyVersionDisabledError):
        runtime.encryptor.decrypt_document("records", first.id, first.fields)  # denied
    assert cli("keys", "enable", "1", "--product", PRODUCT).exit_code == 0  # enabled

    unreachable = "tests.support.sample_product:unreachable_product"
    stopped = cli(
        "migrate", "--product", unreachable, "--mode", "rewrap-deks", "--retry-budget", "0"
    )
    assert stopped.exit_code == 7  # run.started, run.failed

    bad = runtime.dek_store.scan(limit=1).records[0]
    runtime.database.execute(
        "UPDATE dek_store SET wrapped = ? WHERE dek_id = ?", (b"\0" * 60, bad.dek_id)
    )
    rewrap = cli("migrate", "--product", PRODUCT, "--mode", "rewrap-deks", "--batch-size", "1")
    assert rewrap.exit_code == 4  # started, progress (60 batches), dek.rewrap.failed, completed
    runtime.database.execute(
        "UPDATE dek_store SET wrapped = ? WHERE dek_id = ?", (bad.wrapped, bad.dek_id)
    )
    reencrypt = cli("migrate", "--product", PRODUCT, "--mode", "re-encrypt")
    assert reencrypt.exit_code == 0  # document.reencrypted: the one DEK left on version 1

    seed(runtime, 3, start=60, encrypt=False)
    assert cli("migrate", "--product", PRODUCT, "--mode", "encrypt").exit_code == 0  # backfilled

    orphan = runtime.encryptor.create_dek()
    secrets += _keys(env, runtime)
    assert runtime.encryptor.shred(orphan)  # dek.shredded

    later = (dt.datetime.now(dt.UTC) + dt.timedelta(hours=25)).isoformat()
    retired = cli("keys", "retire", "1", "--product", PRODUCT, "--now", later)
    assert retired.exit_code == 0, retired.stderr  # disabled, retired

    compromised = cli("keys", "compromised", "2", "--product", PRODUCT)
    assert compromised.exit_code == 0, compromised.stderr  # compromised (+ created 3, retired 2)

    assert cli("backup", "--product", PRODUCT, "--out", str(tmp_path / "b.jsonl")).exit_code == 0
    rotated = cli("rotate", "--product", PRODUCT, "--max-age-days", "0")
    assert rotated.exit_code == 8, rotated.stdout + rotated.stderr  # rotation.stage; soaking

    events = runtime.audit.events()
    # The KEK tier's events: tests/rotation/test_key_tier.py (this product is direct); lazy
    # rewrap's: tests/reliability/test_lazy_rewrap.py (it is off here); the repair events
    # (restore, lease takeover, orphans): tests/rotation/test_restore.py and its neighbours.
    assert {e.type for e in events} == set(audit.EVENT_TYPES) - set(audit.KEK_EVENT_TYPES) - set(
        audit.LAZY_EVENT_TYPES
    ) - set(audit.RECOVERY_EVENT_TYPES)
    for event in events:
        ce = event.cloudevent()
        assert set(ce) == CLOUDEVENT_ATTRIBUTES
        assert ce["specversion"] == "1.0" and ce["datacontenttype"] == "application/json"
        assert ce["source"] == "field-encrypt/sample" and ce["subject"]
        dt.datetime.fromisoformat(ce["time"])
    assert runtime.audit.verify().intact
    assert cli("audit", "verify", "--product", PRODUCT).exit_code == 0

    text = json.dumps([e.cloudevent() for e in events])
    for secret in secrets:
        for form in (secret.hex(), base64.b64encode(secret).decode()):
            assert form not in text


def test_event_data_names_what_happened(env: dict[str, str], runtime: ProductRuntime) -> None:
    """A failed DEK is named with its error class only; a run's events carry its counts."""
    assert runtime.audit is not None
    seed(runtime, 4)
    cli("keys", "create", "--product", PRODUCT)
    bad = runtime.dek_store.scan(limit=1).records[0]
    runtime.database.execute(
        "UPDATE dek_store SET wrapped = ? WHERE dek_id = ?", (b"\0" * 60, bad.dek_id)
    )
    assert cli("migrate", "--product", PRODUCT, "--mode", "rewrap-deks").exit_code == 4
    (failed,) = runtime.audit.events(types=[audit.DEK_REWRAP_FAILED])
    assert failed.subject == f"dek/{bad.dek_id}"
    assert failed.data["dekId"] == bad.dek_id and failed.data["toVersion"] == "2"
    assert failed.data["reason"] in ("DecryptionError", "KeyProviderError")
    (created,) = runtime.audit.events(types=[audit.MEK_VERSION_CREATED])
    assert created.subject == "mek/field-encrypt-mek/2"
    assert created.data == {
        "mekName": "field-encrypt-mek",
        "version": "2",
        "previousVersion": "1",
        "via": "keys create",
    }
    (started,) = runtime.audit.events(types=[audit.RUN_STARTED])
    (completed,) = runtime.audit.events(types=[audit.RUN_COMPLETED])
    assert started.subject == completed.subject == f"run/{started.data['runId']}"
    assert started.data["estimatedTotal"] == 4 and started.data["mode"] == "rewrap-deks"
    assert (completed.data["changed"], completed.data["failed"]) == (3, 1)
    assert completed.data["status"] == "completed_with_failures"
    assert completed.data["remaining"] == 1


def test_reencrypt_pages_name_old_and_new_deks(
    env: dict[str, str], runtime: ProductRuntime
) -> None:
    """document.reencrypted lists each document with its new DEK and the one deleted."""
    assert runtime.audit is not None
    seed(runtime, 5)
    before = {d.id: d.dek_id for d in runtime.documents["records"].scan().documents}
    cli("keys", "create", "--product", PRODUCT)
    assert cli("migrate", "--product", PRODUCT, "--mode", "re-encrypt").exit_code == 0
    after = {d.id: d.dek_id for d in runtime.documents["records"].scan().documents}
    (page,) = runtime.audit.events(types=[audit.DOCUMENT_REENCRYPTED])
    assert page.data["count"] == 5 and page.data["collection"] == "records"
    assert {d["id"]: (d["previousDekId"], d["dekId"]) for d in page.data["documents"]} == {
        i: (before[i], after[i]) for i in before
    }
    assert runtime.audit.events(types=[audit.DEK_SHREDDED]) == []  # named in the page instead


def test_progress_is_per_minute_or_per_50_batches_never_per_dek(runtime: ProductRuntime) -> None:
    """A slow run records progress once a minute; a fast one once per 50 batches."""
    assert runtime.audit is not None
    seed(runtime, 12)
    runtime.provider.create_version()
    clock = FakeClock()
    slow = faulty(runtime, clock)
    slow.before_call(lambda _name: clock.advance(10.0))  # 3 calls per DEK: 30 s per batch of 1
    report = run(runtime, clock, batch_size=1)
    assert report.status == "completed"
    progress = runtime.audit.events(types=[audit.RUN_PROGRESS])
    # 12 batches, 30 s each: one event every second batch. Batch k is checkpointed after
    # batch k+1 was rewrapped (its write overlaps that crypto), when the clock has moved
    # 30 s more: the events say 1, 3, ... 11 (the run's end event has the totals).
    assert [e.data["changed"] for e in progress] == [1, 3, 5, 7, 9, 11]
