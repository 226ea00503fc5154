"""``field-encrypt oncall``: check for a stalled rotation, and send a test notice."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Annotated

import typer

from field_encrypt.cli import output
from field_encrypt.cli.common import JsonOpt, NowOpt, ProductOpt, clock_from, guarded, opened
from field_encrypt.cli.exit_codes import ExitCode
from field_encrypt.errors import ConfigurationError

if TYPE_CHECKING:
    from field_encrypt.oncall import OnCallNotifier
    from field_encrypt.products import ProductRuntime

oncall_app = typer.Typer(
    help="On-call notifications (FIELD_ENCRYPT_ONCALL_WEBHOOK): stall check, test notice.",
    no_args_is_help=True,
    rich_markup_mode=None,
)


def _notifier(runtime: ProductRuntime) -> OnCallNotifier:
    from field_encrypt.oncall import notifier_from_settings

    found = notifier_from_settings(runtime.settings.oncall_webhook, runtime.settings.oncall_format)
    if found is None:
        raise ConfigurationError(
            "FIELD_ENCRYPT_ONCALL_WEBHOOK is not set: set it to the on-call channel's webhook URL"
        )
    return found


@oncall_app.command("check")
@guarded
def oncall_check(
    product: ProductOpt,
    stall_minutes: Annotated[
        float,
        typer.Option(
            "--stall-minutes",
            min=1,
            help="A rotation stage (other than idle and the soak) with no progress for this "
            "long is stalled.",
        ),
    ] = 120.0,
    json_: JsonOpt = False,
    now: NowOpt = None,
) -> None:
    """Notify on-call if the scheduled rotation has stalled; exit 5 when it has."""
    from field_encrypt.oncall import stall_notice
    from field_encrypt.rotation import open_ledger, open_lifecycle

    clock, _ = clock_from(now)
    with opened(product) as rt:
        notifier = _notifier(rt)
        state = open_lifecycle(rt).state(rt.encryptor.product)
        activity = None
        if state.stage == "rewrap" and state.rewrap_run_id:
            run = open_ledger(rt).get_run(state.rewrap_run_id)
            beats = [s.heartbeat_at for s in run.shards if s.heartbeat_at is not None]
            activity = max(beats) if beats else None
        notice = stall_notice(
            product=rt.encryptor.product,
            stage=state.stage,
            since=state.stage_at,
            last_activity=activity,
            threshold_minutes=stall_minutes,
            now=clock,
        )
        if notice is not None:
            notifier.send(notice)
    if json_:
        output.emit_json(
            {
                "product": product,
                "stage": state.stage,
                "stalled": notice is not None,
                "notified": notifier.name if notice is not None else None,
                "summary": notice.summary if notice is not None else None,
            }
        )
    elif notice is None:
        output.stdout().print(f"not stalled: stage {state.stage}")
    if notice is not None:
        output.fail_line(f"{notice.summary} (on-call notified at {notifier.name})")
        raise typer.Exit(ExitCode.NOT_VERIFIED)


@oncall_app.command("test")
@guarded
def oncall_test(product: ProductOpt) -> None:
    """Send a test notice now (rotation.started, marked as a test); exit 7 if not taken."""
    from field_encrypt.oncall import Notice

    with opened(product) as rt:
        notifier = _notifier(rt)
        notifier.send(
            Notice(
                kind="rotation.started",
                product=rt.encryptor.product,
                summary="test notice from `field-encrypt oncall test` (no rotation started)",
                fields={"stage": "test"},
            )
        )
    output.stdout().print(
        f"sent a test notice to {notifier.name} ({notifier.form}) at {time.strftime('%H:%M:%S')}"
    )
