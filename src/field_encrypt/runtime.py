"""Open a product's runtime: provider, dek_store, documents, audit trail and encryptor.

:func:`open_runtime` picks SQLite, PostgreSQL or Cosmos DB from ``FIELD_ENCRYPT_DATABASE``;
:func:`open_sqlite_runtime` is the SQLite case, kept for callers that want only that. The
audit trail lives in the same database, whichever it is (``backends.registry.open_audit_trail``).
A runtime starts no thread of its own, except the lazy rewrapper when that is switched on.
A long-running process (the NoteLett service, ``field-encrypt console``, the scheduled
``field-encrypt rotate``) calls :func:`start_background` with ``watch=True`` to watch the
product's key-state epoch (``field_encrypt.key_epoch``) until the runtime is closed; a
one-shot command has no cache worth keeping fresh and starts no watcher.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

from field_encrypt.audit import AuditTrail
from field_encrypt.backends.base import DekStore
from field_encrypt.backends.registry import (
    database_kind,
    open_audit_trail,
    open_database,
    open_dek_store,
    open_document_store,
    open_kek_store,
    sqlite_path,
)
from field_encrypt.backends.sqlite.db import SqliteDatabase
from field_encrypt.blind_index import IndexedField
from field_encrypt.bootstrap import (
    build_key_layout,
    build_provider,
    configured_encryptor,
    layered_provider,
)
from field_encrypt.config import Settings
from field_encrypt.key_epoch import watch_key_state
from field_encrypt.products import ProductRuntime
from field_encrypt.providers.base import KeyProvider
from field_encrypt.providers.kek_tier import KekTierProvider
from field_encrypt.providers.observed import observed


def open_sqlite_runtime(
    settings: Settings,
    *,
    product: str,
    collections: Mapping[str, Sequence[str]],
    indexed: Sequence[IndexedField] = (),
) -> ProductRuntime:
    """Provider from settings; dek_store, kek_store, JSON documents and audit trail in the
    settings' SQLite file. With ``FIELD_ENCRYPT_KEY_LAYOUT=kek`` the provider is the KEK
    tier over the MEK."""
    return _assemble(
        settings,
        lambda: SqliteDatabase(sqlite_path(settings), create=settings.create_missing),
        product=product,
        collections=collections,
        indexed=indexed,
    )


def open_runtime(
    settings: Settings,
    *,
    product: str,
    collections: Mapping[str, Sequence[str]],
    indexed: Sequence[IndexedField] = (),
) -> ProductRuntime:
    """Provider from settings; dek_store, kek_store and JSON documents in the database
    settings name (the provider is the KEK tier with ``FIELD_ENCRYPT_KEY_LAYOUT=kek``).

    ``runtime.database`` is the shared database object (``SqliteDatabase``,
    ``PostgresDatabase`` or ``CosmosDatabase``), for the ledger; ``runtime.audit`` is the
    product's audit trail in it.
    """
    if database_kind(settings.database) == "sqlite":
        return open_sqlite_runtime(
            settings, product=product, collections=collections, indexed=indexed
        )
    return _assemble(
        settings,
        lambda: open_database(settings),
        product=product,
        collections=collections,
        indexed=indexed,
    )


class ProductKeys(NamedTuple):
    """A product's DEK store, KEK tier (``None`` in the direct layout), the provider that
    wraps its DEKs (the tier, else the MEK's) and its audit trail."""

    store: DekStore
    tier: KekTierProvider | None
    provider: KeyProvider
    trail: AuditTrail


def open_keys(database: Any, settings: Settings, mek: KeyProvider, *, product: str) -> ProductKeys:
    """A product's :class:`ProductKeys` in ``database`` (the tier's kek_store beside the
    DEK store)."""
    store = open_dek_store(database, product=product)
    tier = build_key_layout(
        mek, settings, open_kek_store(database, product=product), product=product
    )
    trail = open_audit_trail(
        database,
        product=product,
        sink=settings.audit_sink,
        oncall_webhook=settings.oncall_webhook,
        oncall_format=settings.oncall_format,
    )
    return ProductKeys(store, tier, layered_provider(mek, tier, trail), trail)


def _assemble(
    settings: Settings,
    open_db: Callable[[], Any],
    *,
    product: str,
    collections: Mapping[str, Sequence[str]],
    indexed: Sequence[IndexedField],
) -> ProductRuntime:
    """The provider first (a bad setting opens nothing), then the database and the stores in
    it (closed again if any fails), the encryptor, and the runtime (its lazy rewrapper
    started, if on; no key-state watch: see :func:`start_background`)."""
    mek = observed(build_provider(settings))  # every provider call measured
    database = open_db()
    try:
        store, tier, provider, trail = open_keys(database, settings, mek, product=product)
        documents = {name: open_document_store(database, collection=name) for name in collections}
    except BaseException:
        database.close()
        raise
    encryptor = configured_encryptor(
        settings,
        product=product,
        provider=provider,
        store=store,
        collections=collections,
        audit=trail,
    )
    return _started(
        ProductRuntime(
            settings=settings,
            provider=provider,
            dek_store=store,
            encryptor=encryptor,
            documents=documents,
            database=database,
            resources=[database],
            kek_tier=tier,
            audit=trail,
            indexed=tuple(indexed),
        )
    )


def _started(runtime: ProductRuntime) -> ProductRuntime:
    """``runtime`` with what every runtime runs started (:func:`start_background`)."""
    start_background(runtime, watch=False)
    return runtime


def start_background(runtime: ProductRuntime, *, watch: bool) -> None:
    """Start what a runtime runs beside its reads, each closed with it: the lazy rewrapper
    (``field_encrypt.lazy_rewrap``) if it is on and, with ``watch``, the key-state watch
    (``field_encrypt.key_epoch``), a thread polling the epoch once per
    ``FIELD_ENCRYPT_KEY_STATE_POLL_SECONDS``: for long-running processes only (a service, the
    console, the scheduled rotation), whose DEK cache must learn of a revocation. Calling it
    again starts nothing twice. On failure the runtime is closed."""
    try:
        if watch and runtime.key_epoch is None:
            watch_key_state(runtime)
        if runtime.encryptor.rewrapper is None and runtime.settings.lazy_rewrap:
            from field_encrypt.lazy_rewrap import start_lazy_rewrap  # only when on

            start_lazy_rewrap(runtime)
    except BaseException:
        runtime.close()
        raise
