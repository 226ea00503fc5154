"""The one place that turns ``FIELD_ENCRYPT_DATABASE`` into a backend, and every store inside it.

The DEK and KEK stores, documents, audit trail, run ledger and key lifecycle of each backend
live in :mod:`field_encrypt.backends.sqlite`, :mod:`~field_encrypt.backends.postgres` and
:mod:`~field_encrypt.backends.cosmos`; the engine, the audit chain and the CLI reach them
only through the functions here.

``FIELD_ENCRYPT_DATABASE`` takes one of three forms:

- a file path or ``sqlite:///path``: SQLite, the embedded default;
- ``postgresql://[user@]host[:port]/dbname[?...]``: PostgreSQL (see
  :mod:`field_encrypt.backends.postgres.db` for the pool and session parameters);
- ``cosmos://host[:port]/?database=NAME[&...]``: Azure Cosmos DB, keyed by
  ``FIELD_ENCRYPT_COSMOS_KEY`` or signed in with Microsoft Entra ID (see
  :mod:`field_encrypt.backends.cosmos.db`).

One database object per process holds the connections (a pool, a client); every store of the
product shares it, and closing it releases them. Each backend is imported only when its kind
is in use, so the SQLite path never imports SQLAlchemy or the Azure SDK.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from field_encrypt.backends.base import DekStore, KekStore, KeyStateStore
from field_encrypt.config import Settings
from field_encrypt.documents import DocumentStore
from field_encrypt.errors import ConfigurationError

if TYPE_CHECKING:
    from field_encrypt.audit import AuditTrail
    from field_encrypt.rotation.ledger import RunLedger
    from field_encrypt.rotation.lifecycle import LifecycleStore

DatabaseKind = Literal["sqlite", "postgres", "cosmos"]

_POSTGRES_SCHEMES = ("postgresql", "postgres", "postgresql+psycopg")


def database_kind(url: str) -> DatabaseKind:
    """``"sqlite"``, ``"postgres"`` or ``"cosmos"``; ``ConfigurationError`` for anything else."""
    if "://" not in url:
        return "sqlite"
    scheme = url.split("://", 1)[0].lower()
    if scheme == "sqlite":
        return "sqlite"
    if scheme in _POSTGRES_SCHEMES:
        return "postgres"
    if scheme == "cosmos":
        return "cosmos"
    raise ConfigurationError(
        f"unsupported FIELD_ENCRYPT_DATABASE scheme {scheme!r}: use a SQLite path, "
        "postgresql://... or cosmos://..."
    )


def sqlite_path(settings: Settings) -> str:
    """The SQLite file ``settings.database`` names (a path or a ``sqlite:///`` URL)."""
    if "://" in settings.database and not settings.database.startswith("sqlite://"):
        raise ConfigurationError(
            f"unsupported FIELD_ENCRYPT_DATABASE scheme: {settings.database.split('://')[0]!r}"
        )
    return settings.database.removeprefix("sqlite:///").removeprefix("sqlite://")


def open_database(settings: Settings) -> Any:
    """The database ``settings.database`` names, connected (a pool or client, not yet used)."""
    match database_kind(settings.database):
        case "sqlite":
            from field_encrypt.backends.sqlite.db import SqliteDatabase

            return SqliteDatabase(sqlite_path(settings), create=settings.create_missing)
        case "postgres":
            from field_encrypt.backends.postgres.db import PostgresDatabase

            return PostgresDatabase(settings.database)
        case "cosmos":
            from field_encrypt.backends.cosmos.db import CosmosDatabase

            key = settings.cosmos_key.get_secret_value() if settings.cosmos_key else None
            return CosmosDatabase.connect(settings.database, key=key)


def open_dek_store(database: Any, *, product: str) -> DekStore:
    """The product's dek_store in ``database`` (from :func:`open_database`)."""
    match database_kind_of(database):
        case "sqlite":
            from field_encrypt.backends.sqlite.dek_store import SqliteDekStore

            return SqliteDekStore(database, product=product)
        case "postgres":
            from field_encrypt.backends.postgres.dek_store import PostgresDekStore

            return PostgresDekStore(database, product=product)
        case "cosmos":
            from field_encrypt.backends.cosmos.dek_store import CosmosDekStore

            return CosmosDekStore(database, product=product)


def open_kek_store(database: Any, *, product: str) -> KekStore:
    """The product's kek_store (the KEK tier's KEKs) in ``database``."""
    match database_kind_of(database):
        case "sqlite":
            from field_encrypt.backends.sqlite.kek_store import SqliteKekStore

            return SqliteKekStore(database, product=product)
        case "postgres":
            from field_encrypt.backends.postgres.kek_store import PostgresKekStore

            return PostgresKekStore(database, product=product)
        case "cosmos":
            from field_encrypt.backends.cosmos.kek_store import CosmosKekStore

            return CosmosKekStore(database, product=product)


def open_key_state_store(database: Any, *, product: str) -> KeyStateStore:
    """The product's key-state epoch (one record) in ``database``."""
    match database_kind_of(database):
        case "sqlite":
            from field_encrypt.backends.sqlite.key_state import SqliteKeyStateStore

            return SqliteKeyStateStore(database, product=product)
        case "postgres":
            from field_encrypt.backends.postgres.key_state import PostgresKeyStateStore

            return PostgresKeyStateStore(database, product=product)
        case "cosmos":
            from field_encrypt.backends.cosmos.key_state import CosmosKeyStateStore

            return CosmosKeyStateStore(database, product=product)


def open_document_store(database: Any, *, collection: str) -> DocumentStore:
    """The generic JSON document store of ``collection`` in ``database``."""
    match database_kind_of(database):
        case "sqlite":
            from field_encrypt.backends.sqlite.documents import SqliteDocumentStore

            return SqliteDocumentStore(database, collection=collection)
        case "postgres":
            from field_encrypt.backends.postgres.documents import PostgresDocumentStore

            return PostgresDocumentStore(database, collection=collection)
        case "cosmos":
            from field_encrypt.backends.cosmos.documents import CosmosDocumentStore

            return CosmosDocumentStore(database, collection=collection)


def database_kind_of(database: Any) -> DatabaseKind:
    """The kind of a database object (from :func:`open_database`), importing no SDK.

    ``TypeError`` if it is none of them.
    """
    kinds: dict[str, DatabaseKind] = {
        "field_encrypt.backends.sqlite.db.SqliteDatabase": "sqlite",
        "field_encrypt.backends.postgres.db.PostgresDatabase": "postgres",
        "field_encrypt.backends.cosmos.db.CosmosDatabase": "cosmos",
    }
    for cls in type(database).__mro__:
        kind = kinds.get(f"{cls.__module__}.{cls.__qualname__}")
        if kind is not None:
            return kind
    raise TypeError(f"not a field-encrypt database: {database!r}")


def open_audit_trail(
    database: object,
    *,
    product: str,
    sink: str | None = None,
    oncall_webhook: str = "",
    oncall_format: str = "slack",
) -> AuditTrail:
    """The product's trail in its own database; ``sink`` is ``FIELD_ENCRYPT_AUDIT_SINK``;
    ``oncall_webhook``/``oncall_format`` are ``FIELD_ENCRYPT_ONCALL_*`` (notices on rotation
    events, see :mod:`field_encrypt.oncall`).

    ``database`` is a ``SqliteDatabase``, ``PostgresDatabase`` or ``CosmosDatabase`` (from
    :func:`open_database`); anything else is a ``ConfigurationError``.
    """
    from field_encrypt.audit import AuditSink, sink_from_setting

    sinks: list[AuditSink] = [s for s in (sink_from_setting(sink),) if s is not None]
    if oncall_webhook:
        from field_encrypt.oncall import OnCallSink, notifier_from_settings

        notifier = notifier_from_settings(oncall_webhook, oncall_format)
        assert notifier is not None
        sinks.append(OnCallSink(notifier, product=product))
    try:
        kind = database_kind_of(database)
    except TypeError:
        raise ConfigurationError(
            f"no audit trail for a {type(database).__name__} database"
        ) from None
    match kind:
        case "sqlite":
            from field_encrypt.backends.sqlite.audit import SqliteAuditTrail
            from field_encrypt.backends.sqlite.db import SqliteDatabase

            assert isinstance(database, SqliteDatabase)
            return SqliteAuditTrail(database, product=product, sinks=sinks)
        case "postgres":
            from field_encrypt.backends.postgres.audit import PostgresAuditTrail
            from field_encrypt.backends.postgres.db import PostgresDatabase

            assert isinstance(database, PostgresDatabase)
            return PostgresAuditTrail(database, product=product, sinks=sinks)
        case "cosmos":
            from field_encrypt.backends.cosmos.audit import CosmosAuditTrail
            from field_encrypt.backends.cosmos.db import CosmosDatabase

            assert isinstance(database, CosmosDatabase)
            return CosmosAuditTrail(database, product=product, sinks=sinks)


def open_run_ledger(database: Any) -> RunLedger:
    """The run ledger in ``database`` (from :func:`open_database`).

    SQLite, PostgreSQL or Cosmos DB: every worker of a run, on any machine, must reach the
    same database, which is all they share.
    """
    try:
        kind = database_kind_of(database)
    except TypeError:
        raise ConfigurationError(
            f"no run ledger for a {type(database).__name__} database in this build"
        ) from None
    if kind == "postgres":
        from field_encrypt.backends.postgres.ledger import PostgresRunLedger

        return PostgresRunLedger(database)
    if kind == "cosmos":
        from field_encrypt.backends.cosmos.ledger import CosmosRunLedger

        return CosmosRunLedger(database)
    from field_encrypt.backends.sqlite.ledger import SqliteRunLedger

    return SqliteRunLedger(database)


def open_lifecycle_store(database: Any) -> LifecycleStore:
    """Version notes and the rotation state in ``database`` (from :func:`open_database`)."""
    try:
        kind = database_kind_of(database)
    except TypeError:
        raise ConfigurationError(
            f"no key lifecycle store for a {type(database).__name__} database in this build"
        ) from None
    if kind == "postgres":
        from field_encrypt.backends.postgres.lifecycle import PostgresLifecycleStore

        return PostgresLifecycleStore(database)
    if kind == "cosmos":
        from field_encrypt.backends.cosmos.lifecycle import CosmosLifecycleStore

        return CosmosLifecycleStore(database)
    from field_encrypt.backends.sqlite.lifecycle import SqliteLifecycleStore

    return SqliteLifecycleStore(database)
