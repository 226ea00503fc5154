"""``--metrics-textfile``: migrate and rotate publish what the alerts and dashboard read."""

from __future__ import annotations

from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from field_encrypt.cli.exit_codes import ExitCode
from field_encrypt.config import load_settings
from tests.cli.helpers import PRODUCT, cli
from tests.support.sample_product import product
from tests.support.seed import seed


def samples(path: Path) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample in a textfile, by name and labels."""
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(path.read_text())
        for s in family.samples
    }


def test_rotate_publishes_its_stage_due_times_and_dek_counts(
    env: dict[str, str], tmp_path: Path
) -> None:
    """A rotate call that rewraps and then waits for the soak leaves a textfile that says
    so: stage soak, the soak's end, items rewrapped, DEKs per version."""
    runtime = product.open(load_settings(env))
    seed(runtime, 12)
    runtime.close()
    assert cli("backup", "--product", PRODUCT, "--out", str(tmp_path / "b")).exit_code == 0
    textfile = tmp_path / "textfile" / "field_encrypt.prom"
    textfile.parent.mkdir()
    result = cli(
        "rotate", "--product", PRODUCT, "--max-age-days", "0", "--metrics-textfile", str(textfile)
    )
    assert result.exit_code == ExitCode.WAITING
    found = samples(textfile)
    p = ("product", "sample")
    assert found["field_encrypt_rotation_stage", frozenset({p, ("stage", "soak")})] == 1
    assert found["field_encrypt_rotation_stage", frozenset({p, ("stage", "idle")})] == 0
    assert found["field_encrypt_rotation_soak_until_timestamp_seconds", frozenset({p})] > 0
    assert found["field_encrypt_rotation_next_due_timestamp_seconds", frozenset({p})] == 0
    assert (
        found["field_encrypt_deks", frozenset({p, ("mek_version", "2"), ("current", "true")})] == 12
    )
    mode = frozenset({p, ("mode", "rewrap-deks")})
    assert found["field_encrypt_rotation_items_processed", mode] == 12
    assert found["field_encrypt_rotation_running", mode] == 0
    assert ("field_encrypt_rotation_last_run_timestamp_seconds", frozenset({p})) in found
    assert [f.name for f in textfile.parent.iterdir()] == [textfile.name]  # atomic: no temp left


def test_migrate_publishes_provider_calls_and_its_run(env: dict[str, str], tmp_path: Path) -> None:
    """A rewrap run's textfile counts its provider calls and its items by result."""
    runtime = product.open(load_settings(env))
    seed(runtime, 7)
    runtime.provider.create_version()
    runtime.close()
    textfile = tmp_path / "migrate.prom"
    result = cli(
        "migrate",
        "--product",
        PRODUCT,
        "--mode",
        "rewrap-deks",
        "--metrics-textfile",
        str(textfile),
    )
    assert result.exit_code == 0, result.output
    found = samples(textfile)
    calls = {
        dict(labels)["operation"]
        for name, labels in found
        if name == "field_encrypt_provider_calls_total"
    }
    assert "rewrap_many" in calls
    run = frozenset({("product", "sample"), ("mode", "rewrap-deks")})
    assert found["field_encrypt_rotation_items_processed", run] == 7
    assert found["field_encrypt_rotation_runs_total", run | {("status", "completed")}] >= 1
