"""OpenTelemetry spans of a scheduled rotation: stages, the run, store batches, provider calls."""

from __future__ import annotations

import base64
from pathlib import Path

from opentelemetry.sdk.trace import ReadableSpan

from field_encrypt.backends.sqlite.ledger import SqliteRunLedger
from field_encrypt.backends.sqlite.lifecycle import SqliteLifecycleStore
from field_encrypt.products import ProductRuntime
from field_encrypt.rotation import (
    Policy,
    advance,
    backup,
)
from tests.support.seed import seed
from tests.support.tracing import traced


def attributes(spans: list[ReadableSpan]) -> list[tuple[str, object]]:
    return [(k, v) for s in spans for k, v in (s.attributes or {}).items()]


def test_a_scheduled_rotation_traces_its_stages_run_store_batches_and_provider_calls(
    runtime: ProductRuntime, tmp_path: Path
) -> None:
    """advance() makes a span per stage; the rewrap stage holds the run, its dek_store scans
    and compare-and-swap writes, and the provider's batch rewrap; DEKs and MEKs never
    appear in any attribute."""
    seed(runtime, 12)
    backup(runtime, SqliteRunLedger(runtime.database), tmp_path / "backup.jsonl")
    deks = [
        base64.b64encode(r.wrapped).decode()
        for r in runtime.dek_store.scan(cursor=None, limit=100).records
    ]
    with traced() as spans:
        result = advance(
            runtime,
            SqliteRunLedger(runtime.database),
            SqliteLifecycleStore(runtime.database),
            Policy(max_age_days=0, batch_size=5),
        )
    assert result.outcome == "waiting"
    names = [s.name for s in spans]
    stages = [
        s.attributes["field_encrypt.stage"]
        for s in spans
        if s.name == "field_encrypt.rotation.stage" and s.attributes is not None
    ]
    assert stages[:4] == ["idle", "preflight", "create", "rewrap"]
    run = next(s for s in spans if s.name == "field_encrypt.rotation.run")
    rewrap_stage = next(
        s
        for s in spans
        if s.name == "field_encrypt.rotation.stage"
        and s.attributes is not None
        and s.attributes["field_encrypt.stage"] == "rewrap"
    )
    assert run.parent is not None and run.parent.span_id == rewrap_stage.context.span_id
    assert names.count("field_encrypt.store.replace_wraps") == 3  # 12 DEKs, batches of 5
    scans = [s for s in spans if s.name == "field_encrypt.store.scan"]
    assert sum(int(s.attributes["field_encrypt.items"]) for s in scans if s.attributes) == 12
    assert "field_encrypt.provider.rewrap_many" in names
    (root,) = [s for s in spans if s.parent is None]  # one trace per rotate invocation
    assert root.name == "field_encrypt.rotation.advance"
    assert root.attributes is not None and root.attributes["field_encrypt.outcome"] == "waiting"
    assert all(s.context.trace_id == root.context.trace_id for s in spans)
    values = " ".join(str(v) for _k, v in attributes(spans))
    for dek in deks:
        assert dek[:16] not in values


def test_the_clis_json_log_lines_carry_the_runs_trace_id(env: dict[str, str]) -> None:
    """With tracing on, each batch line ``migrate --json`` logs names the run span's trace."""
    import json

    from field_encrypt.config import load_settings
    from tests.cli.helpers import PRODUCT, cli
    from tests.support.sample_product import product

    opened = product.open(load_settings(env))
    seed(opened, 6)
    opened.provider.create_version()
    opened.close()
    with traced() as spans:
        result = cli(
            "migrate", "--product", PRODUCT, "--mode", "rewrap-deks", "--batch-size", "3", "--json"
        )
    assert result.exit_code == 0, result.output
    run = next(s for s in spans if s.name == "field_encrypt.rotation.run")
    lines = [json.loads(line) for line in result.stderr.splitlines() if line.startswith("{")]
    batches = [line for line in lines if line.get("event") == "batch"]
    assert batches and {line["trace_id"] for line in batches} == {f"{run.context.trace_id:032x}"}
