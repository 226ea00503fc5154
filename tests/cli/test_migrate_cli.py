"""field-encrypt migrate and friends, in-process: idempotence, dry runs, reports, secrecy."""

from __future__ import annotations

import base64
import json
import sqlite3
from pathlib import Path

from field_encrypt.products import ProductRuntime
from field_encrypt.providers.base import dek_context
from tests.cli.helpers import PRODUCT, cli, cli_process
from tests.support import sample_product
from tests.support.fixtures import on_every_store
from tests.support.seed import read_all, seed

COUNTING = "tests.support.sample_product:counting_product"


def _dump(db: str) -> list[object]:
    """Every row of every data table, for before/after comparisons."""
    conn = sqlite3.connect(db)
    try:
        tables = [
            t
            for (t,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
            if t != "field_encrypt_migrations"
        ]
        return [
            (t, conn.execute(f"SELECT * FROM {t} ORDER BY 1").fetchall()) for t in sorted(tables)
        ]
    finally:
        conn.close()


def test_rerun_after_completion_makes_no_provider_calls(
    env: dict[str, str], runtime: ProductRuntime
) -> None:
    """The second run skips every DEK without asking the provider for anything."""
    seed(runtime, 20)
    runtime.provider.create_version()
    args = ("migrate", "--product", COUNTING, "--mode", "rewrap-deks", "--new-mek-version", "2")
    assert cli(*args).exit_code == 0
    counted = sample_product.LAST_COUNTER[-1].calls
    assert (counted["unwrap"], counted["wrap"]) == (40, 20)  # unwrap, wrap, check
    result = cli(*args, "--json")
    assert result.exit_code == 0
    assert sample_product.LAST_COUNTER[-1].total == 0
    report = json.loads(result.stdout)
    assert (report["matched"], report["skipped"], report["rewrapped"]) == (0, 20, 0)


def test_dry_run_writes_nothing(env: dict[str, str], runtime: ProductRuntime) -> None:
    """A dry run reports counts per version, calls and time, and leaves every table as it was."""
    seed(runtime, 12)
    runtime.provider.create_version()
    keyring = Path(env["FIELD_ENCRYPT_KEYRING"]).read_bytes()
    before = _dump(env["FIELD_ENCRYPT_DATABASE"])
    result = cli(
        "migrate",
        "--product",
        PRODUCT,
        "--mode",
        "rewrap-deks",
        "--dry-run",
        "--max-rps",
        "6",
        "--json",
    )
    assert result.exit_code == 0
    data = json.loads(result.stdout)
    assert (data["matched"], data["skipped"], data["changed"]) == (12, 0, 0)  # not "matched": 0
    plan = data["dry_run"]
    assert plan == {
        "by_version": {"1": 12},
        "matched": 12,
        "skipped": 0,
        "provider_calls": 36,
        "estimated_seconds": 6.0,
    }
    assert _dump(env["FIELD_ENCRYPT_DATABASE"]) == before
    assert Path(env["FIELD_ENCRYPT_KEYRING"]).read_bytes() == keyring


def test_report_file_and_json_log_lines(
    env: dict[str, str], runtime: ProductRuntime, tmp_path: Path
) -> None:
    """--report writes the final report; off a terminal, progress is JSON lines on stderr."""
    seed(runtime, 30)
    runtime.provider.create_version()
    report_path = tmp_path / "report.json"
    result = cli(
        "migrate",
        "--product",
        PRODUCT,
        "--mode",
        "rewrap-deks",
        "--batch-size",
        "10",
        "--report",
        str(report_path),
    )
    assert result.exit_code == 0
    report = json.loads(report_path.read_text())
    assert report["status"] == "completed"
    assert (report["matched"], report["rewrapped"], report["failed"]) == (30, 30, 0)
    assert report["duration_seconds"] >= 0 and "rate_per_second" in report
    lines = [json.loads(line) for line in result.stderr.splitlines()]
    events = [line["event"] for line in lines]
    assert events[0] == "run_started" and events.count("batch") == 3
    assert report["worker"] == lines[0]["shard"] == "1/1"  # one numbering, 1-based
    assert events[-1] == "run_finished"
    assert "rewrapped" in result.stdout and "completed" in result.stdout


def test_no_key_material_in_any_output(
    env: dict[str, str], runtime: ProductRuntime, tmp_path: Path
) -> None:
    """No MEK or DEK, raw, hex or base64, appears in output, logs, reports or status."""
    seed(runtime, 8)
    runtime.provider.create_version()
    secrets: list[bytes] = []
    for version in json.loads(Path(env["FIELD_ENCRYPT_KEYRING"]).read_text())["versions"]:
        secrets.append(base64.b64decode(version["key"]))
    for record in runtime.dek_store.scan().records:
        secrets.append(
            runtime.provider.unwrap(
                record.wrapped,
                version=record.mek_version,
                context=dek_context("sample", record.dek_id),
            )
        )
    report = tmp_path / "r.json"
    outputs = []
    for args in (
        ("keys", "list"),
        ("preflight",),
        ("migrate", "--mode", "rewrap-deks", "--report", str(report)),
        ("migrate", "--mode", "re-encrypt", "--new-mek-version", "2", "--json"),
        ("verify", "--mek-version", "2", "--json"),
        ("status", "--json"),
        ("keys", "disable", "1"),
    ):
        result = cli(*args, "--product", PRODUCT)
        outputs += [result.stdout, result.stderr]
    outputs.append(report.read_text())
    text = "\n".join(outputs)
    assert "run_started" in text
    for secret in secrets:
        for form in (secret.hex(), base64.b64encode(secret).decode(), secret.decode("latin-1")):
            assert form not in text


def test_keys_commands(env: dict[str, str], runtime: ProductRuntime) -> None:
    """list shows DEKs per version; disable never deletes; enable brings a version back."""
    seed(runtime, 3)
    assert cli("keys", "create", "--product", PRODUCT).exit_code == 0
    assert cli("migrate", "--product", PRODUCT, "--mode", "rewrap-deks").exit_code == 0
    assert cli("keys", "disable", "1", "--product", PRODUCT).exit_code == 0
    listed = json.loads(cli("keys", "list", "--product", PRODUCT, "--json").stdout)["versions"]
    assert [(v["version"], v["state"], v["current"], v["deks"]) for v in listed] == [
        ("1", "disabled", False, 0),
        ("2", "enabled", True, 3),
    ]
    keyring = json.loads(Path(env["FIELD_ENCRYPT_KEYRING"]).read_text())
    assert [v["version"] for v in keyring["versions"]] == ["1", "2"]  # kept, not deleted
    assert cli("keys", "enable", "1", "--product", PRODUCT).exit_code == 0
    listed = json.loads(cli("keys", "list", "--product", PRODUCT, "--json").stdout)["versions"]
    assert listed[0]["state"] == "enabled"


def test_workers_split_a_run_and_status_sums_the_shards(
    env: dict[str, str], runtime: ProductRuntime
) -> None:
    """Two workers each take a shard; status shows one run whose counters add both up."""
    seed(runtime, 40)
    runtime.provider.create_version()
    base = ("migrate", "--product", PRODUCT, "--mode", "rewrap-deks", "--json")
    first = json.loads(cli(*base, "--worker", "1/2").stdout)
    assert first["status"] == "completed"  # nobody held shard 2, so worker 1 took it over too
    status = json.loads(cli("status", "--product", PRODUCT, "--json").stdout)
    (run,) = status["runs"]
    assert run["changed"] == 40 and [s["status"] for s in run["shards"]] == ["done", "done"]
    assert sum(s["changed"] for s in run["shards"]) == 40
    assert status["deks_by_version"] == {"2": 40}


def test_encrypt_migrate_takes_the_runbook_flags(
    env: dict[str, str], runtime: ProductRuntime
) -> None:
    """encrypt-migrate --product --mode --old-mek-version --new-mek-version works as documented."""
    seed(runtime, 5)
    runtime.provider.create_version()
    result = cli_process(
        "--product",
        PRODUCT,
        "--mode",
        "rewrap-deks",
        "--old-mek-version",
        "1",
        "--new-mek-version",
        "2",
        "--json",
        env=env,
        program="encrypt-migrate",
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["rewrapped"] == 5


def test_log_lines_keep_their_shape_without_loading_structlog(
    env: dict[str, str], runtime: ProductRuntime
) -> None:
    """Off a terminal, migrate writes one JSON object per line (the fields, then event,
    level and a UTC timestamp) and does not import structlog to do it (~0.1 s a run)."""
    seed(runtime, 5)
    runtime.provider.create_version()
    result = cli_process(
        "migrate",
        "--product",
        PRODUCT,
        "--mode",
        "rewrap-deks",
        env={**env, "PYTHONPROFILEIMPORTTIME": "1"},
    )
    assert result.returncode == 0, result.stderr
    imported = [line for line in result.stderr.splitlines() if line.startswith("import time:")]
    assert imported  # the interpreter reported its imports
    assert not [line for line in imported if line.split("|")[-1].strip() == "structlog"]
    lines = [json.loads(line) for line in result.stderr.splitlines() if line.startswith("{")]
    assert [line["event"] for line in lines] == ["run_started", "batch", "run_finished"]
    first = lines[0]
    assert list(first)[-3:] == ["event", "level", "timestamp"]
    assert first["level"] == "info" and first["timestamp"].endswith("Z")
    assert (first["to_version"], first["estimated_total"], first["resumed"]) == ("2", 5, False)


@on_every_store
def test_backup_and_restore_round_trip(
    env: dict[str, str], runtime: ProductRuntime, tmp_path: Path
) -> None:
    """Deleted DEKs come back from a backup; rows rewrapped since are kept, never overwritten."""
    seed(runtime, 10)
    backup_file = tmp_path / "deks.jsonl"
    assert cli("backup", "--product", PRODUCT, "--out", str(backup_file)).exit_code == 0
    assert backup_file.stat().st_mode & 0o777 == 0o600
    runtime.provider.create_version()
    assert cli("migrate", "--product", PRODUCT, "--mode", "rewrap-deks").exit_code == 0
    lost = runtime.dek_store.scan(limit=3).records
    for record in lost:
        runtime.dek_store.delete(record.dek_id)
    result = cli("restore", "--product", PRODUCT, "--in", str(backup_file), "--json")
    assert result.exit_code == 0
    assert json.loads(result.stdout) | {"kept_examples": []} == {
        "product": "sample",
        "rows": 10,
        "inserted": 3,
        "repaired": 0,
        "identical": 0,
        "kept": 7,
        "unreadable": 0,
        "kept_examples": [],
        "unreadable_examples": [],
    }
    assert runtime.dek_store.count_by_version() == {"1": 3, "2": 7}
    assert cli("verify", "--product", PRODUCT, "--mek-version", "1").exit_code == 5
    runtime.encryptor.cache.clear()
    assert len(read_all(runtime)) == 10  # the restored DEKs open their documents again


def test_restore_exits_4_while_a_dek_stays_unreadable(
    env: dict[str, str], runtime: ProductRuntime, tmp_path: Path
) -> None:
    """A wrap garbled before the backup was taken cannot be repaired from it: restore says
    so on stderr and exits 4 (it used to report such rows as identical and exit 0)."""
    from field_encrypt.rehearsal import corrupt

    seed(runtime, 4)
    (garbled,) = corrupt(runtime, 1)
    backup_file = tmp_path / "deks.jsonl"
    assert cli("backup", "--product", PRODUCT, "--out", str(backup_file)).exit_code == 0
    result = cli("restore", "--product", PRODUCT, "--in", str(backup_file))
    assert result.exit_code == 4, result.stdout + result.stderr
    assert "1 DEKs still do not unwrap" in result.stderr and garbled in result.stderr
    assert "Traceback" not in result.stderr


@on_every_store
def test_restore_refuses_a_damaged_or_foreign_backup(
    env: dict[str, str], runtime: ProductRuntime, tmp_path: Path
) -> None:
    """One edited byte, or another product's backup, is refused before anything is written."""
    seed(runtime, 4)
    backup_file = tmp_path / "deks.jsonl"
    assert cli("backup", "--product", PRODUCT, "--out", str(backup_file)).exit_code == 0
    lines = backup_file.read_text().splitlines(keepends=True)
    damaged = tmp_path / "damaged.jsonl"
    damaged.write_text(lines[0] + lines[1].replace('"1"', '"7"') + "".join(lines[2:]))
    for record in runtime.dek_store.scan().records:
        runtime.dek_store.delete(record.dek_id)
    result = cli("restore", "--product", PRODUCT, "--in", str(damaged))
    assert result.exit_code == 6
    assert "checksum mismatch" in result.stderr
    foreign = tmp_path / "foreign.jsonl"
    foreign.write_text(backup_file.read_text().replace('"product":"sample"', '"product":"other"'))
    assert cli("restore", "--product", PRODUCT, "--in", str(foreign)).exit_code == 6
    assert runtime.dek_store.count_by_version() == {}
