"""``field-encrypt keys``: MEK versions: list, create, disable, enable, retire, compromised;
and, with the KEK tier, shred-partition (crypto-shredding a partition's KEKs).

There is no command that deletes a MEK version, on purpose: a retired version is kept
disabled at least until its retention deadline (``keys list`` shows it), and deleting it
after that is a deliberate act in the key service itself.
"""

from __future__ import annotations

from contextlib import nullcontext
from typing import TYPE_CHECKING, Annotated, Any

import typer

from field_encrypt.cli import output
from field_encrypt.cli.common import (
    BatchSizeOpt,
    GateSampleOpt,
    JsonOpt,
    MaxRpsOpt,
    NowOpt,
    ProductOpt,
    clock_from,
    guarded,
    iso,
    opened,
)
from field_encrypt.cli.exit_codes import ExitCode
from field_encrypt.errors import ConfigurationError, RotationError

if TYPE_CHECKING:
    from field_encrypt.rotation import CompromiseReport, RetireReport

keys_app = typer.Typer(
    help="MEK versions: list, create, disable, enable, retire, compromised (none is ever deleted).",
    no_args_is_help=True,
    rich_markup_mode=None,  # plain help: rich's formatter costs ~0.15 s of start-up
)

VersionArg = Annotated[str, typer.Argument(help="The MEK version.")]
RetentionOpt = Annotated[
    float,
    typer.Option("--retention-days", min=0, help="Keep the version (disabled) at least this long."),
]


@keys_app.command("list")
@guarded
def keys_list(product: ProductOpt, json_: JsonOpt = False) -> None:
    """List MEK versions: state, created, DEKs each wraps, retention deadline, compromise."""
    from field_encrypt.rotation import open_lifecycle, version_rows

    with opened(product) as rt:
        rows = version_rows(rt, open_lifecycle(rt))
    if json_:
        output.emit_json({"product": product, "versions": rows})
        return
    output.stdout().print(
        output.table(
            f"MEK versions of {product}",
            ["version", "state", "current", "created", "DEKs", "retain until", "notes"],
            [
                (
                    r["version"],
                    r["state"],
                    "yes" if r["current"] else "",
                    iso(r["created_at"]),
                    r["deks"],
                    iso(r["retain_until"]),
                    _notes(r),
                )
                for r in rows
            ],
        )
    )


def _notes(row: dict[str, Any]) -> str:
    notes = []
    if row["retired_at"]:
        notes.append(f"retired {row['retired_at']}")
    if row["compromised_at"]:
        exposed = ", DEKs exposed" if row["dek_exposed"] else ""
        notes.append(f"COMPROMISED {row['compromised_at']}{exposed}")
    return "; ".join(notes)


@keys_app.command("create")
@guarded
def keys_create(product: ProductOpt, json_: JsonOpt = False) -> None:
    """Create a new MEK version; it becomes current (new DEKs are wrapped under it)."""
    from field_encrypt.rotation import create_version

    with opened(product) as rt:
        version = create_version(rt)
    if json_:
        output.emit_json({"version": version.version, "current": version.current})
    else:
        output.stdout().print(f"created MEK version {version.version} (now current)")


