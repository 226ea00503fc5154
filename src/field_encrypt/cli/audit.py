"""``field-encrypt audit``: prove the audit trail's chain intact, and list its events."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from field_encrypt.cli import output
from field_encrypt.cli.common import JsonOpt, ProductOpt, guarded, opened, parse_time
from field_encrypt.cli.exit_codes import ExitCode
from field_encrypt.errors import ConfigurationError

if TYPE_CHECKING:
    from field_encrypt.audit import AuditTrail
    from field_encrypt.products import ProductRuntime

audit_app = typer.Typer(
    help="The audit trail (actiontrail): verify its hash chain, list its events.",
    no_args_is_help=True,
    rich_markup_mode=None,  # plain help: rich's formatter costs ~0.15 s of start-up
)


def _trail(runtime: ProductRuntime) -> AuditTrail:
    if runtime.audit is None:
        raise ConfigurationError(
            f"product {runtime.encryptor.product!r} has no audit trail (its runtime sets none)"
        )
    return runtime.audit


@audit_app.command("verify")
@guarded
def audit_verify(
    product: ProductOpt,
    against: Annotated[
        Path | None,
        typer.Option(
            "--against",
            metavar="CHECKPOINT",
            help="Also check an anchor (from `audit anchor` or `audit deliver --anchor`): "
            "exit 5 if the trail was rewritten or cut since it was signed.",
        ),
    ] = None,
    json_: JsonOpt = False,
) -> None:
    """Walk the hash chain; exit 5 naming the first broken link if any event was altered."""
    if against is not None:
        from field_encrypt.cli.audit_deliver import verify_against

        verify_against(product, against, json_=json_)
        return
    from field_encrypt.audit_outbox import reconcile

    with opened(product) as rt:
        trail = _trail(rt)
        reconcile(rt)  # acts interrupted before their events: recorded (or dropped) first
        report = trail.verify()
    if json_:
        output.emit_json(
            {
                "product": product,
                "intact": report.intact,
                "events": report.events,
                "head": report.head,
                "first_broken_seq": report.first_broken_seq,
                "reason": report.reason,
            }
        )
    elif report.intact:
        output.stdout().print(f"intact: {report.events} events, chain head {report.head or '-'}")
    if not report.intact:
        output.fail_line(
            f"audit trail of {product} is BROKEN at event {report.first_broken_seq} "
            f"(of the first {report.events} read): {report.reason}"
        )
        raise typer.Exit(ExitCode.NOT_VERIFIED)


@audit_app.command("list")
@guarded
def audit_list(
    product: ProductOpt,
    type_: Annotated[
        list[str] | None,
        typer.Option(
            "--type",
            help="Only this event type (repeatable; the io.field-encrypt. prefix optional).",
        ),
    ] = None,
    subject: Annotated[
        str | None, typer.Option("--subject", help="Only events about this, e.g. dek/ID, run/ID.")
    ] = None,
    since: Annotated[
        str | None, typer.Option("--since", help="Only events at or after this ISO 8601 time.")
    ] = None,
    until: Annotated[
        str | None, typer.Option("--until", help="Only events before this ISO 8601 time.")
    ] = None,
    limit: Annotated[
        int | None, typer.Option("--limit", min=1, help="At most this many (oldest first).")
    ] = None,
    json_: JsonOpt = False,
) -> None:
    """List stored events (CloudEvents), oldest first, filtered."""
    from field_encrypt.audit import TYPE_PREFIX, full_type

    start = parse_time(since, "--since") if since else None
    end = parse_time(until, "--until") if until else None
    with opened(product) as rt:
        events = _trail(rt).events(
            types=[full_type(t) for t in type_ or []],
            subject=subject,
            since=start,
            until=end,
            limit=limit,
        )
    if json_:
        output.emit_json([e.cloudevent() for e in events])
        return
    output.stdout().print(
        output.table(
            f"Audit trail of {product} ({len(events)} events)",
            ["seq", "time", "type", "subject", "data"],
            [
                (
                    e.seq,
                    e.time[:19],
                    e.type.removeprefix(TYPE_PREFIX),
                    e.subject,
                    _brief(e.data),
                )
                for e in events
            ],
        )
    )


def _brief(data: object, width: int = 90) -> str:
    text = json.dumps(data, sort_keys=True, separators=(",", ":"))
    return text if len(text) <= width else text[: width - 1] + "…"


# audit deliver, audit anchor: in a module of their own.
from field_encrypt.cli.audit_deliver import register as _register  # noqa: E402

_register(audit_app)
