"""``field-encrypt``: the operator CLI for MEK rotation (see docs/cli.md for every flag)."""

from __future__ import annotations

import json
import time
from contextlib import nullcontext
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from field_encrypt import metrics
from field_encrypt.cli import output, publishing
from field_encrypt.cli.audit import audit_app
from field_encrypt.cli.common import (
    BatchSizeOpt,
    JsonOpt,
    MaxRpsOpt,
    ProductOpt,
    VersionOpt,
    guarded,
    opened,
    writable_output,
)
from field_encrypt.cli.common import iso as _iso
from field_encrypt.cli.console import command as console_command
from field_encrypt.cli.exit_codes import ExitCode
from field_encrypt.cli.index_keys import index_keys_app
from field_encrypt.cli.init import init_command
from field_encrypt.cli.keys import keys_app
from field_encrypt.cli.oncall import oncall_app
from field_encrypt.cli.publishing import PushgatewayOpt, TextfileOpt
from field_encrypt.cli.rotate import rotate_command
from field_encrypt.errors import RotationError

if TYPE_CHECKING:
    from field_encrypt.products import ProductRuntime
    from field_encrypt.rotation import RunReport

# The rotation engine, the product runtime and rich are imported inside the commands
# that use them: ``field-encrypt --help`` and ``status`` must start in well under a
# second (tests/cli/test_startup.py keeps the SDKs and SQLAlchemy out of ``--help``).

app = typer.Typer(
    name="field-encrypt",
    help="Rotate master keys (MEKs) and migrate field-encrypted documents, safely.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # plain help: rich's formatter costs ~0.15 s of start-up
)


@app.callback()
def _root(version: VersionOpt = False) -> None:
    """Rotate master keys (MEKs) and migrate field-encrypted documents, safely."""


app.add_typer(keys_app, name="keys")
app.add_typer(audit_app, name="audit")
app.add_typer(oncall_app, name="oncall")
app.add_typer(index_keys_app, name="index-keys")
app.command("rotate")(rotate_command)
app.command("init")(init_command)
app.command("console")(console_command)


class ModeChoice(StrEnum):
    rewrap_deks = "rewrap-deks"
    re_encrypt = "re-encrypt"
    encrypt = "encrypt"
    decrypt = "decrypt"
    to_kek = "to-kek"
    to_direct = "to-direct"
    rotate_kek = "rotate-kek"
    reindex = "reindex"


# -- checks -------------------------------------------------------------------------------


@app.command("preflight")
@guarded
def preflight_command(
    product: ProductOpt,
    new_mek_version: Annotated[
        str | None, typer.Option("--new-mek-version", help="Also check this target version.")
    ] = None,
    max_backup_age_hours: Annotated[
        float, typer.Option("--max-backup-age-hours", help="Oldest acceptable backup.")
    ] = 24.0,
    json_: JsonOpt = False,
) -> None:
    """Run the runbook's pre-flight checklist; exit 5 if any check fails."""
    from field_encrypt.rotation import open_ledger, preflight

    with opened(product) as rt:
        checks = preflight(
            rt,
            open_ledger(rt),
            target_version=new_mek_version,
            max_backup_age=max_backup_age_hours * 3600,
        )
    ok = all(c.ok for c in checks)
    if json_:
        output.emit_json({"product": product, "ok": ok, "checks": [c.as_dict() for c in checks]})
    else:
        output.stdout().print(
            output.table(
                f"Pre-flight for {product}",
                ["check", "result", "detail"],
                [(c.name, "[green]pass[/]" if c.ok else "[red]FAIL[/]", c.detail) for c in checks],
            )
        )
    if not ok:
        failed = [c.name for c in checks if not c.ok]
        output.fail_line(f"pre-flight failed: {', '.join(failed)}")
        raise typer.Exit(ExitCode.NOT_VERIFIED)


