"""The sample product on a SQLite file with any provider object, for the reliability suites.

``open_runtime`` builds it in-process around a provider a test made (a real Key Vault or
KMS provider against the local servers, say). ``product`` is the same as a registered
product, so the real CLI can be driven in-process (``--product
tests.reliability.remote:product``): it opens whatever :data:`OPENERS` holds last.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from field_encrypt import DekCache, FieldEncryptor, KeyProvider, load_settings
from field_encrypt.backends.sqlite.db import SqliteDatabase
from field_encrypt.backends.sqlite.dek_store import SqliteDekStore
from field_encrypt.backends.sqlite.documents import SqliteDocumentStore
from field_encrypt.config import Settings
from field_encrypt.products import Product, ProductRuntime
from tests.support.sample_product import COLLECTIONS, NAME


def open_runtime(
    path: Path, provider: KeyProvider, *, busy_timeout_ms: int = 10_000, cache_ttl: float = 300.0
) -> ProductRuntime:
    """The sample product on the SQLite file ``path``, wrapping its DEKs with ``provider``."""
    database = SqliteDatabase(path, busy_timeout_ms=busy_timeout_ms)
    store = SqliteDekStore(database, product=NAME)
    encryptor = FieldEncryptor(
        product=NAME,
        provider=provider,
        store=store,
        collections=COLLECTIONS,
        cache=DekCache(ttl_seconds=cache_ttl),
    )
    return ProductRuntime(
        settings=load_settings({}),
        provider=provider,
        dek_store=store,
        encryptor=encryptor,
        documents={name: SqliteDocumentStore(database, collection=name) for name in COLLECTIONS},
        database=database,
        resources=[database],
    )


OPENERS: list[Callable[[Settings], ProductRuntime]] = []


def _open(settings: Settings) -> ProductRuntime:
    return OPENERS[-1](settings)


product = Product(name=NAME, collections=COLLECTIONS, open=_open)
