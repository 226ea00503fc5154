"""``field-encrypt audit deliver`` and ``audit anchor``: the trail leaves the database."""

from __future__ import annotations

import signal
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from field_encrypt.cli import output
from field_encrypt.cli.common import JsonOpt, ProductOpt, guarded, opened, writable_output
from field_encrypt.errors import ConfigurationError, FieldEncryptError

if TYPE_CHECKING:
    from field_encrypt.audit_anchor import Anchor
    from field_encrypt.audit_delivery import AuditDelivery
    from field_encrypt.products import ProductRuntime
    from field_encrypt.providers.base import KeyProvider


def _anchor_line(anchor: Anchor, path: Path) -> str:
    return f"anchored event {anchor.seq} ({anchor.events} events, head {anchor.head}) in {path}"


def _mek(runtime: ProductRuntime) -> KeyProvider:
    """The MEK itself, never the KEK tier: a KEK lives in the database (wrapped), and its
    retirement would orphan anchors."""
    return runtime.kek_tier.mek if runtime.kek_tier is not None else runtime.provider


def _sign(runtime: ProductRuntime, path: Path) -> Anchor:
    from field_encrypt.audit_anchor import sign_anchor, write_anchor

    if runtime.audit is None:
        raise ConfigurationError(f"product {runtime.encryptor.product!r} has no audit trail")
    anchor = sign_anchor(runtime.audit, _mek(runtime), product=runtime.encryptor.product)
    write_anchor(anchor, path)
    return anchor


@guarded
def audit_deliver(
    product: ProductOpt,
    to: Annotated[
        str,
        typer.Option(
            "--to",
            metavar="URL",
            envvar="FIELD_ENCRYPT_AUDIT_DELIVERY_URL",
            help="The actiontrail endpoint (http:// or https://); events are POSTed to it as "
            "CloudEvents (structured mode).",
        ),
    ],
    follow: Annotated[
        bool,
        typer.Option(
            "--follow/--once",
            help="--once (default): deliver what is stored and exit. --follow: keep "
            "delivering new events until stopped (SIGTERM or Ctrl-C).",
        ),
    ] = False,
    interval: Annotated[
        float, typer.Option("--interval", min=0.1, help="--follow: seconds between polls.")
    ] = 2.0,
    timeout: Annotated[
        float, typer.Option("--timeout", min=0.05, help="Seconds to wait for each answer.")
    ] = 10.0,
    max_attempts: Annotated[
        int,
        typer.Option(
            "--max-attempts", min=1, help="--once: attempts per event before giving up (exit 7)."
        ),
    ] = 8,
    anchor: Annotated[
        Path | None,
        typer.Option(
            "--anchor",
            metavar="FILE",
            help="After each pass that delivered events, sign the chain head into FILE.",
        ),
    ] = None,
    json_: JsonOpt = False,
) -> None:
    """Send the audit trail to actiontrail in chain order, resuming after the last acknowledged event.

    The bearer token, if the endpoint needs one, is read from FIELD_ENCRYPT_AUDIT_DELIVERY_TOKEN.
    """
    import os

    from field_encrypt.audit_delivery import AuditDelivery, Backoff, HttpDestination

    anchor = writable_output(anchor)
    destination = HttpDestination(
        to, timeout=timeout, token=os.environ.get("FIELD_ENCRYPT_AUDIT_DELIVERY_TOKEN") or None
    )
    with opened(product) as rt:
        if rt.audit is None:
            raise ConfigurationError(f"product {product!r} has no audit trail")
        from field_encrypt.audit_outbox import FOLLOW_GRACE_SECONDS, reconcile

        grace = FOLLOW_GRACE_SECONDS if follow else 0.0
        backoff = Backoff(max_attempts=None if follow else max_attempts)
        moved = threading.Event()
        delivery = AuditDelivery(
            rt.audit,  # type: ignore[arg-type]
            destination,
            backoff=backoff,
            on_delivered=lambda _event: moved.set(),
            # acts interrupted before their events: recorded (or dropped) before each pass
            reconcile=lambda: reconcile(rt, min_age=grace),
        )
        if follow:
            _follow(delivery, rt, anchor, interval, moved)
            return
        report = delivery.deliver()
        signed = _sign(rt, anchor) if anchor is not None and report.last_seq else None
    result: dict[str, Any] = {
        "product": product,
        "destination": report.destination,
        "delivered": report.delivered,
        "retries": report.retries,
        "last_seq": report.last_seq,
        "head": report.head,
        "anchor": str(anchor) if signed else None,
    }
    if json_:
        output.emit_json(result)
        return
    output.stdout().print(
        f"delivered {report.delivered} events to {report.destination} "
        f"({report.retries} retries); acknowledged up to event {report.last_seq or '-'}, "
        f"head {report.head or '-'}"
    )
    if signed is not None and anchor is not None:
        output.stdout().print(_anchor_line(signed, anchor))


