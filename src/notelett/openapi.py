"""The OpenAPI document, completed with what FastAPI cannot infer from the routes.

FastAPI adds a 422 (``HTTPValidationError``) to every operation that has parameters,
even where none can fail validation; the routes that can answer 422 declare it themselves
(``ErrorOut``), and :func:`openapi_document` drops FastAPI's. It also documents the
answers and headers the middleware and the error handler send: 400 and 413 on every
operation, ``X-Request-ID`` on every answer,
``Retry-After`` on every 503, ``WWW-Authenticate`` on every 401 (the routes declare
``ETag`` and ``Location``).
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

_STRING = {"type": "string"}
REQUEST_ID = {
    "description": "The request's correlation id: the caller's own when valid, else a new one",
    "required": True,
    "schema": _STRING,
}
RETRY_AFTER = {
    "description": "Seconds to wait before retrying",
    "required": True,
    "schema": _STRING,
}
ERROR = {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorOut"}}}
MIDDLEWARE_ANSWERS = {
    "400": "A non-ASCII query string or an invalid Content-Length",
    "413": "A declared or sent body above the size limit",
}
"""What the middleware answers on any route, before the route is called."""
WWW_AUTHENTICATE = {"description": "The Bearer challenge", "required": True, "schema": _STRING}


def openapi_document(app: FastAPI) -> dict[str, Any]:
    """The app's OpenAPI document (built once, then cached on the app)."""
    if app.openapi_schema:
        return app.openapi_schema
    doc = get_openapi(
        title=app.title, version=app.version, description=app.description, routes=app.routes
    )
    for item in doc.get("paths", {}).values():
        for operation in item.values():
            responses = operation["responses"]
            if "HTTPValidationError" in str(responses.get("422", "")):
                del responses["422"]  # FastAPI's own: the route did not declare one
            for status, description in MIDDLEWARE_ANSWERS.items():
                responses.setdefault(status, {"description": description, "content": ERROR})
            for status, response in responses.items():
                headers = response.setdefault("headers", {})
                for header in headers.values():
                    header.setdefault("required", True)
                headers["X-Request-ID"] = REQUEST_ID
                if status == "503":
                    headers["Retry-After"] = RETRY_AFTER
                if status == "401":
                    headers["WWW-Authenticate"] = WWW_AUTHENTICATE
    schemas = doc.get("components", {}).get("schemas", {})
    text = str(doc["paths"])
    for unused in ("HTTPValidationError", "ValidationError"):
        if f"/{unused}'" not in text:
            schemas.pop(unused, None)
    app.openapi_schema = doc
    return doc
