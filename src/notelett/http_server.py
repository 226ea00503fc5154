"""Serving the app with uvicorn, bounded against slow or oversized request headers.

uvicorn's default parser (httptools, when installed) keeps reading a request's headers
for as long as they come, and nothing times a connection out while its headers are
being sent: one 64 MB header grew the server by 100 MB, and slowloris connections stayed
open for as long as they trickled. NoteLett therefore serves with the h11 parser and:

- ``NOTELETT_MAX_HEADER_BYTES`` (h11's ``max_incomplete_event_size``): a request line
  plus headers above it is answered ``431`` and the connection closed, after reading at
  most that much plus one socket read;
- ``NOTELETT_HEADER_TIMEOUT_SECONDS``: a connection whose request headers are not
  complete this long after it opened (or after the first byte of a kept-alive
  connection's next request) is closed;
- ``NOTELETT_KEEP_ALIVE_SECONDS``: an idle kept-alive connection is closed;
- ``NOTELETT_MAX_CONNECTIONS`` (uvicorn's ``limit_concurrency``): when that many
  connections are open (the new one included) or requests running, a new request is
  answered 503 at once.
"""

from __future__ import annotations

import asyncio
from typing import Any, ClassVar

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from notelett.settings import NoteLettSettings


class BoundedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol plus a header-read timeout and a 431 for oversized headers."""

    header_timeout: ClassVar[float] = 10.0
    max_header_bytes: ClassVar[int] = 16_384

    _header_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_header_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_header_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.conn.their_state is h11.IDLE:
            self._arm_header_timer()  # still reading a request's headers
        else:
            self._cancel_header_timer()

    def send_400_response(self, msg: str) -> None:
        if len(self.conn.trailing_data[0]) <= self.max_header_bytes:
            super().send_400_response(msg)
            return
        event = h11.Response(
            status_code=431,
            headers=[(b"content-type", b"text/plain; charset=utf-8"), (b"connection", b"close")],
            reason=b"Request Header Fields Too Large",
        )
        for out in (event, h11.Data(data=b"request header fields too large"), h11.EndOfMessage()):
            self.transport.write(self.conn.send(out) or b"")
        self.transport.close()

    def _arm_header_timer(self) -> None:
        if self._header_timer is None:
            self._header_timer = self.loop.call_later(self.header_timeout, self._headers_too_slow)

    def _cancel_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_too_slow(self) -> None:
        self._header_timer = None
        if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
            self.transport.close()


def protocol_for(settings: NoteLettSettings) -> type[BoundedH11Protocol]:
    """The protocol class with ``settings``' bounds."""
    return type(
        "NoteLettH11Protocol",
        (BoundedH11Protocol,),
        {
            "header_timeout": settings.header_timeout_seconds,
            "max_header_bytes": settings.max_header_bytes,
        },
    )


def uvicorn_options(settings: NoteLettSettings) -> dict[str, Any]:
    """The keyword arguments of ``uvicorn.run`` that bound connections and headers."""
    return {
        "http": protocol_for(settings),
        "h11_max_incomplete_event_size": settings.max_header_bytes,
        "timeout_keep_alive": settings.keep_alive_seconds,
        "limit_concurrency": settings.max_connections,
    }