@app.command("verify")
@guarded
def verify_command(
    product: ProductOpt,
    mek_version: Annotated[
        str, typer.Option("--mek-version", help="Every DEK should be on this version.")
    ],
    sample: Annotated[
        int, typer.Option("--sample", min=0, help="Documents to decrypt end to end.")
    ] = 100,
    json_: JsonOpt = False,
) -> None:
    """Count DEKs off a version, decrypt a sample, find missing and unreferenced DEKs."""
    from field_encrypt.rotation import verify

    with opened(product) as rt:
        report = verify(rt, mek_version=mek_version, sample=sample)
    data = report.as_dict()
    if json_:
        output.emit_json(data)
    else:
        output.stdout().print(
            output.table(
                f"Verify {product} against MEK version {mek_version}",
                ["finding", "count", "examples"],
                [
                    ("DEKs not on version " + mek_version, report.not_on_version, ""),
                    (
                        f"sampled documents not decrypting (of {report.sampled})",
                        len(report.undecryptable),
                        ", ".join(report.undecryptable[:3]),
                    ),
                    (
                        "documents referring to a missing DEK",
                        report.missing_deks,
                        ", ".join(report.missing_examples[:3]),
                    ),
                    (
                        "DEKs no document refers to",
                        report.unreferenced_deks,
                        ", ".join(report.unreferenced_examples[:3]),
                    ),
                    *(  # reported, not part of the MEK check (docs/queryable.md)
                        (
                            f"index values of {name} off index-key version {report.index_version}",
                            n,
                            "",
                        )
                        for name, n in report.old_index_values.items()
                    ),
                ],
            )
        )
    if not report.clean:
        output.fail_line(
            f"verification gap: {report.not_on_version} DEKs off version {mek_version}, "
            f"{len(report.undecryptable)} undecryptable, {report.missing_deks} missing DEKs, "
            f"{report.unreferenced_deks} unreferenced DEKs"
        )
        raise typer.Exit(ExitCode.NOT_VERIFIED)
    if not json_:
        output.stdout().print(f"clean: every DEK is on version {mek_version}")


@app.command("status")
@guarded
def status_command(product: ProductOpt, json_: JsonOpt = False) -> None:
    """MEK versions, DEKs per version, and the latest migration runs with their shards."""
    from field_encrypt.rotation import open_ledger, run_rows
    from field_encrypt.usage import dek_counts, kek_usage

    with opened(product) as rt:
        ledger = open_ledger(rt)
        now = time.time()
        counts = dek_counts(rt)
        current = rt.provider.current_version()
        keks = kek_usage(rt)
        runs = run_rows(rt, ledger, now=now, limit=5)
    data: dict[str, Any] = {
        "product": product,
        "current_version": current,
        "deks_by_version": counts,
    }
    if rt.kek_tier is not None:
        data["layout"] = rt.settings.key_layout
        data["keks"] = keks
    if json_:
        output.emit_json({**data, "runs": runs})
        return
    lines = [  # plain text, not rich: ``status`` is what an operator runs to look (start-up)
        f"product {product}: current MEK version {current}; DEKs per version: "
        + (", ".join(f"{v}={n}" for v, n in sorted(counts.items())) or "none")
    ]
    if keks:
        lines.append(
            f"KEK tier ({data['layout']} layout): "
            + ", ".join(
                f"{k['kek_id'][:8]} partition={k['partition'] or '-'} on {k['mek_version']}"
                f"{' active' if k['active'] else ''} ({k['deks']} DEKs)"
                for k in keks
            )
        )
    lines.append(
        output.text_table(
            "Latest migration runs",
            ["run", "mode", "versions", "state", "done/est.", "changed", "failed", "started"],
            [
                (
                    r["run_id"],
                    r["mode"],
                    f"{r['from_version'] or '*'}→{r['to_version'] or '-'}",
                    r["state"],
                    f"{r['matched']}/{r['estimated_total']}",
                    r["changed"],
                    r["failed"],
                    _iso(r["started_at"]),
                )
                for r in runs
            ],
        )
    )
    print("\n".join(lines))


# -- migrate ------------------------------------------------------------------------------


