"""Which database ``FIELD_ENCRYPT_DATABASE`` names, and the stores inside it.

``FIELD_ENCRYPT_DATABASE`` takes one of three forms:

- a file path or ``sqlite:///path``: SQLite, the embedded default;
- ``postgresql://[user@]host[:port]/dbname[?...]``: PostgreSQL (see
  :mod:`field_encrypt.stores.postgres_db` for the pool and session parameters);
- ``cosmos://host[:port]/?database=NAME[&...]``: Azure Cosmos DB, keyed by
  ``FIELD_ENCRYPT_COSMOS_KEY`` or signed in with Microsoft Entra ID (see
  :mod:`field_encrypt.stores.cosmos_db`).

One database object per process holds the connections (a pool, a client); every store of the
product shares it, and closing it releases them. The SDKs are imported only for the kind in use.
"""

from __future__ import annotations

from typing import Any, Literal

from field_encrypt.config import Settings
from field_encrypt.documents import DocumentStore
from field_encrypt.errors import ConfigurationError
from field_encrypt.stores.base import DekStore
from field_encrypt.stores.kek import KekStore

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


def open_database(settings: Settings) -> Any:
    """The database ``settings.database`` names, connected (a pool or client, not yet used)."""
    match database_kind(settings.database):
        case "sqlite":
            from field_encrypt.bootstrap import sqlite_path
            from field_encrypt.stores.sqlite_db import SqliteDatabase

            return SqliteDatabase(sqlite_path(settings))
        case "postgres":
            from field_encrypt.stores.postgres_db import PostgresDatabase

            return PostgresDatabase(settings.database)
        case "cosmos":
            from field_encrypt.stores.cosmos_db import CosmosDatabase

            key = settings.cosmos_key.get_secret_value() if settings.cosmos_key else None
            return CosmosDatabase.connect(settings.database, key=key)


def open_dek_store(database: Any, *, product: str) -> DekStore:
    """The product's dek_store in ``database`` (from :func:`open_database`)."""
    match database_kind_of(database):
        case "sqlite":
            from field_encrypt.stores.sqlite import SqliteDekStore

            return SqliteDekStore(database, product=product)
        case "postgres":
            from field_encrypt.stores.postgres import PostgresDekStore

            return PostgresDekStore(database, product=product)
        case "cosmos":
            from field_encrypt.stores.cosmos import CosmosDekStore

            return CosmosDekStore(database, product=product)


def open_kek_store(database: Any, *, product: str) -> KekStore:
    """The product's kek_store (the KEK tier's KEKs) in ``database``."""
    match database_kind_of(database):
        case "sqlite":
            from field_encrypt.stores.kek import SqliteKekStore

            return SqliteKekStore(database, product=product)
        case "postgres":
            from field_encrypt.stores.postgres_kek import PostgresKekStore

            return PostgresKekStore(database, product=product)
        case "cosmos":
            from field_encrypt.stores.cosmos_kek import CosmosKekStore

            return CosmosKekStore(database, product=product)


def open_document_store(database: Any, *, collection: str) -> DocumentStore:
    """The generic JSON document store of ``collection`` in ``database``."""
    match database_kind_of(database):
        case "sqlite":
            from field_encrypt.stores.sqlite_documents import SqliteDocumentStore

            return SqliteDocumentStore(database, collection=collection)
        case "postgres":
            from field_encrypt.stores.postgres_documents import PostgresDocumentStore

            return PostgresDocumentStore(database, collection=collection)
        case "cosmos":
            from field_encrypt.stores.cosmos_documents import CosmosDocumentStore

            return CosmosDocumentStore(database, collection=collection)


def database_kind_of(database: Any) -> DatabaseKind:
    """The kind of a database object (from :func:`open_database`), importing no SDK.

    ``TypeError`` if it is none of them.
    """
    kinds: dict[str, DatabaseKind] = {
        "field_encrypt.stores.sqlite_db.SqliteDatabase": "sqlite",
        "field_encrypt.stores.postgres_db.PostgresDatabase": "postgres",
        "field_encrypt.stores.cosmos_db.CosmosDatabase": "cosmos",
    }
    for cls in type(database).__mro__:
        kind = kinds.get(f"{cls.__module__}.{cls.__qualname__}")
        if kind is not None:
            return kind
    raise TypeError(f"not a field-encrypt database: {database!r}")
