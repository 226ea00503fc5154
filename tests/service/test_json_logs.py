"""The service logs JSON lines that carry the request id (the caller's, when valid)."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from notelett.log_format import log_handler

from .conftest import make_token


@pytest.fixture
def log_lines() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    handler = log_handler("json", stream=stream)
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    yield stream
    root.removeHandler(handler)
    root.setLevel(old_level)


def test_a_request_s_log_lines_are_json_with_its_request_id(
    client: TestClient, log_lines: io.StringIO
) -> None:
    """A refused token logs one JSON object naming the caller's X-Request-ID; a request
    without one is logged with the id the response carries."""
    bad = {"Authorization": f"Bearer {make_token(key='x' * 64)}"}
    client.get("/api/notes?workspaceId=ws-a", headers={**bad, "X-Request-ID": "trace-7f3a"})
    answer = client.get("/api/notes?workspaceId=ws-a", headers=bad)
    records = [json.loads(line) for line in log_lines.getvalue().splitlines()]
    refused = [r for r in records if r["event"].startswith("bearer token refused")]
    assert [r["request_id"] for r in refused] == ["trace-7f3a", answer.headers["x-request-id"]]
    for record in refused:
        assert record["level"] == "info" and record["logger"] == "notelett.auth"
        assert record["timestamp"].endswith("Z")
    assert "Bearer" not in log_lines.getvalue()