def _worker(value: str | None) -> tuple[int, int]:
    if value is None:
        return (0, 1)
    index, sep, count = value.partition("/")
    try:
        i, n = int(index), int(count)
    except ValueError:
        raise typer.BadParameter("expected I/N, e.g. 1/4") from None
    if not sep or n < 1 or not 1 <= i <= n:
        raise typer.BadParameter("expected I/N with 1 <= I <= N")
    return (i - 1, n)


def _checked_worker(value: str | None) -> str | None:
    """``--worker`` checked while the flags are parsed, so its error names the flag."""
    _worker(value)
    return value


def migrate_command(
    product: ProductOpt,
    mode: Annotated[ModeChoice, typer.Option("--mode", help="What to do.")],
    old_mek_version: Annotated[
        str | None,
        typer.Option("--old-mek-version", help="Only items under this MEK version."),
    ] = None,
    new_mek_version: Annotated[
        str | None,
        typer.Option("--new-mek-version", help="Target MEK version (default: current)."),
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Show what would be done; write nothing.")
    ] = False,
    batch_size: BatchSizeOpt = 1000,
    concurrency: Annotated[
        int, typer.Option("--concurrency", min=1, help="Parallel calls to a remote provider.")
    ] = 8,
    max_rps: MaxRpsOpt = None,
    worker: Annotated[
        str | None,
        typer.Option(
            "--worker",
            help="Run as worker I of N (1-based), owning one shard.",
            callback=_checked_worker,
        ),
    ] = None,
    retry_budget: Annotated[
        float,
        typer.Option("--retry-budget", min=0, help="Seconds an operation may keep failing."),
    ] = 120.0,
    lease_ttl: Annotated[
        float, typer.Option("--lease-ttl", min=1, help="Seconds a dead worker's lease lasts.")
    ] = 60.0,
    report_file: Annotated[
        Path | None,
        typer.Option(
            "--report",
            help="Also write the final report as JSON here.",
            callback=writable_output,
        ),
    ] = None,
    verify_sample: Annotated[
        float,
        typer.Option(
            "--verify-sample",
            min=0.0,
            max=1.0,
            help="Remote providers: share of new wraps checked besides each batch's first "
            "(1.0: every DEK, two more calls each).",
        ),
    ] = 0.01,
    partition: Annotated[
        str, typer.Option("--partition", help="rotate-kek: the partition whose KEK is replaced.")
    ] = "",
    metrics_pushgateway: PushgatewayOpt = None,
    metrics_textfile: TextfileOpt = None,
    json_: JsonOpt = False,
    version: VersionOpt = False,
) -> None:
    """Rewrap DEKs, re-encrypt, backfill, decrypt or reindex documents, or move DEKs between
    key layouts and KEKs: resumable and idempotent."""
    from field_encrypt.rotation import MigrationOptions, RetryPolicy, migrate, open_ledger

    options = MigrationOptions(
        mode=mode.value,
        old_version=old_mek_version,
        new_version=new_mek_version,
        batch_size=batch_size,
        concurrency=concurrency,
        max_rps=max_rps,
        worker=_worker(worker),
        retry=RetryPolicy(budget=retry_budget),
        lease_ttl=lease_ttl,
        dry_run=dry_run,
        verify_sample=verify_sample,
        partition=partition,
    )
    live = output.live_terminal(json_)
    observer: Any = output.ProgressObserver() if live else output.LogObserver()
    with opened(product) as rt:
        if not dry_run:
            _refuse_compromised_target(rt, new_mek_version)
        ledger = open_ledger(rt) if not dry_run else _NoLedger()
        pub = publishing.publisher(
            rt,
            command=mode.value,
            worker=worker or "1/1",
            pushgateway=metrics_pushgateway,
            textfile=metrics_textfile,
        )
        measured = metrics.RunMetrics(
            observer, product=rt.encryptor.product, mode=mode.value, publish=pub.publish
        )
        status = "failed"
        with publishing.published(pub), measured if live else nullcontext():
            try:
                report = migrate(rt, ledger, options, observer=measured)
                status = report.status
            finally:
                if not dry_run:
                    metrics.run_ended(rt.encryptor.product, mode.value, status)
    data = report.as_dict()
    if report_file is not None:
        report_file.write_text(json.dumps(data, indent=2) + "\n")
    if json_:
        output.emit_json(data)
    else:
        _print_report(report)
    if not live:
        output.LogObserver().log.info("run_finished", **_log_fields(data))
    _exit_for(report)


