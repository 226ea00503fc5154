"""NoteLett's errors, and the one handler that turns every error into an HTTP answer.

The service's own tree sits beside the library's; :func:`status_of` maps both::

    NoteLettError
    ├── AuthenticationError        401  missing, malformed or rejected bearer token
    ├── InvalidCursorError         400  a listing cursor this service did not issue
    ├── NotFoundError              404  no such note or workspace, *or not yours*
    │   ├── NoteNotFoundError
    │   └── WorkspaceNotFoundError
    ├── PreconditionFailedError    412  If-Match names another revision
    ├── PreconditionRequiredError  428  PUT without If-Match
    ├── PayloadTooLargeError       413  body above NOTELETT_MAX_BODY_BYTES
    ├── IdentityProviderError      503  the JWKS endpoint could not be reached
    ├── WritesBusyError            503  no write slot freed in time (a locked database)
    └── NoteUnreadableError        500  a note failed to decrypt (logged with dekId, version)

    field_encrypt.ConcurrentUpdateError      412  (compare-and-swap lost mid-write)
    field_encrypt.NotFoundError              404  (the row went away under a racing write)
    field_encrypt.KeyProviderError (all)     503  key unavailable or version disabled
    field_encrypt.StoreUnavailableError      503  locked, read-only, full or vanished database
    any other FieldEncryptError, Exception   500

4xx bodies carry no correlation id, so a note in someone else's workspace answers with
exactly the same bytes as a note that does not exist. 5xx bodies carry the request's
correlation id (also in every response's ``X-Request-ID`` header) and a fixed message:
no key names, vault URLs, connection strings or stack traces ever reach a client.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import field_encrypt

if TYPE_CHECKING:  # FastAPI is imported by the handler: the CLI loads this tree without it
    from fastapi import Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse

log = logging.getLogger("notelett")


class NoteLettError(Exception):
    """Root of the service's own errors."""

    status = 500
    code = "internal_error"
    message = "internal error"


class AuthenticationError(NoteLettError):
    status = 401
    code = "unauthorized"
    message = "a valid bearer token is required"


class InvalidCursorError(NoteLettError):
    status = 400
    code = "invalid_cursor"
    message = "the cursor is not valid"


class NotFoundError(NoteLettError):
    status = 404
    code = "not_found"


class NoteNotFoundError(NotFoundError):
    message = "note not found"


class WorkspaceNotFoundError(NotFoundError):
    message = "workspace not found"


class PreconditionFailedError(NoteLettError):
    status = 412
    code = "precondition_failed"
    message = "the note has changed: If-Match does not match its current ETag"


class PreconditionRequiredError(NoteLettError):
    status = 428
    code = "precondition_required"
    message = "If-Match with the note's ETag is required"


class PayloadTooLargeError(NoteLettError):
    status = 413
    code = "payload_too_large"
    message = "the request body is too large"


class IdentityProviderError(NoteLettError):
    status = 503
    code = "unavailable"
    message = "the service is temporarily unavailable"


class WritesBusyError(NoteLettError):
    """Every write slot stayed taken for the write gate's wait (:mod:`notelett.writes`)."""

    status = 503
    code = "database_unavailable"
    message = "the database cannot take writes right now; retry later"


class NoteUnreadableError(NoteLettError):
    """A note's fields failed to decrypt. Carries ids for the log, never key material."""

    def __init__(self, *, note_id: str, dek_id: str | None, mek_version: str | None) -> None:
        super().__init__("note could not be decrypted")
        self.note_id = note_id
        self.dek_id = dek_id
        self.mek_version = mek_version


def status_of(exc: BaseException) -> tuple[int, str, str]:
    """``(HTTP status, code, message)`` for any error; the one place the mapping lives."""
    if isinstance(exc, NoteLettError):
        return exc.status, exc.code, exc.message
    if isinstance(exc, field_encrypt.ConcurrentUpdateError):
        return 412, PreconditionFailedError.code, PreconditionFailedError.message
    if isinstance(exc, field_encrypt.NotFoundError):  # a row a racing delete removed
        return 404, NotFoundError.code, "not found"
    if isinstance(exc, field_encrypt.KeyProviderError):
        return 503, "encryption_unavailable", "encryption keys are temporarily unavailable"
    if isinstance(exc, field_encrypt.StoreUnavailableError):
        return 503, WritesBusyError.code, "the database is temporarily unavailable; retry later"
    return 500, NoteLettError.code, NoteLettError.message


def error_body(
    code: str, message: str, *, correlation_id: str | None = None, details: Any = None
) -> dict[str, Any]:
    """The JSON shape of every error answer (the ``Error`` schema in the OpenAPI document)."""
    error: dict[str, Any] = {"code": code, "message": message}
    if correlation_id is not None:
        error["correlationId"] = correlation_id
    if details is not None:
        error["details"] = details
    return {"error": error}


def request_id(request: Request) -> str:
    """The correlation id the request-id middleware gave this request."""
    return str(getattr(request.state, "request_id", "-"))


async def handle_error(request: Request, exc: Exception) -> JSONResponse:
    """The one handler: every error type the app raises is registered to it."""
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse
    from starlette.exceptions import HTTPException as StarletteHTTPException

    headers: dict[str, str] = {}
    if isinstance(exc, RequestValidationError):
        return _validation_answer(exc)
    if isinstance(exc, StarletteHTTPException):
        code = "method_not_allowed" if exc.status_code == 405 else "not_found"
        if exc.status_code not in (404, 405):
            code = "bad_request"
        message = {404: "not found", 405: "method not allowed"}.get(exc.status_code, "bad request")
        return JSONResponse(
            error_body(code, message), status_code=exc.status_code, headers=exc.headers
        )
    status, code, message = status_of(exc)
    if status == 401:
        headers["WWW-Authenticate"] = 'Bearer error="invalid_token"'
    if status < 500:
        return JSONResponse(error_body(code, message), status_code=status, headers=headers)
    correlation_id = request_id(request)
    _log_server_error(exc, status, correlation_id)
    headers["X-Request-ID"] = correlation_id  # a 500 is answered outside the middleware
    if status == 503:
        headers["Retry-After"] = "5"
    return JSONResponse(
        error_body(code, message, correlation_id=correlation_id),
        status_code=status,
        headers=headers,
    )


def _log_server_error(exc: BaseException, status: int, correlation_id: str) -> None:
    if isinstance(exc, NoteUnreadableError):
        log.error(
            "note %s failed to decrypt: dekId=%s mekVersion=%s correlationId=%s",
            exc.note_id,
            exc.dek_id,
            exc.mek_version,
            correlation_id,
        )
    elif status == 503:
        log.warning(
            "dependency unavailable (%s): %s correlationId=%s",
            type(exc).__name__,
            exc,
            correlation_id,
        )
    else:
        log.error("unexpected error correlationId=%s", correlation_id, exc_info=exc)


def _validation_answer(exc: RequestValidationError) -> JSONResponse:
    from fastapi.responses import JSONResponse

    problems = [
        {
            "loc": [str(part) for part in err.get("loc", ())],
            "msg": err.get("msg", ""),
            "type": err.get("type", ""),
        }
        for err in exc.errors()
    ]
    if any(p["type"] == "json_invalid" for p in problems):
        return JSONResponse(
            error_body("malformed_json", "the request body is not valid JSON"), status_code=400
        )
    return JSONResponse(
        error_body("invalid_request", "the request is not valid", details=problems),
        status_code=422,
    )
