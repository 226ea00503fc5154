"""Open NoteLett's parts from settings: provider, dek_store, encryptor and repositories.

With ``FIELD_ENCRYPT_KEY_LAYOUT=kek`` the provider is the KEK tier over the MEK, its
kek_store in the same database. Everything shares one database (``NOTELETT_DATABASE``,
else ``FIELD_ENCRYPT_DATABASE``, else ``var/notelett.db``): the dek_store, the kek_store,
the notes, the directory, the rotation ledger and the audit trail, so the ``field-encrypt``
CLI and the service always agree on where things are (and a note's DELETE records
``dek.shredded`` in the same trail as a rotation). The database is SQLite, PostgreSQL or
Cosmos DB, by the URL's form (docs/stores.md), and the audit trail is kept in it whichever
it is.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from field_encrypt import FieldEncryptor, KeyProvider, Settings, build_provider
from field_encrypt.backends.registry import (
    database_kind,
    open_database,
)
from field_encrypt.bootstrap import configured_encryptor
from field_encrypt.products import ProductRuntime
from field_encrypt.providers.observed import observed
from field_encrypt.runtime import open_keys, start_background
from notelett.binding import COLLECTION, ENCRYPTED_FIELDS
from notelett.documents import NotesDocumentStore
from notelett.repositories.base import NotesRepository, WorkspaceDirectory
from notelett.secret_checks import check_private_file
from notelett.settings import NoteLettSettings, database_url
from notelett.tags import INDEXED, TagIndex

PRODUCT = "notelett"
COLLECTIONS = {COLLECTION: list(ENCRYPTED_FIELDS)}


@dataclass(kw_only=True)
class Backend:
    """The product runtime plus NoteLett's own repositories."""

    runtime: ProductRuntime
    notes: NotesRepository
    directory: WorkspaceDirectory
    tags: TagIndex
    """The blind index of tags (:mod:`notelett.tags`), shared by the service and the
    rotation tools' view of the notes."""
    dek_version: Callable[[str], str | None] = lambda _workspace: None
    """The version a workspace's new DEKs are wrapped under (``None``: the provider's
    default); its own KEK with ``NOTELETT_KEK_PER_WORKSPACE``."""

    @property
    def encryptor(self) -> FieldEncryptor:
        return self.runtime.encryptor

    @property
    def provider(self) -> KeyProvider:
        return self.runtime.provider

    def close(self) -> None:
        """Close the database connections."""
        self.runtime.close()


def open_backend(
    encryption: Settings, settings: NoteLettSettings, *, provider: KeyProvider | None = None
) -> Backend:
    """Everything NoteLett needs, opened from the two groups of settings."""
    url = database_url(settings, encryption)
    if provider is None and encryption.key_provider == "local":
        check_private_file(encryption.keyring, what="FIELD_ENCRYPT_KEYRING")
    mek = provider if provider is not None else observed(build_provider(encryption))
    database = open_database(encryption.model_copy(update={"database": url}))
    kind = database_kind(url)
    try:
        dek_store, tier, provider, trail = open_keys(database, encryption, mek, product=PRODUCT)
        notes, directory = _repositories(database, kind)
    except BaseException:
        database.close()
        raise
    encryptor = configured_encryptor(
        encryption,
        product=PRODUCT,
        provider=provider,
        store=dek_store,
        collections=COLLECTIONS,
        audit=trail,
        token_form="binary",
    )
    tags = TagIndex.of(encryptor)
    runtime = ProductRuntime(
        settings=encryption,
        provider=provider,
        dek_store=dek_store,
        encryptor=encryptor,
        documents={COLLECTION: NotesDocumentStore(notes, tags)},
        database=database,
        resources=[database],
        audit=trail,
        kek_tier=tier,
        indexed=INDEXED,
    )
    start_background(runtime, watch=False)  # lazy rewrap, if on; the service watches (app.py)
    per_workspace = tier is not None and tier.layout == "kek" and settings.kek_per_workspace
    return Backend(
        runtime=runtime,
        notes=notes,
        directory=directory,
        tags=tags,
        dek_version=tier.dek_version if per_workspace and tier is not None else lambda _w: None,
    )


def _repositories(database: Any, kind: str) -> tuple[NotesRepository, WorkspaceDirectory]:
    """The notes repository and workspace directory of ``kind`` in ``database``."""
    if kind == "postgres":
        from notelett.repositories.postgres import (
            PostgresNotesRepository,
            PostgresWorkspaceDirectory,
        )

        return PostgresNotesRepository(database), PostgresWorkspaceDirectory(database)
    if kind == "cosmos":
        from notelett.repositories.cosmos import CosmosNotesRepository, CosmosWorkspaceDirectory

        return CosmosNotesRepository(database), CosmosWorkspaceDirectory(database)
    from notelett.repositories.sqlite import SqliteNotesRepository, SqliteWorkspaceDirectory

    return SqliteNotesRepository(database), SqliteWorkspaceDirectory(database)