def _refuse_compromised_target(runtime: ProductRuntime, version: str | None) -> None:
    """No migration wraps anything new under a version declared compromised."""
    from field_encrypt.rotation import open_lifecycle

    target = version or runtime.provider.current_version()
    if open_lifecycle(runtime).note(runtime.encryptor.product, target).compromised:
        raise RotationError(
            f"refusing to migrate onto MEK version {target}: it is recorded as compromised "
            "(field-encrypt keys list)"
        )


def _log_fields(data: dict[str, Any]) -> dict[str, Any]:
    keep = ("run_id", "mode", "status", "matched", "changed", "skipped", "failed", "remaining")
    return {k: data[k] for k in keep if k in data}


def _print_report(report: RunReport) -> None:
    console = output.stdout()
    if report.dry_run is not None:
        d = report.dry_run
        eta = f"{d.estimated_seconds:,.0f}s at --max-rps" if d.estimated_seconds else "unthrottled"
        console.print(
            output.table(
                f"Dry run: {report.mode} {report.from_version or '*'}→{report.to_version or '-'}",
                ["what", "value"],
                [
                    (
                        "index values per version"
                        if report.mode == "reindex"
                        else "DEKs per version",
                        ", ".join(f"{v}={n}" for v, n in d.by_version.items()),
                    ),
                    ("would migrate", d.matched),
                    ("would skip", d.skipped),
                    ("provider calls", d.provider_calls),
                    ("estimated time", eta),
                ],
            )
        )
        return
    c = report.counters
    document_modes = ("re-encrypt", "encrypt", "decrypt", "reindex")
    label = "changed" if report.mode in document_modes else "rewrapped"
    console.print(
        output.table(
            f"{report.mode} run {report.run_id}: {report.status}",
            ["matched", label, "skipped", "failed", "conflicts", "duration", "rate", "remaining"],
            [
                (
                    c.matched,
                    c.changed,
                    c.skipped,
                    c.failed,
                    c.conflicts,
                    f"{report.duration_seconds:.1f}s",
                    f"{report.rate:,.0f}/s",
                    "-" if report.remaining is None else report.remaining,
                )
            ],
        )
    )


def _exit_for(report: RunReport) -> None:
    if report.status == "stopped":
        output.fail_line(
            f"stopped, cursor saved (re-run the same command to continue): {report.stop_reason}"
        )
        raise typer.Exit(ExitCode.UNAVAILABLE)
    if report.failure_count:
        named = ", ".join(f"{f.item} ({f.reason})" for f in report.failures[:3])
        output.fail_line(
            f"{report.failure_count} item(s) failed in run {report.run_id}; first: {named}"
        )
        raise typer.Exit(ExitCode.ITEMS_FAILED)


class _NoLedger:
    """A dry run never touches the ledger; any call is a bug."""

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"dry run used the ledger ({name})")


app.command("migrate")(guarded(migrate_command))


# -- backup -------------------------------------------------------------------------------


@app.command("backup")
@guarded
def backup_command(
    product: ProductOpt,
    out: Annotated[
        Path,
        typer.Option(
            "--out", help="Where to write the JSON-lines backup.", callback=writable_output
        ),
    ],
    json_: JsonOpt = False,
) -> None:
    """Export the dek_store as JSON lines with a SHA-256 checksum (and record the time)."""
    from field_encrypt.rotation import backup, open_ledger

    with opened(product) as rt:
        record = backup(rt, open_ledger(rt), out)
    if json_:
        output.emit_json({"path": record.path, "count": record.count, "sha256": record.checksum})
    else:
        output.stdout().print(f"backed up {record.count} DEKs to {record.path}")


