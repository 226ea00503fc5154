"""Schemathesis against NoteLett's served OpenAPI document, in process, with a valid token.

Every operation the document describes is called with inputs generated from its schema
(``GenerationMode.POSITIVE`` and ``NEGATIVE``), as alice, who belongs to ws-a where notes
exist, so the requests reach the handlers. Every check schemathesis has must pass on
every answer: no server error, status codes and content types the document declares,
bodies and headers that match their schemas. Hypothesis drives each operation directly
(schemathesis' pytest plugin does not load under pytest 9). Bounded in CI
(:data:`EXAMPLES` per operation and mode); ``FIELD_ENCRYPT_SOAK=1`` runs ten times as many.
"""

from __future__ import annotations

import os
from typing import Any

import pytest
import schemathesis
from fastapi import FastAPI
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.config import SchemathesisConfig

from tests import figures

from .conftest import auth

# Invalid input may also be refused with 413 (a body above NOTELETT_MAX_BODY_BYTES, before
# it is parsed), which schemathesis' default list of rejections does not name.
CONFIG = SchemathesisConfig.from_dict(
    {
        "checks": {
            "negative_data_rejection": {
                "expected-statuses": [400, 401, 404, 405, 412, 413, 422, 428]
            }
        }
    }
)
SOAK = os.environ.get("FIELD_ENCRYPT_SOAK", "") not in ("", "0")
EXAMPLES = 500 if SOAK else 40


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_every_operation_conforms_to_the_openapi_document(
    app: FastAPI, create_note: Any, mode: GenerationMode
) -> None:
    """No failure of any schemathesis check, on any generated request, for any operation."""
    for i in range(3):
        create_note(user="alice", workspace="ws-a", title=f"note {i}")
    schema = schemathesis.openapi.from_asgi("/openapi.json", app, config=CONFIG)
    headers = auth("alice")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 6
    sent = 0

    for operation in operations:

        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def call(case: Any) -> None:
            nonlocal sent
            sent += 1
            case.call_and_validate(headers={**headers, **(case.headers or {})})

        try:
            call()
        except Unsatisfiable:
            assert mode == GenerationMode.NEGATIVE  # nothing invalid to send (no inputs)
    figures.record("api security", schemathesis_requests=sent)
    print(f"schemathesis ({mode.value}): {sent} requests over {len(operations)} operations")