@keys_app.command("disable")
@guarded
def keys_disable(
    version: VersionArg,
    product: ProductOpt,
    retention_days: RetentionOpt = 30.0,
    force: Annotated[
        bool,
        typer.Option(
            "--force",
            help="Emergency: disable it even though DEKs still use it (their documents "
            "become unreadable until rewrapped or restored). Needs --reason; audited.",
        ),
    ] = False,
    reason: Annotated[
        str | None,
        typer.Option("--reason", help="Why (recorded in the audit trail); required with --force."),
    ] = None,
    json_: JsonOpt = False,
) -> None:
    """Disable a MEK version. Refused while any DEK is wrapped under it (unless --force);
    never deletes. Every running process stops serving it within a poll interval (1 s)."""
    from field_encrypt.rotation import disable_version, open_lifecycle

    if force and not (reason or "").strip():  # checked before anything is opened
        raise typer.BadParameter(
            "--force needs a reason: say why the version is disabled while DEKs still use "
            "it (it is recorded in the audit trail)",
            param_hint="--reason",
        )
    with opened(product) as rt:
        done = disable_version(
            rt,
            open_lifecycle(rt),
            version,
            retention_days=retention_days,
            force=force,
            reason=reason,
        )
    if json_:
        output.emit_json(
            {
                "version": version,
                "state": "disabled",
                "cache_evicted": done.cache_evicted,
                "retain_until": iso(done.retain_until),
                "forced": done.forced,
                "deks_unreadable": done.deks_wrapped,
            }
        )
    else:
        output.stdout().print(
            f"disabled MEK version {version} (kept, not deleted, at least until "
            f"{iso(done.retain_until)}: field-encrypt keys enable {version} brings it back)"
        )
        if done.forced:
            output.stdout().print(
                f"forced: {done.deks_wrapped} DEKs are still wrapped under it; their documents "
                f"are unreadable until field-encrypt keys enable {version} (then rewrap them: "
                "field-encrypt migrate --mode rewrap-deks) or a restore"
            )


@keys_app.command("enable")
@guarded
def keys_enable(version: VersionArg, product: ProductOpt, json_: JsonOpt = False) -> None:
    """Enable a MEK version again (for a rollback, or to restore old backups)."""
    from field_encrypt.rotation import enable_version, open_lifecycle

    with opened(product) as rt:
        enable_version(rt, open_lifecycle(rt), version)
    if json_:
        output.emit_json({"version": version, "state": "enabled"})
    else:
        output.stdout().print(f"enabled MEK version {version}")


@keys_app.command("retire")
@guarded
def keys_retire(
    version: VersionArg,
    product: ProductOpt,
    soak: Annotated[
        float,
        typer.Option("--soak", min=0, help="Hours since the rotation off it completed."),
    ] = 24.0,
    retention_days: RetentionOpt = 30.0,
    sample: GateSampleOpt = 100,
    json_: JsonOpt = False,
    now: NowOpt = None,
) -> None:
    """Disable an old version only if no DEK uses it, a sample reads without it, and it soaked."""
    from field_encrypt.rotation import open_ledger, open_lifecycle, retire

    clock, overridden = clock_from(now)
    with opened(product) as rt:
        report = retire(
            rt,
            open_ledger(rt),
            open_lifecycle(rt),
            version,
            soak_hours=soak,
            retention_days=retention_days,
            sample=sample,
            clock=clock,
            clock_override=overridden,
        )
    _print_retire(report, json_)
    if not report.retired:
        output.fail_line(
            f"refusing to retire version {version}: "
            + "; ".join(f"{c.name}: {c.detail}" for c in report.refusals)
        )
        raise typer.Exit(ExitCode.REFUSED)


def _print_retire(report: RetireReport, json_: bool) -> None:
    if json_:
        output.emit_json(report.as_dict())
        return
    console = output.stdout()
    if report.already_retired:
        console.print(
            f"version {report.version} is already retired (kept until {iso(report.retain_until)})"
        )
        return
    console.print(
        output.table(
            f"Retirement gate for version {report.version} of {report.product}",
            ["condition", "result", "detail"],
            [
                (c.name, "[green]pass[/]" if c.ok else "[red]FAIL[/]", c.detail)
                for c in report.checks
            ],
        )
    )
    if report.retired:
        console.print(
            f"retired MEK version {report.version}: disabled, kept (never deleted by "
            f"field-encrypt) at least until {iso(report.retain_until)}"
        )


@keys_app.command("compromised")
@guarded
def keys_compromised(
    version: VersionArg,
    product: ProductOpt,
    dek_exposed: Annotated[
        bool,
        typer.Option("--dek-exposed", help="The DEKs may be exposed too: re-encrypt them."),
    ] = False,
    max_rps: MaxRpsOpt = None,
    batch_size: BatchSizeOpt = 1000,
    sample: GateSampleOpt = 100,
    retention_days: RetentionOpt = 30.0,
    json_: JsonOpt = False,
) -> None:
    """Respond to a compromised version: record, stop wraps, rewrap, re-encrypt, retire."""
    from field_encrypt.rotation import open_ledger, open_lifecycle, respond_to_compromise

    live = output.live_terminal(json_)
    observer: Any = output.ProgressObserver() if live else output.LogObserver()
    with opened(product) as rt, observer if live else nullcontext():
        report = respond_to_compromise(
            rt,
            open_ledger(rt),
            open_lifecycle(rt),
            version,
            dek_exposed=dek_exposed,
            max_rps=max_rps,
            batch_size=batch_size,
            sample=sample,
            retention_days=retention_days,
            observer=observer,
        )
    if json_:
        output.emit_json(report.as_dict())
    else:
        _print_compromise(report)
    _exit_for_compromise(report)