def _follow(
    delivery: AuditDelivery,
    runtime: ProductRuntime,
    anchor: Path | None,
    interval: float,
    moved: threading.Event,
) -> None:
    """Deliver until SIGTERM or Ctrl-C; anchor after each poll that delivered events."""
    import logging

    log = logging.getLogger("field_encrypt.audit_delivery")
    signal.signal(signal.SIGTERM, lambda *_: delivery.stop(timeout=0))
    thread = delivery.start(interval=interval)
    try:
        while thread.is_alive():
            thread.join(interval)
            if anchor is not None and moved.is_set():
                moved.clear()
                try:
                    _sign(runtime, anchor)
                except (FieldEncryptError, OSError) as exc:  # keep delivering; say why
                    log.warning("audit anchor not written: %s", exc)
    except KeyboardInterrupt:
        delivery.stop()


@guarded
def audit_anchor(
    product: ProductOpt,
    out: Annotated[
        Path,
        typer.Option(
            "--out",
            metavar="FILE",
            help="Where to write the signed head: outside the database (another host, "
            "versioned object storage).",
        ),
    ],
    json_: JsonOpt = False,
) -> None:
    """Verify the chain and sign its head with a key wrapped by the key provider (exit 5 if broken)."""
    out = writable_output(out) or out
    with opened(product) as rt:
        signed = _sign(rt, out)
    if json_:
        output.emit_json({"product": product, "anchor": str(out), **signed.to_json()})
        return
    output.stdout().print(_anchor_line(signed, out))


def register(app: typer.Typer) -> None:
    """Add ``deliver`` and ``anchor`` to the ``audit`` command group."""
    app.command("deliver")(audit_deliver)
    app.command("anchor")(audit_anchor)


def verify_against(product: str, path: Path, *, json_: bool) -> None:
    """``audit verify --against CHECKPOINT``: the chain, then the anchored head."""
    from field_encrypt.audit_anchor import check_anchor, read_anchor
    from field_encrypt.cli.exit_codes import ExitCode

    anchor = read_anchor(path)
    with opened(product) as rt:
        if rt.audit is None:
            raise ConfigurationError(f"product {product!r} has no audit trail")
        if anchor.product != rt.encryptor.product:
            raise ConfigurationError(
                f"{path} anchors the trail of {anchor.product!r}, not {rt.encryptor.product!r}"
            )
        report = check_anchor(rt.audit, _mek(rt), anchor)
    if json_:
        output.emit_json(
            {
                "product": product,
                "intact": report.ok,
                "events": report.trail_events,
                "head": report.trail_head,
                "anchor": str(path),
                "anchored_seq": report.anchored_seq,
                "anchored_head": report.anchored_head,
                "anchored_at": anchor.signed_at,
                "reason": report.reason,
            }
        )
    elif report.ok:
        output.stdout().print(
            f"intact: {report.trail_events} events, chain head {report.trail_head}; holds the "
            f"head anchored at {anchor.signed_at} (event {anchor.seq})"
        )
    if not report.ok:
        output.fail_line(
            f"audit trail of {product} does NOT match the anchor {path}: {report.reason}"
        )
        raise typer.Exit(ExitCode.NOT_VERIFIED)
