"""The OpenTelemetry SDK's in-memory exporter, installed once per test process."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from field_encrypt import tracing

_EXPORTER: list[InMemorySpanExporter] = []


def exporter() -> InMemorySpanExporter:
    """The process's in-memory exporter (the global tracer provider is set only once)."""
    if not _EXPORTER:
        memory = InMemorySpanExporter()
        current = trace.get_tracer_provider()
        if isinstance(current, TracerProvider):  # the secret scan's: export to both
            current.add_span_processor(SimpleSpanProcessor(memory))
        else:
            provider = TracerProvider()
            provider.add_span_processor(SimpleSpanProcessor(memory))
            trace.set_tracer_provider(provider)
        _EXPORTER.append(memory)
    return _EXPORTER[0]


@contextmanager
def traced() -> Iterator[list[ReadableSpan]]:
    """Tracing on for the block; the list fills with the spans finished in it."""
    memory = exporter()
    memory.clear()
    spans: list[ReadableSpan] = []
    previous = tracing.enable(True)
    try:
        yield spans
    finally:
        tracing.enable(previous)
        spans.extend(memory.get_finished_spans())
        memory.clear()
