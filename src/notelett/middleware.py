"""ASGI middleware: a correlation id for every request, a normalized ASCII request target,
and the request-body size limit."""

from __future__ import annotations

import re
import uuid

import structlog
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from notelett.errors import PayloadTooLargeError, error_body

REQUEST_ID_PATTERN = re.compile(rb"[A-Za-z0-9._:-]{1,128}")
"""An incoming ``X-Request-ID`` is kept only if it matches (bounded, no spaces or quotes)."""


class HttpMiddleware:
    """An ASGI middleware for HTTP requests: other scopes (lifespan) go straight on to the
    app, an HTTP request to :meth:`handle`."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        await self.handle(scope, receive, send)

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        raise NotImplementedError


class StatusSeen:
    """A ``send`` that notes the status of the answer it passes on (500 until one is sent)."""

    def __init__(self, send: Send) -> None:
        self.send = send
        self.status = 500

    async def __call__(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.status = message["status"]
        await self.send(message)


def route_template(scope: Scope) -> str:
    """The template of the route that matched (``/api/notes/{note_id}``), or ``unmatched``."""
    return getattr(scope.get("route"), "path", None) or "unmatched"


def request_id_of(headers: list[tuple[bytes, bytes]]) -> str:
    """The caller's ``X-Request-ID`` when it is valid, else a new random one."""
    for name, value in headers:
        if name == b"x-request-id" and REQUEST_ID_PATTERN.fullmatch(value):
            return value.decode("ascii")
    return uuid.uuid4().hex


class RequestIdMiddleware(HttpMiddleware):
    """Give each request a correlation id (``request.state.request_id``), bind it to the
    log context, and send it back in ``X-Request-ID``.

    The caller's ``X-Request-ID`` is honoured when it is 1-128 characters of
    ``A-Z a-z 0-9 . _ : -``; anything else is replaced by a random id.
    """

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        request_id = request_id_of(scope.get("headers", []))
        scope.setdefault("state", {})["request_id"] = request_id
        header = (b"x-request-id", request_id.encode())

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                if not any(name.lower() == b"x-request-id" for name, _ in headers):
                    headers.append(header)
                message["headers"] = headers
            await send(message)

        with structlog.contextvars.bound_contextvars(request_id=request_id):
            await self.app(scope, receive, send_with_id)


class RequestTargetMiddleware(HttpMiddleware):
    """Refuse with 400 a request whose query string is not ASCII, and serve a path with a
    trailing slash exactly as the path without it.

    HTTP request targets are ASCII (RFC 9112); uvicorn's parser already refuses others, but
    an ASGI server that passes raw bytes through would hand them on undecodable. Found by
    fuzzing the app in process. ``/api/notes/`` *is* ``/api/notes``: one route per
    resource, and no redirect (a redirect's ``Location`` would be built from the request's
    ``Host`` header, which the caller controls).
    """

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not scope.get("query_string", b"").isascii():
            await _answer(scope, receive, send, 400, "bad_request", "bad request")
            return
        path: str = scope["path"]
        if len(path) > 1 and path.endswith("/"):
            raw: bytes = scope.get("raw_path") or path.encode()
            # in place, so that the outer middleware (metrics) sees the route that matched
            scope["path"] = path.rstrip("/") or "/"
            scope["raw_path"] = raw.rstrip(b"/") or b"/"
        await self.app(scope, receive, send)


class BodyLimitMiddleware(HttpMiddleware):
    """Refuse bodies above ``max_bytes`` with 413, without reading more than that.

    A ``Content-Length`` above the limit is refused before any byte is read; a chunked
    body is read up to the limit and refused as soon as it goes past it. Bodies within
    the limit are handed on unchanged.
    """

    def __init__(self, app: ASGIApp, *, max_bytes: int) -> None:
        super().__init__(app)
        self.max_bytes = max_bytes

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        declared = dict(scope.get("headers", [])).get(b"content-length")
        if declared is not None:
            if not declared.isdigit():
                await _answer(scope, receive, send, 400, "bad_request", "invalid Content-Length")
                return
            if int(declared) > self.max_bytes:
                await _too_large(scope, receive, send)
                return
        if scope["method"] in ("GET", "HEAD", "OPTIONS", "DELETE") and declared is None:
            await self.app(scope, receive, send)
            return
        received: list[Message] = []
        size = 0
        while True:
            message = await receive()
            received.append(message)
            if message["type"] != "http.request":
                break
            size += len(message.get("body", b""))
            if size > self.max_bytes:
                await _too_large(scope, receive, send)
                return
            if not message.get("more_body", False):
                break

        async def replay() -> Message:
            return received.pop(0) if received else await receive()

        await self.app(scope, replay, send)


async def _too_large(scope: Scope, receive: Receive, send: Send) -> None:
    err = PayloadTooLargeError()
    await _answer(scope, receive, send, err.status, err.code, err.message)


async def _answer(
    scope: Scope, receive: Receive, send: Send, status: int, code: str, message: str
) -> None:
    response = JSONResponse(
        error_body(code, message), status_code=status, headers={"Connection": "close"}
    )
    await response(scope, receive, send)
