"""``create_app``: the NoteLett FastAPI application, built from settings.

Everything is opened and checked here, at construction: a bad setting fails start-up,
not the first request.
"""

from __future__ import annotations

import datetime as dt
import functools
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

import field_encrypt
import field_encrypt.metrics
from field_encrypt.audit_delivery import AuditDelivery, Backoff, HttpDestination
from field_encrypt.runtime import start_background
from field_encrypt.usage import dek_counts
from notelett.auth import verifier_from_settings
from notelett.backend import Backend, open_backend
from notelett.cursors import CursorCodec
from notelett.deps import AppState
from notelett.errors import NoteLettError, handle_error
from notelett.metrics import Metrics, MetricsMiddleware
from notelett.middleware import BodyLimitMiddleware, RequestIdMiddleware, RequestTargetMiddleware
from notelett.openapi import openapi_document
from notelett.readiness import ProviderCheck
from notelett.routes import diagnostics, notes
from notelett.secret_checks import check_secret_strength
from notelett.service import NotesService
from notelett.settings import NoteLettSettings, hs256_secret, load_notelett_settings
from notelett.tracing import TracingMiddleware, add_trace_ids
from notelett.writes import WriteGate

log = logging.getLogger("notelett")

DESCRIPTION = """\
Notes whose `title` and `body` are field-encrypted at rest (envelope encryption, one DEK
per note). Authenticate with `Authorization: Bearer <JWT>`. Every error answers with the
`Error` shape; a note or workspace that is not yours answers exactly like one that does
not exist.
"""


def _audit_delivery(settings: NoteLettSettings, backend: Backend) -> AuditDelivery | None:
    """The background delivery of the audit trail, when ``NOTELETT_AUDIT_DELIVERY_URL`` is set."""
    if not settings.audit_delivery_url or backend.runtime.audit is None:
        return None
    token = settings.audit_delivery_token
    destination = HttpDestination(
        settings.audit_delivery_url, token=token.get_secret_value() if token else None
    )
    from field_encrypt.audit_outbox import FOLLOW_GRACE_SECONDS, reconcile

    runtime = backend.runtime
    return AuditDelivery(
        runtime.audit,  # type: ignore[arg-type]
        destination,
        backoff=Backoff(max_attempts=None),
        reconcile=lambda: reconcile(runtime, min_age=FOLLOW_GRACE_SECONDS),
    )


def create_app(
    settings: NoteLettSettings | None = None,
    *,
    encryption: field_encrypt.Settings | None = None,
    backend: Backend | None = None,
    clock: Callable[[], dt.datetime] | None = None,
) -> FastAPI:
    """The app. ``backend`` defaults to one opened from ``settings`` and ``encryption``
    (``NOTELETT_*`` and ``FIELD_ENCRYPT_*`` from the environment when not given); an app
    that opened its backend closes it on shutdown."""
    settings = settings if settings is not None else load_notelett_settings()
    owns_backend = backend is None
    if backend is None:
        encryption = encryption if encryption is not None else field_encrypt.load_settings()
        backend = open_backend(encryption, settings)
    verifier = verifier_from_settings(settings)
    runtime = backend.runtime
    key_state = field_encrypt.metrics.KeyStateCollector(
        product=runtime.encryptor.product,
        provider=runtime.provider,
        counts=functools.partial(dek_counts, runtime),
    )
    metrics = Metrics(backend.encryptor.cache, key_state=key_state)
    service = NotesService(
        encryptor=backend.encryptor,
        notes=backend.notes,
        directory=backend.directory,
        clock=clock,
        on_decrypt_failure=metrics.decrypt_failures.inc,
        dek_version=backend.dek_version,
        legacy_binding=settings.legacy_note_binding,
        tags=backend.tags,
    )
    if settings.legacy_note_binding:
        log.warning(
            "NOTELETT_LEGACY_NOTE_BINDING is on: notes not yet bound to their workspace are "
            "read too; run `notelett rebind`, then turn it off"
        )
    state = AppState(
        settings=settings,
        backend=backend,
        service=service,
        verifier=verifier,
        metrics=metrics,
        cursors=cursor_codec(settings),
        provider_check=ProviderCheck(
            backend.provider, interval_seconds=settings.readiness_interval_seconds
        ),
        writes=WriteGate(
            slots=settings.max_concurrent_writes, wait_seconds=settings.write_wait_seconds
        ),
    )

    delivery = _audit_delivery(settings, backend)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # a serving process is long-running: it watches the key-state epoch, so a version
        # disabled anywhere leaves its DEK cache within one poll (field_encrypt.key_epoch)
        await run_in_threadpool(start_background, backend.runtime, watch=True)
        finished = await run_in_threadpool(service.finish_deletes)
        if finished:
            log.info("completed %d interrupted note deletes", finished)
        if delivery is not None:
            delivery.start(interval=settings.audit_delivery_interval_seconds)
        yield
        if delivery is not None:
            await run_in_threadpool(delivery.stop)
        if owns_backend:
            backend.close()

    app = FastAPI(
        title="NoteLett",
        version="1.0.0",
        description=DESCRIPTION,
        lifespan=lifespan,
        redirect_slashes=False,  # the middleware drops a trailing slash: no redirect, no Host
    )
    app.openapi = lambda: openapi_document(app)  # type: ignore[method-assign]
    app.state.notelett = state
    for error in (
        NoteLettError,
        field_encrypt.FieldEncryptError,
        RequestValidationError,
        StarletteHTTPException,
        Exception,
    ):
        app.add_exception_handler(error, handle_error)
    app.include_router(notes.router)
    app.include_router(diagnostics.router)
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)
    app.add_middleware(RequestTargetMiddleware)
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    app.add_middleware(TracingMiddleware)
    app.add_middleware(RequestIdMiddleware)
    add_trace_ids()
    return app


def cursor_codec(settings: NoteLettSettings) -> CursorCodec:
    """The cursor codec: keyed by the cursor secret, else the HS256 secret, else random."""
    if settings.cursor_secret is not None:
        secret = settings.cursor_secret.get_secret_value().encode()
        check_secret_strength(secret, setting="NOTELETT_CURSOR_SECRET", dev_mode=settings.dev_mode)
        return CursorCodec.from_secret(secret)
    if settings.jwt_algorithm == "HS256":
        return CursorCodec.from_secret(hs256_secret(settings))
    return CursorCodec.ephemeral()
