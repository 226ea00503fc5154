"""The console's web app (Starlette): one page, its assets, and one JSON endpoint per panel.

Read-only: every route answers GET (and HEAD) only; there is no route that changes
anything. Every answer carries security headers (a Content-Security-Policy that allows
scripts, styles and fetches from the console itself only, and no inline script). With a
token, every request must present it (``Authorization: Bearer``, or the cookie the page
sets after ``/?token=...``), compared in constant time. Without one, the console answers
only requests addressed to a loopback host name (so a web page elsewhere cannot reach it
through DNS rebinding); ``field-encrypt console`` refuses a non-loopback bind without one.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from http.cookies import SimpleCookie
from typing import Any
from urllib.parse import parse_qs

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, PlainTextResponse, RedirectResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from field_encrypt.console.panels import Panels
from field_encrypt.errors import FieldEncryptError

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

COOKIE = "fe_console"
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "[::1]")
SECURITY_HEADERS = {
    "content-security-policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
        "connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    ),
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "no-referrer",
    "cross-origin-opener-policy": "same-origin",
    "cross-origin-resource-policy": "same-origin",
    "permissions-policy": "camera=(), microphone=(), geolocation=()",
    "cache-control": "no-store",
}


def _static_dir() -> str:
    from importlib.resources import files

    return str(files("field_encrypt.console") / "static")


class SecurityHeaders:
    """Adds :data:`SECURITY_HEADERS` to every answer."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def sending(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {k.lower() for k, _ in headers}
                for name, value in SECURITY_HEADERS.items():
                    if name.encode() not in present:
                        headers.append((name.encode(), value.encode()))
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, sending)


def host_name(header: str) -> str:
    """The host part of a ``Host`` header (``[::1]`` keeps its brackets), lower case."""
    header = header.strip().lower()
    if header.startswith("["):
        return header.split("]", 1)[0] + "]"
    return header.split(":", 1)[0]


class HostCheck:
    """Answers only requests whose ``Host`` names one of ``hosts`` (400 otherwise), so a
    page elsewhere cannot read the console through DNS rebinding."""

    def __init__(self, app: ASGIApp, *, hosts: Sequence[str]) -> None:
        self.app = app
        self.hosts = frozenset(h.lower() for h in hosts)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            headers = dict(scope["headers"])
            host = host_name(headers.get(b"host", b"").decode("latin-1"))
            if host not in self.hosts:
                refused = PlainTextResponse(
                    "400: this console answers only requests addressed to "
                    + ", ".join(sorted(self.hosts)),
                    status_code=400,
                )
                await refused(scope, receive, send)
                return
        await self.app(scope, receive, send)


class TokenGate:
    """Lets a request through only with the token (constant-time comparison).

    ``/?token=T`` (the link an operator opens first) sets an HttpOnly, SameSite=Strict
    cookie and redirects to ``/`` so the token leaves the address bar; the page's fetches
    then carry the cookie. Scripts and tools send ``Authorization: Bearer T``.
    """

    def __init__(self, app: ASGIApp, *, token: str) -> None:
        self.app = app
        self.token = token.encode()

    def _matches(self, presented: str | None) -> bool:
        if not presented:
            return False
        return hmac.compare_digest(presented.encode(), self.token)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        auth = headers.get("authorization", "")
        bearer = auth[7:] if auth[:7].lower() == "bearer " else None
        cookie = SimpleCookie()
        cookie.load(headers.get("cookie", ""))
        from_cookie = cookie[COOKIE].value if COOKIE in cookie else None
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        from_query = query.get("token", [None])[0]
        if self._matches(from_query) and scope["path"] == "/":
            response: Any = RedirectResponse("/", status_code=303)
            response.set_cookie(
                COOKIE, from_query or "", httponly=True, samesite="strict", path="/"
            )
            await response(scope, receive, send)
            return
        if self._matches(bearer) or self._matches(from_cookie):
            await self.app(scope, receive, send)
            return
        refused = PlainTextResponse(
            "401: this console needs its token: open /?token=YOUR-TOKEN once in the browser, "
            "or send Authorization: Bearer YOUR-TOKEN (see docs/console.md)",
            status_code=401,
            headers={"www-authenticate": 'Bearer realm="field-encrypt console"'},
        )
        await refused(scope, receive, send)


def create_app(
    panels: Panels, *, token: str | None = None, allowed_hosts: Sequence[str] | None = None
) -> Starlette:
    """The console for ``panels``' product. ``token``: required on every request when set.

    ``allowed_hosts``: the Host header values answered (default: the loopback names when
    there is no token, any host when there is one).
    """

    async def page(request: Request) -> FileResponse:
        return FileResponse(f"{_static_dir()}/index.html", media_type="text/html")

    async def versions(request: Request) -> JSONResponse:
        return JSONResponse(await run_in_threadpool(panels.versions))

    async def runs(request: Request) -> JSONResponse:
        return JSONResponse(await run_in_threadpool(panels.runs))

    async def gate(request: Request) -> JSONResponse:
        return JSONResponse(await run_in_threadpool(panels.gate))

    async def audit(request: Request) -> JSONResponse:
        types = request.query_params.getlist("type")
        try:
            limit = int(request.query_params.get("limit", "50"))
        except ValueError:
            return JSONResponse({"error": "limit must be a whole number"}, status_code=400)
        return JSONResponse(await run_in_threadpool(panels.audit, types, limit))

    async def rotation(request: Request) -> JSONResponse:
        return JSONResponse(await run_in_threadpool(panels.rotation))

    async def failed(request: Request, exc: Exception) -> JSONResponse:
        # Only FieldEncryptError reaches here (registered for it): its message names
        # what is wrong and never holds key material.
        return JSONResponse({"error": f"{type(exc).__name__}: {exc}"}, status_code=503)

    routes = [
        Route("/", page, methods=["GET"]),
        Route("/api/versions", versions, methods=["GET"]),
        Route("/api/runs", runs, methods=["GET"]),
        Route("/api/gate", gate, methods=["GET"]),
        Route("/api/audit", audit, methods=["GET"]),
        Route("/api/rotation", rotation, methods=["GET"]),
        Mount("/static", app=StaticFiles(directory=_static_dir()), name="static"),
    ]
    hosts = list(allowed_hosts) if allowed_hosts is not None else None
    if hosts is None and token is None:
        hosts = list(LOOPBACK_HOSTS)
    middleware = [Middleware(SecurityHeaders)]
    if hosts is not None:
        middleware.append(Middleware(HostCheck, hosts=hosts))
    if token is not None:
        middleware.append(Middleware(TokenGate, token=token))
    return Starlette(
        routes=routes,
        middleware=middleware,
        exception_handlers={FieldEncryptError: failed},
    )
