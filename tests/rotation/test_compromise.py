"""Compromise mode end to end: record, stop new wraps, rewrap, re-encrypt exposed DEKs, retire."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

from field_encrypt import audit
from field_encrypt.backends.registry import open_lifecycle_store, open_run_ledger
from field_encrypt.cli.exit_codes import ExitCode
from field_encrypt.products import ProductRuntime
from field_encrypt.rotation import CompromiseReport, respond_to_compromise, verify
from field_encrypt.testing import FakeClock
from tests.cli.helpers import PRODUCT, cli
from tests.rotation.helpers import run
from tests.support.fixtures import on_every_store
from tests.support.raw import age_deks
from tests.support.seed import document, read_all, seed

pytestmark = on_every_store


def _respond(runtime: ProductRuntime, version: str, **kwargs: object) -> CompromiseReport:
    return respond_to_compromise(
        runtime,
        open_run_ledger(runtime.database),
        open_lifecycle_store(runtime.database),
        version,
        **kwargs,  # type: ignore[arg-type]
    )


def _dek_ids(runtime: ProductRuntime) -> dict[str, str | None]:
    return {d.id: d.dek_id for d in runtime.documents["records"].scan().documents}


def test_the_current_version_compromised(runtime: ProductRuntime) -> None:
    """A new version is made, the DEKs are rewrapped (same DEKs), the old version retired at once."""
    seed(runtime, 20)
    before = _dek_ids(runtime)
    report = _respond(runtime, "1")
    assert report.stopped_at is None and report.created_version == "2"
    assert report.rewrap is not None and report.rewrap.counters.changed == 20
    assert report.retire is not None and report.retire.retired and report.reencrypt is None
    assert [(v.version, v.enabled, v.current) for v in runtime.provider.versions()] == [
        ("1", False, False),
        ("2", True, True),
    ]
    assert _dek_ids(runtime) == before
    assert read_all(runtime) == {f"doc-{i}": document(i) for i in range(20)}
    note = open_lifecycle_store(runtime.database).note("sample", "1")
    assert note.compromised and not note.dek_exposed and note.retired_at is not None
    assert runtime.audit is not None
    (event,) = runtime.audit.events(types=[audit.MEK_VERSION_COMPROMISED])
    assert event.data["wasCurrent"] is True and event.data["deksWrapped"] == 20
    assert event.data["dekExposed"] is False
    again = _respond(runtime, "1")
    assert not again.recorded_now and again.created_version is None
    assert again.retire is not None and again.retire.already_retired
    assert len(runtime.audit.events(types=[audit.MEK_VERSION_COMPROMISED])) == 1


def test_dek_exposed_gives_every_affected_document_a_fresh_dek(runtime: ProductRuntime) -> None:
    """--dek-exposed: rewrap first, then re-encrypt; old DEKs are deleted; a re-run changes nothing."""
    seed(runtime, 20)
    before = _dek_ids(runtime)
    report = _respond(runtime, "1", dek_exposed=True, batch_size=6)
    assert report.stopped_at is None
    assert report.reencrypt is not None and report.reencrypt.counters.changed == 20
    after = _dek_ids(runtime)
    assert not set(before.values()) & set(after.values())
    assert runtime.dek_store.get_many([d for d in before.values() if d]) == {}
    assert runtime.dek_store.count_by_version() == {"2": 20}
    assert read_all(runtime) == {f"doc-{i}": document(i) for i in range(20)}
    assert verify(runtime, mek_version="2", sample=20).clean
    assert runtime.audit is not None
    pages = runtime.audit.events(types=[audit.DOCUMENT_REENCRYPTED])
    exposed = {d["previousDekId"] for p in pages for d in p.data["documents"]}
    assert exposed == set(before.values())
    again = _respond(runtime, "1", dek_exposed=True)
    assert again.reencrypt is not None and again.reencrypt.counters.changed == 0
    assert _dek_ids(runtime) == after


def test_an_old_retired_version_found_compromised_later(
    runtime: ProductRuntime, env: dict[str, str], tmp_path: Path
) -> None:
    """Version 1 long retired; its DEKs exposed (an old backup): only DEKs it ever wrapped change."""
    seed(runtime, 10)
    age_deks(runtime, dt.datetime.now(dt.UTC) - dt.timedelta(days=10))
    runtime.provider.create_version()
    keyring = Path(env["FIELD_ENCRYPT_KEYRING"])
    data = json.loads(keyring.read_text())
    five_days = dt.datetime.now(dt.UTC) - dt.timedelta(days=5)
    data["versions"][1]["created_at"] = five_days.isoformat()
    keyring.write_text(json.dumps(data))
    runtime.provider._load()  # type: ignore[attr-defined]
    assert run(runtime, FakeClock()).counters.changed == 10
    runtime.provider.set_enabled("1", False)
    seed(runtime, 5, start=10)  # created now, under version 2, long after version 1 was current
    before = _dek_ids(runtime)
    report = _respond(runtime, "1", dek_exposed=True)
    assert report.stopped_at is None
    assert report.rewrap is not None and report.rewrap.counters.matched == 0
    after = _dek_ids(runtime)
    changed = {doc for doc in before if before[doc] != after[doc]}
    assert changed == {f"doc-{i}" for i in range(10)}
    assert read_all(runtime) == {f"doc-{i}": document(i) for i in range(15)}


def test_cli_compromised_then_no_migration_onto_it(
    env: dict[str, str], runtime: ProductRuntime
) -> None:
    """keys compromised exits 0 and keys list says so; migrating onto that version is refused."""
    seed(runtime, 6)
    result = cli("keys", "compromised", "1", "--product", PRODUCT, "--dek-exposed", "--json")
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["created_version"] == "2" and report["stopped_at"] is None
    assert report["re_encrypt"]["changed"] == 6 and report["retire"]["retired"]
    table = cli("keys", "list", "--product", PRODUCT).stdout
    assert "COMPROMISED" in table and "DEKs exposed" in table
    assert cli("keys", "enable", "1", "--product", PRODUCT).exit_code == 0
    refused = cli("migrate", "--product", PRODUCT, "--mode", "re-encrypt", "--new-mek-version", "1")
    assert refused.exit_code == ExitCode.REFUSED
    assert "recorded as compromised" in refused.stderr


def test_a_version_disabled_by_responders_is_rewrapped_once_enabled(
    env: dict[str, str], runtime: ProductRuntime
) -> None:
    """Disabled in the key service with DEKs still under it: refused (recorded), then finished."""
    seed(runtime, 4)
    runtime.provider.create_version()
    runtime.provider.set_enabled("1", False)
    refused = cli("keys", "compromised", "1", "--product", PRODUCT)
    assert refused.exit_code == ExitCode.REFUSED and "enable them" in refused.stderr
    assert open_lifecycle_store(runtime.database).note("sample", "1").compromised
    assert cli("keys", "enable", "1", "--product", PRODUCT).exit_code == 0
    done = cli("keys", "compromised", "1", "--product", PRODUCT)
    assert done.exit_code == 0, done.stderr
    assert runtime.dek_store.count_by_version() == {"2": 4}
    assert [(v.version, v.enabled) for v in runtime.provider.versions()] == [
        ("1", False),
        ("2", True),
    ]
