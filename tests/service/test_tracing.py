"""OpenTelemetry spans, with the SDK's in-memory exporter: HTTP requests, provider calls,
store batches and rotation stages; the trace id on log records; nothing secret in spans."""

from __future__ import annotations

import logging
import subprocess
import sys
import textwrap
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanKind

import field_encrypt
from field_encrypt import tracing
from field_encrypt.providers.local import LocalKeyProvider
from field_encrypt.providers.observed import observed
from notelett import NoteLettSettings, create_app
from notelett.backend import Backend, open_backend
from tests.support.tracing import traced

from .conftest import add_members, auth

PARENT = "0af7651916cd43dd8448eb211c80319c"
TRACEPARENT = f"00-{PARENT}-b7ad6b7169203331-01"


@pytest.fixture
def observed_backend(
    settings: NoteLettSettings, encryption: field_encrypt.Settings, provider: LocalKeyProvider
) -> Iterator[Backend]:
    """The service's backend with its provider measured and traced, as ``notelett serve``
    builds it."""
    opened = open_backend(encryption, settings, provider=observed(provider))
    add_members(opened)
    yield opened
    opened.close()


def attributes(spans: list[ReadableSpan]) -> list[tuple[str, object]]:
    return [(k, v) for s in spans for k, v in (s.attributes or {}).items()]


def test_a_request_is_a_server_span_with_the_callers_parent_and_provider_spans_inside(
    settings: NoteLettSettings, observed_backend: Backend, caplog: pytest.LogCaptureFixture
) -> None:
    """A traced request continues the caller's trace (traceparent), is named by its route
    template, and the provider's wrap nests under it; log records carry its trace id."""
    app = create_app(settings, backend=observed_backend)
    with TestClient(app) as client, traced() as spans:
        with caplog.at_level(logging.INFO, logger="notelett"):
            created = client.post(
                "/api/notes",
                json={"workspaceId": "ws-a", "title": "secret title", "body": "secret body"},
                headers={**auth("alice"), "traceparent": TRACEPARENT},
            )
            logging.getLogger("notelett").info("outside any request")
        missing = client.get("/api/notes/" + "0" * 32, headers=auth("alice"))
    assert created.status_code == 201 and missing.status_code == 404
    servers = [s for s in spans if s.kind is SpanKind.SERVER]
    post = next(s for s in servers if s.name == "POST /api/notes")
    assert post.context.trace_id == int(PARENT, 16)
    assert post.attributes is not None and post.attributes["http.response.status_code"] == 201
    get = next(s for s in servers if s.name == "GET /api/notes/{note_id}")
    assert get.attributes is not None and get.attributes["http.route"] == "/api/notes/{note_id}"
    assert "0" * 32 not in get.name  # the template, never the id
    wrap = next(s for s in spans if s.name == "field_encrypt.provider.wrap")
    assert wrap.parent is not None and wrap.context.trace_id == post.context.trace_id
    assert wrap.kind is SpanKind.CLIENT and wrap.attributes == {
        "field_encrypt.provider": "local",
        "field_encrypt.operation": "wrap",
        "field_encrypt.outcome": "ok",
    }
    outside = [r for r in caplog.records if r.getMessage() == "outside any request"]
    assert outside and outside[0].trace_id is None  # type: ignore[attr-defined]
    for key, value in attributes(spans):
        assert isinstance(value, str | int | float | bool), key
        assert "secret" not in str(value) and created.json()["id"] not in str(value)


def test_tracing_is_off_and_never_imported_unless_configured() -> None:
    """Without enable() or an OTEL exporter in the environment, spans are no-ops and the
    CLI process never imports OpenTelemetry (its start-up pays nothing)."""
    script = textwrap.dedent(
        """
        import os, sys
        for name in list(os.environ):
            if name.startswith("OTEL_"):
                del os.environ[name]
        from field_encrypt import tracing
        import field_encrypt.cli.main
        with tracing.span("x", provider="local") as current:
            assert current is None
        assert not tracing.active() and tracing.trace_id() is None
        print("opentelemetry" in sys.modules)
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip() == "False"


def test_span_attributes_are_an_allow_list() -> None:
    """An attribute outside tracing.ATTRIBUTES, or a value that is not a scalar (bytes),
    is refused before it could reach an exporter."""
    with traced():
        with (
            pytest.raises(ValueError, match=r"not in tracing\.ATTRIBUTES"),
            tracing.span("x", key="k"),
        ):
            pass
        with pytest.raises(TypeError), tracing.span("x", provider=b"\x00" * 32):
            pass