@app.command("restore")
@guarded
def restore_command(
    product: ProductOpt,
    in_file: Annotated[
        Path,
        typer.Option(
            "--in", help="A file written by backup.", exists=True, dir_okay=False, readable=True
        ),
    ],
    json_: JsonOpt = False,
) -> None:
    """Add the missing DEKs and repair rows that no longer unwrap; never changes a readable row."""
    from field_encrypt.rotation import restore

    with opened(product) as rt:
        report = restore(rt, in_file)
    if json_:
        output.emit_json(report.as_dict())
    else:
        output.stdout().print(
            f"restored {report.inserted} missing DEKs, repaired {report.repaired} that did not "
            f"unwrap; {report.identical} identical, {report.kept} kept as they are in the "
            "store (they unwrap: never overwritten)"
        )
    if report.unreadable:
        examples = ", ".join(report.unreadable_examples)
        output.stderr().print(
            f"error: {report.unreadable} DEKs still do not unwrap, from the store nor from the "
            f"backup (e.g. {examples}): check that their MEK version is enabled "
            "(`field-encrypt keys list`), or restore from an older backup"
        )
        raise typer.Exit(ExitCode.ITEMS_FAILED)


# -- collect-orphans ----------------------------------------------------------------------

_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def _duration(value: str) -> float:
    """``90``, ``90s``, ``30m``, ``1h``, ``2d``: seconds."""
    text = value.strip().lower()
    unit = _UNITS.get(text[-1:]) if text else None
    number = text[:-1] if unit is not None else text
    try:
        seconds = float(number) * (unit or 1.0)
    except ValueError:
        raise typer.BadParameter(f"{value!r} is not a duration (e.g. 90s, 30m, 1h, 2d)") from None
    if seconds < 0 or seconds != seconds:
        raise typer.BadParameter(f"{value!r}: a duration must not be negative")
    return seconds


def _checked_duration(value: str) -> str:
    _duration(value)  # a usage error naming --older-than, before anything is opened
    return value


@app.command("collect-orphans")
@guarded
def collect_orphans_command(
    product: ProductOpt,
    older_than: Annotated[
        str,
        typer.Option(
            "--older-than",
            metavar="DURATION",
            help="Grace period: DEKs created more recently are never touched (90s, 30m, 1h, 2d).",
            callback=_checked_duration,
        ),
    ] = "1h",
    delete: Annotated[
        bool,
        typer.Option("--delete", help="Delete the orphans found (without it: a dry run)."),
    ] = False,
    json_: JsonOpt = False,
) -> None:
    """Find DEKs no document refers to (a dry run), and with --delete, delete them."""
    from field_encrypt.rotation import collect_orphans, open_ledger

    grace = _duration(older_than)
    with opened(product) as rt:
        report = collect_orphans(rt, open_ledger(rt), older_than=grace, dry_run=not delete)
    if json_:
        output.emit_json(report.as_dict())
        return
    examples = f" (e.g. {', '.join(report.examples[:3])})" if report.examples else ""
    left = (
        f"; left: {report.too_new} newer than {older_than}, {report.pending} named by an "
        "unfinished run"
    )
    if delete:
        output.stdout().print(
            f"deleted {report.deleted} orphaned DEKs of {report.orphans} found{examples}{left}"
        )
    else:
        output.stdout().print(
            f"dry run: {report.orphans} orphaned DEKs older than {older_than} would be "
            f"deleted{examples}{left}; run again with --delete to delete them"
        )


# -- entry points -------------------------------------------------------------------------

encrypt_migrate_app = typer.Typer(
    name="encrypt-migrate",
    help="The runbook's cross-product migration command (same as field-encrypt migrate).",
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # plain help: rich's formatter costs ~0.15 s of start-up
)
encrypt_migrate_app.command()(guarded(migrate_command))
