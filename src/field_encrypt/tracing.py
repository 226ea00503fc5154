"""OpenTelemetry spans: HTTP requests, key-provider calls, store batches, rotation stages.

Optional: the ``otel`` extra (opentelemetry-api and -sdk). The library only uses the API
and never configures a tracer provider: the application does (NoteLett under
``opentelemetry-instrument``, or its own ``TracerProvider``). Tracing is **on** when the
API is installed and either :func:`enable` was called or the environment configures an
exporter (``OTEL_TRACES_EXPORTER``, ``OTEL_EXPORTER_OTLP_ENDPOINT`` or
``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``); otherwise :func:`span` is a no-op that never
imports OpenTelemetry (the CLI starts as fast as without it).

Span attributes are names, counts, versions and outcomes, set only through :func:`span`
with keys from :data:`ATTRIBUTES`: never key material, plaintext, a document, a token or
an exception message (a failed span records the error's class, nothing else).
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from opentelemetry.trace import Span

INSTALLED = importlib.util.find_spec("opentelemetry") is not None
"""Whether opentelemetry-api is installed (the ``otel`` extra)."""

ATTRIBUTES = frozenset(
    {
        "field_encrypt.provider",
        "field_encrypt.operation",
        "field_encrypt.outcome",
        "field_encrypt.product",
        "field_encrypt.mode",
        "field_encrypt.stage",
        "field_encrypt.worker",
        "field_encrypt.items",
        "field_encrypt.store",
        "http.request.method",
        "http.route",
        "http.response.status_code",
        "error.type",
    }
)
"""Every attribute key a span may carry; :func:`span` refuses any other."""

_ENV = ("OTEL_TRACES_EXPORTER", "OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
_state: dict[str, bool | None] = {"enabled": False, "environment": None}


def enable(on: bool = True) -> bool:
    """Trace from now on (the application has configured a tracer provider), or stop;
    whether it was enabled before."""
    previous, _state["enabled"] = bool(_state["enabled"]), on
    return previous


def active() -> bool:
    """Whether spans are made: the API is installed and tracing was enabled or configured."""
    if not INSTALLED:
        return False
    if _state["enabled"]:
        return True
    configured = _state["environment"]
    if configured is None:  # read once: the hot path (every provider call) asks
        configured = any(os.environ.get(name) for name in _ENV) and (
            os.environ.get("OTEL_SDK_DISABLED", "").lower() != "true"
        )
        _state["environment"] = configured
    return configured


@contextmanager
def span(
    name: str,
    *,
    kind: str = "internal",
    attributes: Mapping[str, object] | None = None,
    carrier: Mapping[str, str] | None = None,
    **fields: object,
) -> Iterator[Any]:
    """A span around the block (the yielded object is ``None`` when tracing is off).

    ``fields`` are field-encrypt's own attributes (``provider="akv"`` is
    ``field_encrypt.provider``); ``attributes`` take full keys (``http.route``). An
    exception leaving the block marks the span failed with its class name only.
    ``carrier``: incoming headers whose ``traceparent`` (W3C) makes this span its child.
    """
    if not active():
        yield None
        return
    from opentelemetry import propagate, trace
    from opentelemetry.trace import SpanKind, Status, StatusCode

    tracer = trace.get_tracer("field_encrypt")
    kinds = {"internal": SpanKind.INTERNAL, "server": SpanKind.SERVER, "client": SpanKind.CLIENT}
    with tracer.start_as_current_span(
        name,
        context=propagate.extract(dict(carrier)) if carrier is not None else None,
        kind=kinds[kind],
        attributes=_attributes(attributes or {}, fields),
        record_exception=False,  # an exception's message and traceback stay out of spans
        set_status_on_exception=False,
    ) as current:
        try:
            yield current
        except BaseException as exc:
            current.set_attribute("error.type", type(exc).__name__)
            current.set_status(Status(StatusCode.ERROR, type(exc).__name__))
            raise


def annotate(
    current: Span | None, attributes: Mapping[str, object] | None = None, **fields: object
) -> None:
    """Add attributes to ``current`` (from :func:`span`; nothing when tracing is off)."""
    if current is not None:
        for key, value in _attributes(attributes or {}, fields).items():
            current.set_attribute(key, value)


def rename(current: Span | None, name: str) -> None:
    """Rename ``current`` (a server span, once the route is known)."""
    if current is not None:
        current.update_name(name)


def trace_id() -> str | None:
    """The current span's trace id (32 hex digits), for log lines; ``None`` outside one."""
    if not active():
        return None
    from opentelemetry import trace

    context = trace.get_current_span().get_span_context()
    return format(context.trace_id, "032x") if context.is_valid else None


def _attributes(
    attributes: Mapping[str, object], fields: Mapping[str, object]
) -> dict[str, str | int | float | bool]:
    out: dict[str, str | int | float | bool] = {}
    named = {**attributes, **{f"field_encrypt.{k}": v for k, v in fields.items()}}
    for key, value in named.items():
        if key not in ATTRIBUTES:
            raise ValueError(f"span attribute {key!r} is not in tracing.ATTRIBUTES")
        if value is None:
            continue
        if not isinstance(value, str | int | float | bool):
            raise TypeError(f"span attribute {key!r} must be a str, int, float or bool")
        out[key] = value
    return out


__all__ = [
    "ATTRIBUTES", "INSTALLED", "active", "annotate", "enable", "rename", "span", "trace_id",
]  # fmt: skip