def _print_compromise(report: CompromiseReport) -> None:
    console = output.stdout()
    console.print(
        f"version {report.version} recorded as compromised"
        + (" (DEKs exposed)" if report.dek_exposed else "")
        + ("" if report.recorded_now else " (already recorded)")
    )
    if report.created_version:
        console.print(f"created MEK version {report.created_version}: new wraps go there")
    for name, run in (("rewrap", report.rewrap), ("re-encrypt", report.reencrypt)):
        if run is not None:
            console.print(
                f"{name}: {run.status}, {run.counters.changed} changed, "
                f"{run.counters.failed} failed (run {run.run_id})"
            )
    if report.retire is not None:
        _print_retire(report.retire, False)


def _exit_for_compromise(report: CompromiseReport) -> None:
    stopped = report.stopped_at
    if stopped is None:
        return
    if stopped == "retire" and report.retire is not None:
        output.fail_line(
            f"version {report.version} not retired yet: "
            + "; ".join(f"{c.name}: {c.detail}" for c in report.retire.refusals)
        )
        raise typer.Exit(ExitCode.REFUSED)
    run = report.rewrap if stopped == "rewrap" else report.reencrypt
    assert run is not None
    if run.status == "stopped":
        output.fail_line(f"{stopped} stopped, cursor saved (run the same command again)")
        raise typer.Exit(ExitCode.UNAVAILABLE)
    output.fail_line(
        f"{run.failure_count} item(s) failed in the {stopped} run {run.run_id}; first: "
        + ", ".join(f"{f.item} ({f.reason})" for f in run.failures[:3])
    )
    raise typer.Exit(ExitCode.ITEMS_FAILED)


@keys_app.command("shred-partition")
@guarded
def keys_shred_partition(
    partition: Annotated[str, typer.Argument(help="The partition (e.g. a workspace id).")],
    product: ProductOpt,
    yes: Annotated[
        bool,
        typer.Option("--yes-destroy-data", help="Confirm: the partition's data is lost for good."),
    ] = False,
    json_: JsonOpt = False,
) -> None:
    """Crypto-shred a partition: delete its KEKs, so every DEK under them is unreadable."""
    from field_encrypt.key_epoch import announce_key_change

    with opened(product) as rt:
        tier = rt.kek_tier
        if tier is None:
            raise ConfigurationError(
                "the product has no KEK tier (FIELD_ENCRYPT_KEY_LAYOUT=kek): nothing to shred"
            )
        keks = [k for k in tier.keks.all() if k.partition == partition]
        raw = rt.dek_store.count_by_version()
        deks = sum(raw.get("kek:" + k.kek_id, 0) for k in keks)
        if not keks:
            raise ConfigurationError(f"partition {partition!r} has no KEK")
        if not yes:
            raise RotationError(
                f"refusing to shred partition {partition!r} ({len(keks)} KEKs, {deks} DEKs) "
                "without --yes-destroy-data: its documents become unreadable for good"
            )
        deleted = tier.shred_partition(partition, deks=deks)
        for k in keks:  # this process's cached DEKs of the partition go too
            rt.encryptor.cache.invalidate_version("kek:" + k.kek_id)
        # ...and every other process's, within its key-state poll interval
        announce_key_change(rt, ["kek:" + k.kek_id for k in keks], via="keys shred-partition")
    if json_:
        output.emit_json({"partition": partition, "keks_deleted": deleted, "deks_shredded": deks})
    else:
        output.stdout().print(
            f"shredded partition {partition!r}: {deleted} KEKs deleted, {deks} DEKs unreadable"
        )
