"""``field-encrypt rotate``: the scheduled rotation, advanced as far as it safely can go.

A scheduler (cron, a CI schedule) calls it again and again; each call prints one line
saying where the rotation stands and exits with a code the scheduler can act on
(see docs/cli.md): 0 idle or advanced, 8 waiting for the soak, 9 halted by the stop
switch, and the usual failure codes when a stage is blocked.
"""

from __future__ import annotations

import contextlib
from contextlib import nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from field_encrypt import metrics
from field_encrypt.cli import output, publishing
from field_encrypt.cli.common import (
    JsonOpt,
    MaxRpsOpt,
    NowOpt,
    ProductOpt,
    clock_from,
    guarded,
    opened,
)
from field_encrypt.cli.exit_codes import ExitCode
from field_encrypt.cli.publishing import PushgatewayOpt, TextfileOpt
from field_encrypt.errors import ConfigurationError, FieldEncryptError

if TYPE_CHECKING:
    from field_encrypt.products import ProductRuntime
    from field_encrypt.rotation import Advance, Policy
    from field_encrypt.rotation.lifecycle import LifecycleStore

BLOCKED_EXIT = {
    "preflight": ExitCode.NOT_VERIFIED,
    "verify": ExitCode.NOT_VERIFIED,
    "rewrap-failed": ExitCode.ITEMS_FAILED,
    "rewrap-stopped": ExitCode.UNAVAILABLE,
    "retire-gate": ExitCode.REFUSED,
}


@guarded
def rotate_command(
    product: ProductOpt,
    policy_file: Annotated[
        Path | None,
        typer.Option(
            "--policy",
            help="A TOML or JSON policy file (flags override it).",
            exists=True,
            dir_okay=False,
            readable=True,
        ),
    ] = None,
    max_age_days: Annotated[
        float | None,
        typer.Option("--max-age-days", min=0, help="Start a rotation once the MEK is this old."),
    ] = None,
    soak_hours: Annotated[
        float | None,
        typer.Option("--soak-hours", min=0, help="Hours between the rewrap and retiring."),
    ] = None,
    retention_days: Annotated[
        float | None,
        typer.Option("--retention-days", min=0, help="Keep a retired version this long."),
    ] = None,
    max_rps: MaxRpsOpt = None,
    stop: Annotated[
        bool, typer.Option("--stop", help="Set the stop switch: halt advancing, and exit.")
    ] = False,
    resume: Annotated[
        bool, typer.Option("--resume", help="Clear the stop switch, then advance.")
    ] = False,
    status: Annotated[
        bool, typer.Option("--status", help="Show the stage and the policy; change nothing.")
    ] = False,
    metrics_pushgateway: PushgatewayOpt = None,
    metrics_textfile: TextfileOpt = None,
    json_: JsonOpt = False,
    now: NowOpt = None,
) -> None:
    """Run the runbook as a resumable state machine: preflight, create, rewrap, verify, soak, retire."""
    from field_encrypt.rotation import advance, load_policy, open_ledger, open_lifecycle, set_halted

    if sum((stop, resume, status)) > 1:
        raise ConfigurationError("--stop, --resume and --status exclude each other")
    policy = load_policy(
        policy_file,
        max_age_days=max_age_days,
        soak_hours=soak_hours,
        retention_days=retention_days,
        max_rps=max_rps,
    )
    clock, overridden = clock_from(now)
    if status:
        _status(product, policy, clock(), json_)
        return
    if stop:
        with opened(product) as rt:
            state = set_halted(rt, open_lifecycle(rt), True, clock=clock)
        output.stdout().print(
            f"{product}: halted at {state.stage} (rotate --resume clears the stop switch)"
        )
        return
    live = output.live_terminal(json_)
    observer: Any = output.ProgressObserver() if live else output.LogObserver()
    with opened(product, watch=True) as rt:  # a rotation runs for hours: it watches
        pub = publishing.publisher(
            rt, command="rotate", pushgateway=metrics_pushgateway, textfile=metrics_textfile
        )
        measured = metrics.RunMetrics(
            observer, product=rt.encryptor.product, mode="rewrap-deks", publish=pub.publish
        )
        lifecycle = open_lifecycle(rt)
        with publishing.published(pub), measured if live else nullcontext():
            ended = "failed"
            try:
                if resume:
                    set_halted(rt, lifecycle, False, clock=clock)
                result = advance(
                    rt,
                    open_ledger(rt),
                    lifecycle,
                    policy,
                    clock=clock,
                    observer=measured,
                    clock_override=overridden,
                )
                ended = result.rewrap.status if result.rewrap is not None else ended
            finally:
                if measured.started_run:
                    metrics.run_ended(rt.encryptor.product, "rewrap-deks", ended)
                if pub.active:  # metrics never stop (or hide why) a rotation
                    with contextlib.suppress(FieldEncryptError):
                        _record_state(rt, lifecycle, policy, clock())
    if json_:
        output.emit_json(result.as_dict())
    else:
        output.stdout().print(f"{product}: {result.summary}")
    _exit_for(result)


def _exit_for(result: Advance) -> None:
    if result.outcome in ("idle", "completed"):
        return
    if result.outcome == "waiting":
        raise typer.Exit(ExitCode.WAITING)
    if result.outcome == "halted":
        raise typer.Exit(ExitCode.HALTED)
    assert result.blocked_by is not None
    failed = [f"{c.name} ({c.detail})" for c in result.checks if not c.ok]
    output.fail_line(result.summary + (f": {'; '.join(failed)}" if failed else ""))
    raise typer.Exit(BLOCKED_EXIT[result.blocked_by])


def _record_state(
    rt: ProductRuntime, lifecycle: LifecycleStore, policy: Policy, now: float
) -> None:
    """Where the rotation stands, for the published metrics (one read of each)."""
    from field_encrypt.rotation.lifecycle import STAGES
    from field_encrypt.rotation.schedule import timing

    state = lifecycle.state(rt.encryptor.product)
    current = next(v for v in rt.provider.versions() if v.current)
    due = timing(state, policy, current.created_at.timestamp())
    metrics.record_rotation_state(
        rt.encryptor.product,
        stage=state.stage,
        stages=STAGES,
        blocked=state.blocked is not None,
        halted=state.halted or policy.stop,
        last_success=due.last_success,
        next_due=due.next_due,
        soak_until=due.soak_until,
        now=now,
    )


def _status(product: str, policy: Policy, now: float, json_: bool) -> None:
    from field_encrypt.rotation import open_lifecycle, schedule_status

    with opened(product) as rt:
        data = schedule_status(rt, open_lifecycle(rt), policy, now=now)
    if json_:
        output.emit_json(data)
        return
    output.stdout().print(
        output.table(
            f"Scheduled rotation of {product}",
            ["what", "value"],
            [(k.replace("_", " "), _readable(v)) for k, v in data.items() if k != "policy"]
            + [
                (f"policy: {k.replace('_', ' ')}", _readable(v))
                for k, v in policy.as_dict().items()
            ],
        )
    )


def _readable(value: object) -> str:
    """A table cell for a person: ``-`` for none, yes/no, and a record as ``key value, ...``."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, dict):
        return ", ".join(f"{k.replace('_', ' ')} {_readable(v)}" for k, v in value.items())
    return str(value)
