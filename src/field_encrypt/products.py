"""Products: what the cross-product CLI rotates.

A product names its encrypted collections and knows how to open its parts (key
provider, dek_store, documents, run ledger) from settings. It registers itself under the
``field_encrypt.products`` entry-point group when its package is installed; ``--product``
takes that name, or a ``module:attribute`` path for products not installed as packages.

The products this distribution ships (NoteLett) are found without scanning the installed
packages' entry points: ``importlib.metadata`` alone costs ~40 ms of every command's
start-up (docs/performance.md). Any other name is looked up in the entry points as before.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from field_encrypt.errors import ConfigurationError

if TYPE_CHECKING:  # annotations only: a command imports what its product's ``open`` needs
    from field_encrypt.audit import AuditTrail
    from field_encrypt.backends.base import DekStore, KeyStateStore
    from field_encrypt.blind_index import IndexedField
    from field_encrypt.config import Settings
    from field_encrypt.documents import DocumentStore
    from field_encrypt.envelope import FieldEncryptor
    from field_encrypt.key_epoch import KeyEpochWatcher
    from field_encrypt.providers.base import KeyProvider
    from field_encrypt.providers.kek_tier import KekTierProvider

ENTRY_POINT_GROUP = "field_encrypt.products"
BUILT_IN = {"notelett": "notelett.product:product"}
"""The products shipped in this distribution, by name: the same targets as its
``field_encrypt.products`` entry points in pyproject.toml (a test keeps them equal)."""


class Closeable(Protocol):
    def close(self) -> None: ...


@dataclass(kw_only=True)
class ProductRuntime:
    """A product's parts, opened: everything a migration or a check needs."""

    settings: Settings
    provider: KeyProvider
    dek_store: DekStore
    encryptor: FieldEncryptor
    documents: Mapping[str, DocumentStore]
    database: Any
    """The product's database handle, for the ledger and the audit trail (store-specific)."""
    resources: list[Closeable] = field(default_factory=list)
    kek_tier: KekTierProvider | None = None
    """The product's KEK tier when it has one (``FIELD_ENCRYPT_KEY_LAYOUT=kek``, or KEKs
    left from it): DEKs' effective MEK versions are their KEKs' (see ``field_encrypt.usage``)."""
    audit: AuditTrail | None = None
    """The product's audit trail (in its database), shared with ``encryptor``; ``None``: none."""
    key_state: KeyStateStore | None = None
    """The product's key-state epoch (``field_encrypt.key_epoch``), once opened."""
    key_epoch: KeyEpochWatcher | None = None
    """What watches it in this process (started by ``key_epoch.watch_key_state``)."""
    indexed: Sequence[IndexedField] = ()
    """The fields with a blind index (``field_encrypt.index_values``): what ``migrate --mode
    reindex``, ``verify`` and ``index-keys retire`` look at."""

    def close(self) -> None:
        """Release connections."""
        for resource in reversed(self.resources):
            resource.close()


@dataclass(frozen=True, slots=True, kw_only=True)
class Product:
    """A product that encrypts fields: its name, collections and how to open it."""

    name: str
    collections: Mapping[str, Sequence[str]]
    open: Callable[[Settings], ProductRuntime]
    """Build the runtime from settings (the product reads its own extra settings itself)."""
    indexed: Sequence[IndexedField] = ()
    """Its blind-indexed fields (each also an encrypted field); ``open`` passes the same
    to its runtime (``open_runtime(..., indexed=...)``)."""


def load_product(name: str) -> Product:
    """The product registered as ``name``, or found at ``module:attribute``."""
    target = BUILT_IN.get(name, name)
    if ":" in target:
        module_name, _, attribute = target.partition(":")
        try:
            found = getattr(importlib.import_module(module_name), attribute)
        except (ImportError, AttributeError) as exc:
            raise ConfigurationError(f"cannot load product {name!r}: {exc}") from None
    else:
        from importlib.metadata import entry_points

        matches = entry_points(group=ENTRY_POINT_GROUP, name=name)
        if not matches:
            known = sorted(ep.name for ep in entry_points(group=ENTRY_POINT_GROUP))
            raise ConfigurationError(
                f"unknown product {name!r}; installed products: {', '.join(known) or 'none'}"
            )
        found = next(iter(matches)).load()
    product = found() if callable(found) and not isinstance(found, Product) else found
    if not isinstance(product, Product):
        raise ConfigurationError(f"{name!r} does not name a field_encrypt Product")
    return product
