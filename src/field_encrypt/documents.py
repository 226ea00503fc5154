"""The DocumentStore protocol: how the rotation tools reach a product's encrypted documents.

Applications keep their documents wherever they like; to let ``re-encrypt``, the
``encrypt`` backfill, ``decrypt`` and ``verify`` walk them, a product exposes each
encrypted collection through this small protocol. Writes are compare-and-swap on the
document's revision, so a migration never overwrites a concurrent application write.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from field_encrypt.backends.sharding import check_shard


@dataclass(frozen=True, slots=True, kw_only=True)
class StoredDocument:
    """A document as stored: encrypted fields hold tokens (or plaintext, before backfill).

    ``dek_id`` is the DEK the document's fields are sealed under (``None`` if plaintext);
    ``revision`` is the compare-and-swap token.
    """

    id: str
    fields: dict[str, Any]
    dek_id: str | None
    revision: str


@dataclass(frozen=True, slots=True, kw_only=True)
class DocumentPage:
    """One page of a document scan; ``cursor`` continues it, ``None`` at the end."""

    documents: list[StoredDocument]
    cursor: str | None


@dataclass(frozen=True, slots=True)
class DocumentWrite:
    """One write of :meth:`BatchDocumentStore.replace_many`: ``replace_fields``'s arguments."""

    document: StoredDocument
    fields: dict[str, Any]
    dek_id: str | None


@runtime_checkable
class DocumentStore(Protocol):
    """One collection of a product's documents, as the migration tools see it."""

    collection: str

    def scan(
        self,
        *,
        cursor: str | None = None,
        limit: int = 500,
        shard: tuple[int, int] | None = None,
    ) -> DocumentPage:
        """Documents in a stable order after ``cursor`` (keyset pagination)."""
        ...

    def get(self, document_id: str) -> StoredDocument:
        """One document; ``NotFoundError`` if it does not exist."""
        ...

    def replace_fields(
        self, document: StoredDocument, fields: dict[str, Any], dek_id: str | None
    ) -> StoredDocument:
        """Write new stored field values and dekId, only if unchanged since read.

        Raises ``ConcurrentUpdateError`` if the revision moved, ``NotFoundError`` if the
        document was deleted meanwhile.
        """
        ...

    def count(self) -> int:
        """How many documents the collection holds."""
        ...


class ScannedStore:
    """:meth:`DocumentStore.scan` for an implementation: the shard checked once, then the
    store's :meth:`_scan`."""

    def scan(
        self,
        *,
        cursor: str | None = None,
        limit: int = 500,
        shard: tuple[int, int] | None = None,
    ) -> DocumentPage:
        """Documents in a stable order after ``cursor`` (keyset pagination)."""
        return self._scan(cursor, limit, None if shard is None else check_shard(shard))

    def _scan(self, cursor: str | None, limit: int, shard: tuple[int, int] | None) -> DocumentPage:
        """One page; ``shard`` (index, count) is a valid part of a split, or ``None``."""
        raise NotImplementedError


@runtime_checkable
class BatchDocumentStore(DocumentStore, Protocol):
    """A DocumentStore that can also write a page of documents at once (optional).

    The generic stores (SQLite, PostgreSQL, Cosmos DB) have it; the document modes use it
    when a store has it and write one document at a time otherwise.
    """

    def replace_many(self, writes: Sequence[DocumentWrite]) -> list[str]:
        """Each write as :meth:`~DocumentStore.replace_fields` would make it (compare-and-swap
        on the read revision), in one batch; the ids of the documents whose write lost (they
        changed or were deleted since read), in no particular order.

        On SQLite and PostgreSQL the batch is one transaction; on Cosmos DB it is item by item.
        """
        ...


def pages(store: DocumentStore, *, limit: int = 1000) -> Iterator[DocumentPage]:
    """Every page of a whole scan of ``store``, ``limit`` documents a page."""
    cursor: str | None = None
    while True:
        page = store.scan(cursor=cursor, limit=limit)
        yield page
        if page.cursor is None:
            return
        cursor = page.cursor
