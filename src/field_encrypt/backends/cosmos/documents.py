"""A generic Cosmos DB DocumentStore: one container per collection.

The Cosmos DB twin of :mod:`field_encrypt.backends.sqlite.documents`. Items look like
``{"id": ..., "pk": "<2 hex digits>", "fields": {...}, "dekId": ...}``; the container is named
after the collection and partitioned on ``/pk``, one of 256 hash buckets of the document id
(the first byte of its SHA-256, or its first two hex digits if it starts with four), so a
point read needs only the id and ``scan(shard=(i, n))`` reads the partitions ``p % n == i``.
Writes are compare-and-swap on the ETag. Ids must not contain ``/ \\ ? #`` (Cosmos DB rule).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from azure.core import MatchConditions

from field_encrypt.backends.cosmos.db import (
    PARTITIONS,
    CosmosDatabase,
    delete_if_present,
    first_value,
    partition_of,
    scan_partitions,
    translate_errors,
)
from field_encrypt.backends.sharding import bucket_of
from field_encrypt.documents import DocumentPage, DocumentWrite, ScannedStore, StoredDocument
from field_encrypt.errors import AlreadyExistsError, ConcurrentUpdateError, NotFoundError


def partition_key(document_id: str) -> str:
    """The ``/pk`` value of a document's item."""
    return f"{partition_of(bucket_of(document_id)):02x}"


class CosmosDocumentStore(ScannedStore):
    """One collection of JSON documents: a container of the product's Cosmos DB database."""

    def __init__(self, database: CosmosDatabase, *, collection: str) -> None:
        self.database = database
        self.collection = collection
        self.container = database.container(collection)

    def __repr__(self) -> str:
        return f"CosmosDocumentStore({self.database!r}, collection={self.collection!r})"

    def insert(
        self, document_id: str, fields: dict[str, Any], dek_id: str | None
    ) -> StoredDocument:
        """Add a document (for applications and tests; migrations only replace)."""
        item = {
            "id": document_id,
            "pk": partition_key(document_id),
            "fields": fields,
            "dekId": dek_id,
        }
        try:
            with translate_errors():
                created = self.container.create_item(item)
        except AlreadyExistsError as exc:
            raise AlreadyExistsError(f"document {document_id} exists", cause=exc.cause) from None
        return _document(created)

    def delete(self, document_id: str) -> bool:
        """Remove a document; whether there was one."""
        return delete_if_present(self.container, document_id, partition_key(document_id))

    def _scan(self, cursor: str | None, limit: int, shard: tuple[int, int] | None) -> DocumentPage:
        index, count = shard or (0, 1)
        keys = [f"{p:02x}" for p in range(PARTITIONS) if p % count == index]
        items, next_cursor = scan_partitions(
            self.container, partition_keys=keys, where="", parameters=[], cursor=cursor, limit=limit
        )
        return DocumentPage(documents=[_document(i) for i in items], cursor=next_cursor)

    def get(self, document_id: str) -> StoredDocument:
        try:
            with translate_errors():
                item = self.container.read_item(
                    document_id, partition_key=partition_key(document_id)
                )
        except NotFoundError:
            raise NotFoundError(f"document {document_id} not found") from None
        return _document(item)

    def replace_fields(
        self, document: StoredDocument, fields: dict[str, Any], dek_id: str | None
    ) -> StoredDocument:
        item = {
            "id": document.id,
            "pk": partition_key(document.id),
            "fields": fields,
            "dekId": dek_id,
        }
        try:
            with translate_errors():
                replaced = self.container.replace_item(
                    document.id,
                    item,
                    etag=document.revision,
                    match_condition=MatchConditions.IfNotModified,
                )
        except ConcurrentUpdateError:
            raise ConcurrentUpdateError(
                f"document {document.id} changed during the migration"
            ) from None
        except NotFoundError:
            raise NotFoundError(f"document {document.id} not found") from None
        return _document(replaced)

    def replace_many(self, writes: Sequence[DocumentWrite]) -> list[str]:
        """Item by item on the write threads (a transactional batch spans one partition)."""
        lost = self.database.each(self._replace_one, list(writes))
        return [document_id for document_id in lost if document_id is not None]

    def _replace_one(self, write: DocumentWrite) -> str | None:
        """One compare-and-swap write; the document's id if it lost (changed or deleted)."""
        try:
            self.replace_fields(write.document, write.fields, write.dek_id)
        except (ConcurrentUpdateError, NotFoundError):
            return write.document.id
        return None

    def count(self) -> int:
        with translate_errors():
            result: Iterator[Any] = iter(
                self.container.query_items(
                    "SELECT VALUE COUNT(1) FROM c", enable_cross_partition_query=True
                )
            )
            return int(first_value(result))


def _document(item: dict[str, Any]) -> StoredDocument:
    return StoredDocument(
        id=item["id"], fields=item["fields"], dek_id=item.get("dekId"), revision=item["_etag"]
    )
