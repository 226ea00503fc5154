"""FastAPI dependencies, as ``Annotated`` aliases the routes use as parameter types."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request, Security
from fastapi.concurrency import run_in_threadpool
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from notelett.auth import Principal, TokenVerifier
from notelett.backend import Backend
from notelett.cursors import CursorCodec
from notelett.errors import AuthenticationError
from notelett.metrics import Metrics
from notelett.readiness import ProviderCheck
from notelett.service import NotesService
from notelett.settings import NoteLettSettings
from notelett.writes import WriteGate


@dataclass(kw_only=True)
class AppState:
    """What one app instance holds (``app.state.notelett``)."""

    settings: NoteLettSettings
    backend: Backend
    service: NotesService
    verifier: TokenVerifier
    metrics: Metrics
    cursors: CursorCodec
    provider_check: ProviderCheck
    writes: WriteGate


_bearer = HTTPBearer(
    auto_error=False,
    bearerFormat="JWT",
    description="A JWT from the configured issuer (HS256 in development, RS256 in production).",
)


async def _state(request: Request) -> AppState:
    state: AppState = request.app.state.notelett
    return state


State = Annotated[AppState, Depends(_state)]


async def _service(state: State) -> NotesService:
    return state.service


async def _cursors(state: State) -> CursorCodec:
    return state.cursors


async def _principal(
    state: State, credentials: Annotated[HTTPAuthorizationCredentials | None, Security(_bearer)]
) -> Principal:
    if credentials is None or not credentials.credentials:
        raise AuthenticationError()
    if state.verifier.remote:
        return await run_in_threadpool(state.verifier.verify, credentials.credentials)
    return state.verifier.verify(credentials.credentials)


Service = Annotated[NotesService, Depends(_service)]
CurrentUser = Annotated[Principal, Depends(_principal)]
Cursors = Annotated[CursorCodec, Depends(_cursors)]


async def _write_slot(state: State) -> AsyncIterator[None]:
    async with state.writes.slot():
        yield


WriteSlot = Depends(_write_slot)
"""A write route's slot in the write gate (``dependencies=[WriteSlot]``)."""
