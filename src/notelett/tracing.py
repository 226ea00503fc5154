"""Traces of NoteLett: a server span per HTTP request, and the trace id on log records.

Spans are made only when tracing is on (``field_encrypt.tracing.active()``: the ``otel``
extra installed and a tracer provider configured, e.g. under ``opentelemetry-instrument``).
A request's span is a child of the caller's ``traceparent``; it is named
``METHOD /route/{template}`` and carries the method, the route template and the status,
never the path's ids, the query, headers or bodies. The library's provider and store
spans nest under it.
"""

from __future__ import annotations

import logging

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from field_encrypt import tracing


class TracingMiddleware:
    """One server span around each HTTP request."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not tracing.active():
            await self.app(scope, receive, send)
            return
        method = scope["method"]
        carrier = {
            k.decode("latin-1"): v.decode("latin-1")
            for k, v in scope.get("headers", [])
            if k in (b"traceparent", b"tracestate")
        }
        status = 500

        async def send_and_see(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        with tracing.span(
            method, kind="server", carrier=carrier, attributes={"http.request.method": method}
        ) as current:
            try:
                await self.app(scope, receive, send_and_see)
            finally:
                route = getattr(scope.get("route"), "path", None) or "unmatched"
                tracing.rename(current, f"{method} {route}")
                tracing.annotate(
                    current,
                    {"http.route": route, "http.response.status_code": status},
                )


class TraceIdFilter(logging.Filter):
    """Put the current trace id on every record (``record.trace_id``; ``None`` outside a
    traced request), for log formatters to print next to the request id."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.trace_id = tracing.trace_id()
        return True


TRACE_ID_FILTER = TraceIdFilter()
LOGGERS = ("notelett", "notelett.auth", "notelett.readiness")
"""The service's loggers (the filter is added to each: a logger's filters do not see its
children's records)."""


def add_trace_ids() -> None:
    """Add :data:`TRACE_ID_FILTER` to NoteLett's loggers (once; idempotent)."""
    for name in LOGGERS:
        logger = logging.getLogger(name)
        if TRACE_ID_FILTER not in logger.filters:
            logger.addFilter(TRACE_ID_FILTER)
