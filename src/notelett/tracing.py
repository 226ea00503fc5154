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

from starlette.types import Receive, Scope, Send

from field_encrypt import tracing
from notelett.middleware import HttpMiddleware, StatusSeen, route_template


class TracingMiddleware(HttpMiddleware):
    """One server span around each HTTP request."""

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not tracing.active():
            await self.app(scope, receive, send)
            return
        method = scope["method"]
        carrier = {
            k.decode("latin-1"): v.decode("latin-1")
            for k, v in scope.get("headers", [])
            if k in (b"traceparent", b"tracestate")
        }
        seen = StatusSeen(send)
        with tracing.span(
            method, kind="server", carrier=carrier, attributes={"http.request.method": method}
        ) as current:
            try:
                await self.app(scope, receive, seen)
            finally:
                route = route_template(scope)
                tracing.rename(current, f"{method} {route}")
                tracing.annotate(
                    current,
                    {"http.route": route, "http.response.status_code": seen.status},
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
